r"""Forward pass and loss of a batch (report Eq. 1-3).

For each sample :math:`x` of the batch, :math:`h_0 = x`,
:math:`h_l = \mathrm{ReLU}(h_{l-1} W_l + b_l)` for the hidden layers and
logits :math:`z = h_{L-1} W_L + b_L`; the loss is the cross-entropy
:math:`-\log \mathrm{softmax}(z)_y = \log \sum_k e^{z_k} - z_y`, and its
gradient at the logits is :math:`\delta_L = \mathrm{softmax}(z) - \mathrm{onehot}(y)`,
where back-propagation (:mod:`ex3lib.kernels.backward`) starts.

Reference: :func:`ex3lib.reference.forward` and the first lines of
:func:`ex3lib.reference.loss_and_grad`, which the outputs match up to the
order of the additions.

The first layer's inputs are sparse (about 80 % of MNIST's pixels are 0) and
come as CSR rows ``(indptr, indices, values)`` of a ``SparseData``; a sample
is addressed by its row. ``work.outputs[l]`` holds layer ``l``'s outputs for
the batch (ReLU applied for hidden layers, raw logits for the last) and
``work.deltas[l]`` the loss gradient at layer ``l``'s pre-activations.
"""

import math

from numba import njit

from .tiles import FWD_BLOCK, forward_one, forward_tile


@njit(cache=True, inline="always")
def compact(x, index, value):
    """Indices and values of the non-zero entries of ``x``; returns their count.

    Branch-free: about half of a hidden layer's units are off, so a branch
    would mispredict half the time.
    """
    n = 0
    for j in range(x.shape[0]):
        v = x[j]
        index[n] = j
        value[n] = v
        n += 1 if v != 0.0 else 0
    return n


@njit(cache=True, fastmath={"contract"})
def _block_inputs(data, rows, layer, inputs, s0, block_inputs, used, seen):
    """Lay out the inputs of samples ``s0 .. s0 + FWD_BLOCK - 1`` for :func:`forward_tile`; returns how many.

    ``block_inputs[i, q]`` becomes sample ``q``'s input ``i`` and ``used`` the
    ascending list of inputs any of them uses. The first layer's inputs are
    sparse: only their entries are written (``block_inputs`` and ``seen`` are
    all 0 before, and :func:`_clear_block` restores that). A hidden layer's are
    dense rows of ``inputs``, copied whole.
    """
    n_used = 0
    if layer == 0:
        lo = block_inputs.shape[0]
        hi = 0
        for q in range(FWD_BLOCK):
            r = rows[s0 + q]
            p0 = data.indptr[r]
            p1 = data.indptr[r + 1]
            for p in range(p0, p1):
                i = data.indices[p]
                block_inputs[i, q] = data.values[p]
                seen[i] = 1
            if p1 > p0:
                lo = min(lo, data.indices[p0])
                hi = max(hi, data.indices[p1 - 1] + 1)
        for i in range(lo, hi):
            used[n_used] = i
            n_used += seen[i]
    else:
        for j in range(inputs.shape[1]):
            on = False
            for q in range(FWD_BLOCK):
                v = inputs[s0 + q, j]
                block_inputs[j, q] = v
                on |= v != 0.0
            used[n_used] = j
            n_used += 1 if on else 0
    return n_used


@njit(cache=True, fastmath={"contract"})
def _clear_block(block_inputs, used, n_used, seen):
    for u in range(n_used):
        i = used[u]
        seen[i] = 0
        block_inputs[i, :] = 0.0


@njit(cache=True, fastmath={"contract"})
def forward_batch(net, data, rows, work):
    """Forward pass of the samples ``rows``; fills ``work.outputs`` layer by layer (:func:`forward_layer`).

    Samples go through each layer in blocks of ``FWD_BLOCK`` (a register
    tile, :func:`~ex3lib.kernels.tiles.forward_tile`, over the inputs any of
    them uses), the rest one by one (:func:`~ex3lib.kernels.tiles.forward_one`,
    over the sample's own non-zero inputs). Either way a sample's sums run
    over its non-zero inputs in ascending order, so its outputs do not depend
    on the batch it is in (while the weights are finite: in a block, 0 times
    an infinite weight is nan). ``work.layer_alive[l]`` is set to 1 when
    hidden layer ``l`` has a positive output for some sample of the batch
    (used to detect a dead network).
    """
    for l in range(len(net.weights)):
        forward_layer(net, data, rows, work, l)


