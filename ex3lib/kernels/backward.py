r"""Back-propagation of a batch: every layer's weight gradient, and the error it sends back.

Starting from :math:`\delta_L = \mathrm{softmax}(z) - \mathrm{onehot}(y)` at the
logits (:func:`ex3lib.kernels.forward.softmax_xent`), layer :math:`l` with
input :math:`h_{l-1}` takes

* the gradient :math:`\partial L / \partial W_l = \sum_s h_{l-1,s}^T \delta_{l,s}`
  (and :math:`\partial L / \partial b_l = \sum_s \delta_{l,s}`), summed over the
  batch (the optimiser divides by :math:`m`), and
* sends back :math:`\delta_{l-1,s} = (\delta_{l,s} W_l^T) \odot [h_{l-1,s} > 0]`,
  the ReLU's derivative being 1 where its output is positive.

Reference: :func:`ex3lib.reference.loss_and_grad` (``h.T @ delta`` and
``(delta @ W.T) * (h > 0)``), which the kernels match up to the order of the
additions. The products run in the register tiles of
:mod:`ex3lib.kernels.tiles`, so each weight row is loaded once per batch.

Every weight row takes its optimiser step as soon as its gradient is known
(after its contribution to the error sent back has been taken with the old
weights), inside the register tile that sums its gradient: plain SGD adds
the step to the weights there, the other rules hand each chunk of sums to
:func:`~ex3lib.kernels.updates.step_rows`; no gradient is ever stored
(on-line learning, one sample per step, skips the tiles: a row's gradient is
its input times the error, :func:`backward_online`). The first layer's inputs are sparse, so its rows go pixel
by pixel: :func:`gather_batch` lists the pixels a batch uses.
"""

import numpy as np
from numba import njit

from .target import WIDE_TILES
from .tiles import (GRAD_BLOCK, dots_active, dots_tile, grad_one, grad_one_step, grad_tile, grad_tile_step,
                    momentum_tile_step)
from .updates import (RULE, SGD_FUSED, decays_in_step, is_momentum, rmsprop_rows_online,
                      skip_rows_without_gradient, step_rows)


@njit(cache=True, inline="always", fastmath={"contract"})
def axpy(a, x, y):
    """``y += a * x``."""
    for k in range(y.shape[0]):
        y[k] += a * x[k]


@njit(cache=True, fastmath={"contract"})
def gather_batch(data, rows, pixels, scale):
    """Regroup the non-zero inputs of the batch ``rows`` by input pixel, as the first layer's gradient reads them.

    Lists the pixels used in ``pixels.pixels`` in the order the samples first
    use them (neighbouring entries then tend to share samples, which keeps
    the register tiles of :func:`first_layer_grad` dense) and returns how
    many there are. The ``u``-th pixel listed is column ``q = u %
    GRAD_BLOCK`` of block ``k = u // GRAD_BLOCK``: ``pixels.coef[k, s, q]``
    is ``scale`` times sample ``s``'s value of it (0 if the sample does not
    use it) and ``pixels.in_block[k, s]`` is 1 if sample ``s`` uses any pixel
    of block ``k`` -- the tile's coefficient matrix as it is. One pass over
    the batch's non-zero inputs, never over all pixels; it first clears what
    the previous call wrote (recorded in ``pixels.extent``), so the batch's
    gradient may be skipped (a diverged batch) without leaving stale entries.
    ``pixels.position`` is 0 between calls.
    """
    coef, in_block = pixels.coef, pixels.in_block
    n_blocks = (pixels.extent[0] + GRAD_BLOCK - 1) // GRAD_BLOCK
    for k in range(n_blocks):
        for s in range(pixels.extent[1]):
            coef[k, s, :] = 0.0
            in_block[k, s] = 0
    indptr, indices, values = data.indptr, data.indices, data.values
    position = pixels.position  # 1 + the list position of each pixel seen so far
    n_used = 0
    for s in range(rows.shape[0]):
        r = rows[s]
        for p in range(indptr[r], indptr[r + 1]):
            i = indices[p]
            c = position[i]
            # Branch-free: whether a pixel is new is hard to predict.
            u = n_used if c == 0 else c - 1
            pixels.pixels[n_used] = i
            n_used += 1 if c == 0 else 0
            position[i] = u + 1
            k = u // GRAD_BLOCK
            coef[k, s, u % GRAD_BLOCK] = values[p] * scale
            in_block[k, s] = 1
    for u in range(n_used):
        position[pixels.pixels[u]] = 0
    pixels.extent[0] = n_used
    pixels.extent[1] = rows.shape[0]
    return n_used


