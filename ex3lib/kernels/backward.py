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

For plain SGD (and on-line momentum) each weight row takes its step as soon
as its gradient is known, after its contribution to the error sent back has
been taken with the old weights; no gradient is stored. The first layer's
inputs are sparse, so its rows go pixel by pixel: :func:`gather_batch` lists
the pixels a batch uses.
"""

from numba import njit

from .tiles import GRAD_BLOCK, dots_active, dots_tile, grad_one, grad_tile
from .updates import NESTEROV, momentum_row


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


@njit(cache=True, fastmath={"contract"})
def hidden_grad(deltas, inputs, B, scale, dest, work):
    """``dest[j] += scale * sum_s inputs[s, j] * deltas[s]`` for every input unit ``j`` some sample used.

    The units used go in blocks of ``GRAD_BLOCK`` through
    :func:`~ex3lib.kernels.tiles.grad_tile`, the rest one by one; each sum
    runs over the samples in ascending order. The inputs are ReLU outputs
    (never negative), so a unit is used where its largest input is positive.
    The units used are left in ``work.block_units``; returns how many.
    """
    n_in = inputs.shape[1]
    top = work.unit_max[:n_in]
    top[:] = 0.0
    for s in range(B):
        x = inputs[s]
        for j in range(n_in):
            top[j] = max(top[j], x[j])
    rows = work.block_units
    n_rows = 0
    for j in range(n_in):
        rows[n_rows] = j
        n_rows += 1 if top[j] > 0.0 else 0
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
        grad_one(deltas, one_samples, one_coef, 0, n, dest[j])
    return n_rows


@njit(cache=True, fastmath={"contract"})
def first_layer_grad(deltas, pixels, n_used, B, dest, work):
    """``dest[i] += sum_s c(s, i) * deltas[s]`` for every pixel ``i`` the batch uses (``c``: see :func:`gather_batch`).

    Full blocks of ``GRAD_BLOCK`` pixels go through
    :func:`~ex3lib.kernels.tiles.grad_tile` (over the samples using any of
    them), the rest one by one. Each sum runs over the pixel's samples in
    ascending order (a sample of the block that does not use the pixel adds
    exactly 0), so how pixels are grouped does not change a bit of the result.
    """
    samples = work.tile_samples
    n_full = n_used // GRAD_BLOCK
    for k in range(n_full):
        in_block = pixels.in_block[k]
        n_samples = 0
        for s in range(B):
            samples[n_samples] = s
            n_samples += in_block[s]
        grad_tile(deltas, samples, n_samples, pixels.coef[k], dest,
                  pixels.pixels[k * GRAD_BLOCK:(k + 1) * GRAD_BLOCK])
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
        grad_one(deltas, one_samples, one_coef, 0, n, dest[pixels.pixels[n_full * GRAD_BLOCK + q]])


@njit(cache=True, inline="always")
def _mark_row(work, l, j):
    """List row ``j`` of layer ``l`` once in ``work.active_rows[l]``."""
    if work.row_marked[l][j] == 0:
        work.row_marked[l][j] = 1
        work.active_rows[l][work.n_active_rows[l]] = j
        work.n_active_rows[l] += 1


@njit(cache=True, fastmath={"contract"})
def backward_batch(net, n_used, B, work, fused, step_scale):
    """Back-propagate ``work.deltas[L-1]`` (softmax - onehot) through the batch.

    With ``fused`` (plain SGD) each weight row takes its step
    ``-step_scale * sum_s a_s d_s`` (``step_scale = η / m``) right after the
    row's contribution to the previous layer's error has been taken with the
    old weights; no gradient is stored. Otherwise the summed gradients go to
    ``work.weight_grads``/``work.bias_grads`` and every row that received a
    contribution is listed once in ``work.active_rows[l]``, so the optimiser
    can skip the rest. For a hidden layer the error sent back is computed for
    every unit first (:func:`~ex3lib.kernels.tiles.dots_tile`), then its
    weights take their step or gradient (:func:`hidden_grad`); the first
    layer's rows go pixel by pixel (:func:`gather_batch`,
    :func:`first_layer_grad`; with ``fused``, ``gather_batch`` has already
    scaled the inputs by ``-step_scale``).
    """
    L = len(net.weights)
    A, D = work.outputs, work.deltas
    for l in range(L - 1, -1, -1):
        Dl = D[l]
        if net.has_bias:
            target = net.biases[l] if fused else work.bias_grads[l]
            scale = -step_scale if fused else 1.0
            for s in range(B):
                axpy(scale, Dl[s], target)
        weights = net.weights[l]
        if l > 0:
            inputs = A[l - 1]
            Dprev = D[l - 1]
            n_in = weights.shape[0]
            # The error sent back, with the old weights: the dot products of
            # pairs of samples in register tiles, then 0 where the unit was
            # off (ReLU); an odd sample out takes only the units it used.
            pairs = B - B % 2
            for j0 in range(0, n_in, 8):
                for s in range(0, pairs, 2):
                    dots_tile(weights, j0, Dl, s, s + 1, Dprev)
            for s in range(pairs):
                for j in range(n_in):
                    Dprev[s, j] = Dprev[s, j] if inputs[s, j] != 0.0 else 0.0
            if pairs < B:
                dots_active(weights, Dl, B - 1, inputs, Dprev, work.block_units, work.unit_max)
            n_rows = hidden_grad(Dl, inputs, B, -step_scale if fused else 1.0,
                                 weights if fused else work.weight_grads[l], work)
            if not fused:
                for t in range(n_rows):
                    _mark_row(work, l, work.block_units[t])
        else:
            first_layer_grad(Dl, work.pixels, n_used, B, weights if fused else work.weight_grads[l], work)
            if not fused:
                for u in range(n_used):
                    _mark_row(work, l, work.pixels.pixels[u])


@njit(cache=True, fastmath={"contract"})
def backward_online_momentum(net, opt, n_used, work, step):
    """Back-propagation fused with an on-line (m = 1) momentum or Nesterov step.

    Like plain SGD in :func:`backward_batch`, each weight row takes its step
    as soon as its gradient ``a * d`` is known, after its contribution to the
    previous layer's error has been taken with the old weights. Hidden rows
    whose input is 0 take the zero-gradient step; first-layer rows of zero
    pixels are left to :func:`~ex3lib.kernels.updates.catch_up_rows`.
    """
    L = len(net.weights)
    A, D = work.outputs, work.deltas
    lr, alpha, nesterov = opt.learning_rate, opt.momentum, opt.kind == NESTEROV
    velocity = opt.velocity
    for l in range(L - 1, -1, -1):
        d = D[l][0]
        n_out = net.weights[l].shape[1]
        if net.has_bias:
            lo = net.bias_offsets[l]
            momentum_row(net.biases[l], velocity[lo:lo + n_out], 1.0, d, lr, alpha, nesterov)
        weights = net.weights[l]
        base = net.weight_offsets[l]
        if l > 0:
            inputs = A[l - 1][0]
            # The error sent back, with the old weights (as in backward_batch).
            dots_active(weights, D[l], 0, A[l - 1], D[l - 1], work.block_units, work.unit_max)
            for j in range(weights.shape[0]):
                lo = base + j * n_out
                momentum_row(weights[j], velocity[lo:lo + n_out], inputs[j], d, lr, alpha, nesterov)
        else:
            pixels = work.pixels
            for u in range(n_used):
                i = pixels.pixels[u]
                lo = base + i * n_out
                momentum_row(weights[i], velocity[lo:lo + n_out], pixels.coef[u // GRAD_BLOCK, 0, u % GRAD_BLOCK],
                             d, lr, alpha, nesterov)
                work.row_updated_at[i] = step