@njit(cache=True, fastmath={"contract"})
def forward_layer(net, data, rows, work, l):
    """Layer ``l`` of :func:`forward_batch`: ``work.outputs[l]`` from its inputs (the data, or ``work.outputs[l - 1]``).

    Only the weight rows of inputs that some sample of the batch uses are read.
    """
    L = len(net.weights)
    B = rows.shape[0]
    index = work.nonzero_index
    value = work.nonzero_value
    out = work.outputs[l]
    weights = net.weights[l]
    n_out = weights.shape[1]
    inputs = work.outputs[l - 1] if l > 0 else work.outputs[l]
    block = work.first_block_inputs if l == 0 else work.block_inputs
    s0 = 0
    while B - s0 >= FWD_BLOCK:
        n_used = _block_inputs(data, rows, l, inputs, s0, block, work.block_units, work.row_seen)
        forward_tile(weights, work.block_units, n_used, block, out, s0)
        if l == 0:
            _clear_block(block, work.block_units, n_used, work.row_seen)
        s0 += FWD_BLOCK
    for s in range(s0, B):
        if l == 0:
            r = rows[s]
            p0 = data.indptr[r]
            n = data.indptr[r + 1] - p0
            forward_one(weights, data.indices[p0:p0 + n], data.values[p0:p0 + n], n, out[s])
        else:
            n = compact(inputs[s], index, value)
            forward_one(weights, index, value, n, out[s])
    any_positive = False
    for s in range(B):
        o = out[s]
        if net.has_bias:
            for k in range(n_out):
                o[k] += net.biases[l][k]
        if l < L - 1:
            for k in range(n_out):
                o[k] = o[k] if o[k] > 0.0 else 0.0
            if not any_positive:
                for k in range(n_out):
                    if o[k] > 0.0:
                        any_positive = True
                        break
    if any_positive and l < L - 1:
        work.layer_alive[l] = 1


@njit(cache=True, inline="always")
def xent_one(z, label, d):
    """One sample's cross-entropy of the logits ``z``; writes softmax - onehot into ``d``.

    Uses the log-sum-exp shift, so large logits never overflow.
    """
    K = z.shape[0]
    zmax = z[0]
    for k in range(1, K):
        if z[k] > zmax:
            zmax = z[k]
    acc = 0.0
    for k in range(K):
        e = math.exp(z[k] - zmax)
        d[k] = e
        acc += e
    loss = zmax + math.log(acc) - z[label]
    for k in range(K):
        d[k] /= acc
    d[label] -= 1.0
    return loss


@njit(cache=True, fastmath={"contract"})
def softmax_xent(logits, labels, deltas):
    """Per-sample cross-entropy of ``logits`` (B x K) and its gradient ``deltas`` = softmax - onehot.

    Returns the sum of the per-sample losses (:func:`xent_one`), added in
    sample order.
    """
    total = 0.0
    for s in range(logits.shape[0]):
        total += xent_one(logits[s], labels[s], deltas[s])
    return total


@njit(cache=True, fastmath={"contract"})
def forward_loss(net, work, data, rows):
    """Forward the batch ``rows``; returns its summed loss and leaves softmax - onehot in ``work.deltas[-1]``."""
    forward_batch(net, data, rows, work)
    return batch_loss(net, work, data, rows)


@njit(cache=True, fastmath={"contract"})
def batch_loss(net, work, data, rows):
    """The summed loss of the batch ``rows`` from its logits in ``work.outputs[-1]``.

    Leaves softmax - onehot in ``work.deltas[-1]``, where back-propagation starts.
    """
    B = rows.shape[0]
    L = len(net.weights)
    labels = work.batch_labels[:B]
    for s in range(B):
        labels[s] = data.y[rows[s]]
    return softmax_xent(work.outputs[L - 1][:B], labels, work.deltas[L - 1][:B])