@njit(cache=True, error_model="numpy")
def _step_bias(how, lo, sums):
    """The rule's step of a bias vector (at ``lo`` in the flat parameters) whose summed gradient is ``sums``."""
    step_rows(how, lo, sums.shape[0], np.zeros(1, np.int64), 1, sums.reshape((1, sums.shape[0])), sums, False)
    sums[:] = 0.0


@njit(cache=True)
def used_units(inputs, B, rows, top):
    """List in ``rows`` the input units that some sample of ``inputs[:B]`` uses; returns how many.

    The inputs are ReLU outputs (never negative), so a unit is used where its
    largest input is positive; ``top`` is scratch.
    """
    n_in = inputs.shape[1]
    top = top[:n_in]
    top[:] = 0.0
    for s in range(B):
        x = inputs[s]
        for j in range(n_in):
            top[j] = max(top[j], x[j])
    n_rows = 0
    for j in range(n_in):
        rows[n_rows] = j
        n_rows += 1 if top[j] > 0.0 else 0
    return n_rows


@njit(cache=True, fastmath={"contract"})
def hidden_grad(deltas, inputs, B, scale, dest, work, how, base):
    """``dest[j] += scale * sum_s inputs[s, j] * deltas[s]`` for every input unit ``j`` some sample used.

    The units used go in blocks of ``GRAD_BLOCK`` through
    :func:`~ex3lib.kernels.tiles.grad_tile`, the rest one by one; each sum
    runs over the samples in ascending order (the units used:
    :func:`used_units`). With ``how.mode == RULE`` the rows take their optimiser step inside the
    tiles instead (``base``: the matrix's offset in the flat parameters).
    The units used are left in ``work.block_units``; returns how many.
    """
    rows = work.block_units
    n_rows = used_units(inputs, B, rows, work.unit_max)
    coefs = work.hidden_coef
    samples = work.tile_samples
    b0 = 0
    while n_rows - b0 >= GRAD_BLOCK:
        j0 = rows[b0]
        # In a batch most units are used, so a block is usually a run of
        # consecutive units, whose coefficients are contiguous in each sample.
        run = rows[b0 + GRAD_BLOCK - 1] - j0 == GRAD_BLOCK - 1
        n_samples = 0
        for s in range(B):
            x = inputs[s]
            c = coefs[s]
            used = False
            if run:
                for q in range(GRAD_BLOCK):
                    a = x[j0 + q]
                    c[q] = scale * a
                    used |= a > 0.0
            else:
                for q in range(GRAD_BLOCK):
                    a = x[rows[b0 + q]]
                    c[q] = scale * a
                    used |= a > 0.0
            samples[n_samples] = s
            n_samples += 1 if used else 0
        if how.mode == RULE and is_momentum(how.opt.kind):
            momentum_tile_step(deltas, samples, n_samples, coefs, rows[b0:b0 + GRAD_BLOCK], how, base)
        elif how.mode == RULE:
            grad_tile_step(deltas, samples, n_samples, coefs, rows[b0:b0 + GRAD_BLOCK], how, base, work.tile_sums)
        else:
            grad_tile(deltas, samples, n_samples, coefs, dest, rows[b0:b0 + GRAD_BLOCK])
        b0 += GRAD_BLOCK
    one_samples = work.nonzero_index
    one_coef = work.nonzero_value
    for t in range(b0, n_rows):
        j = rows[t]
        n = 0
        for s in range(B):
            a = inputs[s, j]
            one_samples[n] = s
            one_coef[n] = scale * a
            n += 1 if a != 0.0 else 0
        if how.mode == RULE:
            grad_one_step(deltas, one_samples, one_coef, 0, n, how, base, rows[t:t + 1], work.tile_sums)
        else:
            grad_one(deltas, one_samples, one_coef, 0, n, dest[j])
    return n_rows


@njit(cache=True, fastmath={"contract"})
def first_layer_grad(deltas, pixels, n_used, B, dest, work, how, base):
    """``dest[i] += sum_s c(s, i) * deltas[s]`` for every pixel ``i`` the batch uses (``c``: see :func:`gather_batch`).

    Full blocks of ``GRAD_BLOCK`` pixels go through
    :func:`~ex3lib.kernels.tiles.grad_tile` (over the samples using any of
    them), the rest one by one. Each sum runs over the pixel's samples in
    ascending order (a sample of the block that does not use the pixel adds
    exactly 0), so how pixels are grouped does not change a bit of the
    result. With ``how.mode == RULE`` the rows take their optimiser step
    inside the tiles instead.
    """
    samples = work.tile_samples
    n_full = n_used // GRAD_BLOCK
    for k in range(n_full):
        in_block = pixels.in_block[k]
        n_samples = 0
        for s in range(B):
            samples[n_samples] = s
            n_samples += in_block[s]
        block = pixels.pixels[k * GRAD_BLOCK:(k + 1) * GRAD_BLOCK]
        if how.mode == RULE and is_momentum(how.opt.kind):
            momentum_tile_step(deltas, samples, n_samples, pixels.coef[k], block, how, base)
        elif how.mode == RULE:
            grad_tile_step(deltas, samples, n_samples, pixels.coef[k], block, how, base, work.tile_sums)
        else:
            grad_tile(deltas, samples, n_samples, pixels.coef[k], dest, block)
    one_samples = work.nonzero_index
    one_coef = work.nonzero_value
    for q in range(n_used - n_full * GRAD_BLOCK):
        coef = pixels.coef[n_full]
        n = 0
        for s in range(B):
            a = coef[s, q]
            one_samples[n] = s
            one_coef[n] = a
            n += 1 if a != 0.0 else 0
        i = pixels.pixels[n_full * GRAD_BLOCK + q]
        if how.mode == RULE:
            grad_one_step(deltas, one_samples, one_coef, 0, n, how, base, pixels.pixels[n_full * GRAD_BLOCK + q:
                                                                                  n_full * GRAD_BLOCK + q + 1],
                          work.tile_sums)
        else:
            grad_one(deltas, one_samples, one_coef, 0, n, dest[i])


@njit(cache=True, fastmath={"contract"})
def backward_batch(net, n_used, B, work, how):
    """Back-propagate ``work.deltas[L-1]`` (softmax - onehot) through the batch, and step every row.

    ``how`` (a ``Stepping``) says what happens to a row's gradient
    ``sum_s a_s d_s``: with ``SGD_FUSED`` the row takes its step
    ``-η/m * sum_s a_s d_s`` inside the gradient tile (``gather_batch`` has
    already scaled the first layer's inputs by ``-η/m``); with ``RULE`` the
    tile hands each chunk of sums to the optimiser's rule, which steps the
    row and its state at once; either way no gradient is stored. With
    ``GRADIENT`` the gradient is left in ``work.grad``.
    Each row is stepped after its contribution to the previous layer's error
    has been taken with the old weights. For a hidden layer the error sent
    back is computed for every unit first
    (:func:`~ex3lib.kernels.tiles.dots_tile`), then its rows' gradients
    (:func:`hidden_grad`); the first layer's rows go pixel by pixel
    (:func:`first_layer_grad`). Rows with no gradient are skipped where the
    rule leaves them unchanged (``sparse_safe``) or steps them lazily
    (``lazy_rows``), else stepped with a zero gradient
    (:func:`~ex3lib.kernels.updates.skip_rows_without_gradient`).
    """
    L = len(net.weights)
    A, D = work.outputs, work.deltas
    fused = how.mode == SGD_FUSED
    step_scale = -how.scale if fused else 1.0
    for l in range(L - 1, -1, -1):
        Dl = D[l]
        weights = net.weights[l]
        n_in, n_out = weights.shape
        base = net.weight_offsets[l]
        if net.has_bias:
            target = net.biases[l] if fused else work.bias_grads[l]
            for s in range(B):
                axpy(step_scale, Dl[s], target)
            if how.mode == RULE:
                _step_bias(how, net.bias_offsets[l], work.bias_grads[l])
        dest = weights if fused else work.weight_grads[l]
        if l > 0:
            inputs = A[l - 1]
            Dprev = D[l - 1]
            # The error sent back, with the old weights: the dot products of
            # pairs of samples in register tiles, then 0 where the unit was
            # off (ReLU); an odd sample out takes only the units it used. With
            # 16 vector registers (not WIDE_TILES) a pair's 16 accumulators do
            # not fit, and every sample takes only the units it used.
            pairs = B - B % 2 if WIDE_TILES else 0
            for j0 in range(0, n_in, 8):
                for s in range(0, pairs, 2):
                    dots_tile(weights, j0, Dl, s, s + 1, Dprev)
            for s in range(pairs):
                for j in range(n_in):
                    Dprev[s, j] = Dprev[s, j] if inputs[s, j] != 0.0 else 0.0
            for s in range(pairs, B):
                dots_active(weights, Dl, s, inputs, Dprev, work.block_units, work.unit_max)
            n_rows = hidden_grad(Dl, inputs, B, step_scale, dest, work, how, base)
            if how.mode == RULE:
                skip_rows_without_gradient(how, base, n_out, n_in, work.block_units, n_rows,
                                           work.row_updated_at[l], work.row_seen)
        else:
            first_layer_grad(Dl, work.pixels, n_used, B, dest, work, how, base)
            if how.mode == RULE:
                skip_rows_without_gradient(how, base, n_out, n_in, work.pixels.pixels, n_used,
                                           work.row_updated_at[0], work.row_seen)


@njit(cache=True, fastmath={"contract"})
def backward_online(net, n_used, work, how):
    """:func:`backward_batch` for one sample (``how.mode == RULE``): each row's gradient is ``a * d``.

    With one sample, row ``j`` of a layer's gradient is the sample's input
    ``a_j`` times the layer's error ``d``, so each row takes the rule's step
    straight from ``a_j`` and ``d`` (:func:`~ex3lib.kernels.updates.step_rows`),
    after the error sent back has been taken with the old weights
    (:func:`~ex3lib.kernels.tiles.dots_active`): the same numbers as the
    tiles give, without them.
    """
    L = len(net.weights)
    A, D = work.outputs, work.deltas
    for l in range(L - 1, -1, -1):
        d = D[l][0]
        weights = net.weights[l]
        n_in, n_out = weights.shape
        base = net.weight_offsets[l]
        if net.has_bias:
            work.bias_grads[l][:] = d
            _step_bias(how, net.bias_offsets[l], work.bias_grads[l])
        if l > 0:
            dots_active(weights, D[l], 0, A[l - 1], D[l - 1], work.block_units, work.unit_max)
            # The rows of the units the sample used, each scaled by its input.
            x = A[l - 1][0]
            rows, scales = work.block_units, work.nonzero_value
            n = 0
            for j in range(n_in):
                rows[n] = j
                scales[n] = x[j]
                n += 1 if x[j] != 0.0 else 0
            if decays_in_step(how.opt):
                rmsprop_rows_online(how, base, n_out, rows, n, D[l][0], scales, work.row_updated_at[l])
            else:
                step_rows(how, base, n_out, rows, n, D[l], scales, True)
            skip_rows_without_gradient(how, base, n_out, n_in, rows, n, work.row_updated_at[l], work.row_seen)
        else:
            pixels = work.pixels
            coef = work.nonzero_value
            for u in range(n_used):
                coef[u] = pixels.coef[u // GRAD_BLOCK, 0, u % GRAD_BLOCK]
            if decays_in_step(how.opt):
                rmsprop_rows_online(how, base, n_out, pixels.pixels, n_used, D[l][0], coef, work.row_updated_at[0])
            else:
                step_rows(how, base, n_out, pixels.pixels, n_used, D[l], coef, True)
            skip_rows_without_gradient(how, base, n_out, n_in, pixels.pixels, n_used, work.row_updated_at[0],
                                       work.row_seen)

