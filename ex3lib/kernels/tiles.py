r"""Register tiles: the three matrix products of a layer, a few rows at a time in SIMD registers.

For a layer with weights :math:`W` (fan_in x fan_out), inputs :math:`h` (the
batch's outputs of the layer below, one row per sample) and errors
:math:`\delta = \partial L / \partial z` at its pre-activations:

* forward   :math:`z_s = h_s W`, a sum of the rows of :math:`W` weighted by the
  sample's non-zero inputs (:func:`forward_tile`, :func:`forward_one`);
* gradient  :math:`\partial L / \partial W_i = \sum_s h_{s,i}\, \delta_s`, one row
  :math:`i` per input unit (:func:`grad_tile`, :func:`grad_one`);
* error sent back  :math:`(\delta_s W^T)_j = W_j \cdot \delta_s`, a dot product per
  input unit :math:`j` (:func:`dots_tile`, :func:`dots_active`).

They must match :func:`ex3lib.reference.forward` and
:func:`ex3lib.reference.loss_and_grad` (``h @ W``, ``h.T @ delta`` and
``delta @ W.T``) up to the order of the additions. A tile keeps a block of
sums (e.g. 5 samples x 32 columns, or 8 input rows x 16 columns) in vector
registers while its loop runs over the shared index, so each weight chunk is
loaded once for the whole block and each row of the result is written once.
Inside a tile the accumulators are named by position: ``a{q}{c}`` holds row
``q`` of the block, columns ``8c .. 8c + 7`` of the current chunk. Those
widths fill AVX-512's 32 vector registers; where the CPU has 16 (AVX2), the
tiles take 8 columns (one vector per row of the block) at a time instead
(``WIDE_TILES``, :mod:`~ex3lib.kernels.target`), which changes no sum.

Every sum runs over its terms in ascending order of the shared index, whatever
else is in the block (a term whose coefficient is 0 adds exactly 0), so a
sample's outputs, or a weight's gradient, are the same bits in any batch
while the weights are finite. Sums along a row are lane-wise (lane
``k % LANES`` takes column ``k``), so the zero columns of
``MLP.row_aligned``'s padding change no bit of them.
"""

from numba import njit

from .simd import LANES, vadd, vfma, vload, vmuladd, vstore, vsum8, vzero, widen
from .target import WIDE_TILES
from .updates import NESTEROV, load, momentum_rule, nesterov_rule, step_rows

#: Samples per block of the forward tile (:func:`forward_tile`).
FWD_BLOCK = 5
#: Input units per block of the gradient tile (:func:`grad_tile`).
GRAD_BLOCK = 8


@njit(cache=True, inline="always")
def _fma4(c, x0, x1, x2, x3, a0, a1, a2, a3):
    return vfma(c, x0, a0), vfma(c, x1, a1), vfma(c, x2, a2), vfma(c, x3, a3)


@njit(cache=True, inline="always")
def _store4(row, kc, n, a0, a1, a2, a3):
    vstore(row, kc, n, a0)
    vstore(row, kc + 8, n - 8, a1)
    vstore(row, kc + 16, n - 16, a2)
    vstore(row, kc + 24, n - 24, a3)


@njit(cache=True, inline="always")
def _fma2(c, x0, x1, a0, a1):
    return vfma(c, x0, a0), vfma(c, x1, a1)


@njit(cache=True, inline="always")
def _add_store(row, kc, n, a):
    vstore(row, kc, n, vadd(vload(row, kc, n), a))


@njit(cache=True, inline="always")
def _add_store2(row, kc, n, a0, a1):
    _add_store(row, kc, n, a0)
    _add_store(row, kc + 8, n - 8, a1)


@njit(cache=True, inline="always")
def _store2(row, kc, n, a0, a1):
    vstore(row, kc, n, a0)
    vstore(row, kc + 8, n - 8, a1)


@njit(cache=True, inline="always")
def _muladd2(w, x0, x1, a0, a1):
    return vmuladd(w, x0, a0), vmuladd(w, x1, a1)


@njit(cache=True)
def forward_tile(weights, used, n_used, block_inputs, out, s0):
    """``out[s0 + q] = sum_u block_inputs[used[u], q] * weights[used[u]]`` for the five samples ``q < 5``.

    ``used[:n_used]`` lists the inputs any of the five samples uses,
    ascending, and ``block_inputs[i, q]`` is sample ``q``'s input ``i`` (0
    where it has none: an exact no-op, so every sample's sum is the one it
    would get alone). 32 columns at a time; the columns past the last
    multiple of 32 go 8 at a time, so a narrow layer computes few unused lanes
    (every column 8 at a time without ``WIDE_TILES``).
    """
    n_out = weights.shape[1]
    full = n_out - n_out % 32 if WIDE_TILES else 0
    for kc in range(0, full, 32):
        ncols = n_out - kc
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = a20 = a21 = a22 = a23 = vzero(weights[0])
        a30 = a31 = a32 = a33 = a40 = a41 = a42 = a43 = a00
        for u in range(n_used):
            i = used[u]
            w = weights[i]
            x = block_inputs[i]
            w0 = vload(w, kc, ncols)
            w1 = vload(w, kc + 8, ncols - 8)
            w2 = vload(w, kc + 16, ncols - 16)
            w3 = vload(w, kc + 24, ncols - 24)
            a00, a01, a02, a03 = _fma4(x[0], w0, w1, w2, w3, a00, a01, a02, a03)
            a10, a11, a12, a13 = _fma4(x[1], w0, w1, w2, w3, a10, a11, a12, a13)
            a20, a21, a22, a23 = _fma4(x[2], w0, w1, w2, w3, a20, a21, a22, a23)
            a30, a31, a32, a33 = _fma4(x[3], w0, w1, w2, w3, a30, a31, a32, a33)
            a40, a41, a42, a43 = _fma4(x[4], w0, w1, w2, w3, a40, a41, a42, a43)
        _store4(out[s0], kc, ncols, a00, a01, a02, a03)
        _store4(out[s0 + 1], kc, ncols, a10, a11, a12, a13)
        _store4(out[s0 + 2], kc, ncols, a20, a21, a22, a23)
        _store4(out[s0 + 3], kc, ncols, a30, a31, a32, a33)
        _store4(out[s0 + 4], kc, ncols, a40, a41, a42, a43)
    for kc in range(full, n_out, LANES):
        ncols = n_out - kc
        a0 = a1 = a2 = a3 = a4 = vzero(weights[0])
        for u in range(n_used):
            i = used[u]
            x = block_inputs[i]
            w0 = vload(weights[i], kc, ncols)
            a0 = vfma(x[0], w0, a0)
            a1 = vfma(x[1], w0, a1)
            a2 = vfma(x[2], w0, a2)
            a3 = vfma(x[3], w0, a3)
            a4 = vfma(x[4], w0, a4)
        vstore(out[s0], kc, ncols, a0)
        vstore(out[s0 + 1], kc, ncols, a1)
        vstore(out[s0 + 2], kc, ncols, a2)
        vstore(out[s0 + 3], kc, ncols, a3)
        vstore(out[s0 + 4], kc, ncols, a4)


@njit(cache=True)
def forward_one(weights, index, value, n, out):
    """``out = sum_{u < n} value[u] * weights[index[u]]``: one sample, 32 columns at a time (the rest 8 at a time)."""
    n_out = weights.shape[1]
    full = n_out - n_out % 32
    for kc in range(0, full, 32):
        ncols = n_out - kc
        a0 = a1 = a2 = a3 = vzero(weights[0])
        for u in range(n):
            w = weights[index[u]]
            a0, a1, a2, a3 = _fma4(value[u], vload(w, kc, ncols), vload(w, kc + 8, ncols - 8),
                                   vload(w, kc + 16, ncols - 16), vload(w, kc + 24, ncols - 24), a0, a1, a2, a3)
        _store4(out, kc, ncols, a0, a1, a2, a3)
    for kc in range(full, n_out, LANES):
        ncols = n_out - kc
        a0 = vzero(weights[0])
        for u in range(n):
            a0 = vfma(value[u], vload(weights[index[u]], kc, ncols), a0)
        vstore(out, kc, ncols, a0)


@njit(cache=True, inline="always")
def _grad_sums(deltas, samples, n_samples, coefs, kc, ncols):
    """The tile's sums for columns ``kc .. kc + 15``: sixteen vectors, two per row (see :func:`grad_tile`)."""
    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = vzero(deltas[0])
    a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = a00
    for t in range(n_samples):
        s = samples[t]
        d = deltas[s]
        c = coefs[s]
        d0 = vload(d, kc, ncols)
        d1 = vload(d, kc + 8, ncols - 8)
        a00, a01 = _fma2(c[0], d0, d1, a00, a01)
        a10, a11 = _fma2(c[1], d0, d1, a10, a11)
        a20, a21 = _fma2(c[2], d0, d1, a20, a21)
        a30, a31 = _fma2(c[3], d0, d1, a30, a31)
        a40, a41 = _fma2(c[4], d0, d1, a40, a41)
        a50, a51 = _fma2(c[5], d0, d1, a50, a51)
        a60, a61 = _fma2(c[6], d0, d1, a60, a61)
        a70, a71 = _fma2(c[7], d0, d1, a70, a71)
    return a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71


@njit(cache=True, inline="always")
def _grad_sums_narrow(deltas, samples, n_samples, coefs, kc, ncols):
    """The tile's sums for columns ``kc .. kc + 7``: eight vectors, one per row (:func:`_grad_sums` for 16 registers)."""
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzero(deltas[0])
    for t in range(n_samples):
        s = samples[t]
        c = coefs[s]
        d0 = vload(deltas[s], kc, ncols)
        a0, a1 = vfma(c[0], d0, a0), vfma(c[1], d0, a1)
        a2, a3 = vfma(c[2], d0, a2), vfma(c[3], d0, a3)
        a4, a5 = vfma(c[4], d0, a4), vfma(c[5], d0, a5)
        a6, a7 = vfma(c[6], d0, a6), vfma(c[7], d0, a7)
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(cache=True)
def grad_tile(deltas, samples, n_samples, coefs, dest, rows):
    """``dest[rows[q]] += sum_t coefs[samples[t], q] * deltas[samples[t]]`` for the eight rows ``q < 8``.

    A weight matrix's gradient (or its SGD step) for eight input units at
    once, 16 columns at a time (8 without ``WIDE_TILES``):
    ``samples[:n_samples]`` lists, ascending, the samples that use any of the
    eight, and ``coefs[s, q]`` is sample ``s``'s coefficient for unit
    ``rows[q]`` (its input value, scaled; 0 when it does not use it).
    """
    n_cols = deltas.shape[1]
    if not WIDE_TILES:
        for kc in range(0, n_cols, LANES):
            ncols = n_cols - kc
            a0, a1, a2, a3, a4, a5, a6, a7 = _grad_sums_narrow(deltas, samples, n_samples, coefs, kc, ncols)
            _add_store(dest[rows[0]], kc, ncols, a0)
            _add_store(dest[rows[1]], kc, ncols, a1)
            _add_store(dest[rows[2]], kc, ncols, a2)
            _add_store(dest[rows[3]], kc, ncols, a3)
            _add_store(dest[rows[4]], kc, ncols, a4)
            _add_store(dest[rows[5]], kc, ncols, a5)
            _add_store(dest[rows[6]], kc, ncols, a6)
            _add_store(dest[rows[7]], kc, ncols, a7)
        return
    for kc in range(0, n_cols, 16):
        ncols = n_cols - kc
        a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71 = _grad_sums(
            deltas, samples, n_samples, coefs, kc, ncols)
        _add_store2(dest[rows[0]], kc, ncols, a00, a01)
        _add_store2(dest[rows[1]], kc, ncols, a10, a11)
        _add_store2(dest[rows[2]], kc, ncols, a20, a21)
        _add_store2(dest[rows[3]], kc, ncols, a30, a31)
        _add_store2(dest[rows[4]], kc, ncols, a40, a41)
        _add_store2(dest[rows[5]], kc, ncols, a50, a51)
        _add_store2(dest[rows[6]], kc, ncols, a60, a61)
        _add_store2(dest[rows[7]], kc, ncols, a70, a71)


@njit(cache=True, inline="always")
def _momentum_lanes(params, velocity, lo, n, g, scale, lr, alpha, nesterov):
    """:func:`~ex3lib.kernels.updates.momentum_rule` (or Nesterov's) on the vector of parameters ``lo .. lo + n - 1``.

    ``g`` is their summed gradient (a ``Vec``; ``n`` < 8: the first ``n``
    lanes): the rule's own function, lane by lane and in float64, so the same
    bits as :func:`~ex3lib.kernels.updates.step_rows` gives.
    """
    w, v, lr_g = load(params, lo, n), load(velocity, lo, n), lr * (widen(g) * scale)
    if nesterov:
        w, v = nesterov_rule(w, v, lr_g, alpha)
    else:
        w, v = momentum_rule(w, v, lr_g, alpha)
    vstore(params, lo, n, w)
    vstore(velocity, lo, n, v)


@njit(cache=True, error_model="numpy")
def grad_tile_step(deltas, samples, n_samples, coefs, rows, how, base, sums):
    """:func:`grad_tile` whose sums go to the optimiser's rule instead of a gradient array.

    The eight rows' sums are written to the scratch ``sums`` (8 x row width,
    small enough to stay in the L1 cache), then each row takes the rule's
    step (:func:`~ex3lib.kernels.updates.step_rows`) in one pass over its
    weights and state in the flat parameters (``base``: the matrix's offset).
    Momentum and Nesterov skip the scratch: :func:`momentum_tile_step`.
    """
    n_cols = deltas.shape[1]
    if not WIDE_TILES:
        for kc in range(0, n_cols, LANES):
            ncols = n_cols - kc
            a0, a1, a2, a3, a4, a5, a6, a7 = _grad_sums_narrow(deltas, samples, n_samples, coefs, kc, ncols)
            vstore(sums[0], kc, ncols, a0)
            vstore(sums[1], kc, ncols, a1)
            vstore(sums[2], kc, ncols, a2)
            vstore(sums[3], kc, ncols, a3)
            vstore(sums[4], kc, ncols, a4)
            vstore(sums[5], kc, ncols, a5)
            vstore(sums[6], kc, ncols, a6)
            vstore(sums[7], kc, ncols, a7)
    else:
        for kc in range(0, n_cols, 16):
            ncols = n_cols - kc
            a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71 = _grad_sums(
                deltas, samples, n_samples, coefs, kc, ncols)
            _store2(sums[0], kc, ncols, a00, a01)
            _store2(sums[1], kc, ncols, a10, a11)
            _store2(sums[2], kc, ncols, a20, a21)
            _store2(sums[3], kc, ncols, a30, a31)
            _store2(sums[4], kc, ncols, a40, a41)
            _store2(sums[5], kc, ncols, a50, a51)
            _store2(sums[6], kc, ncols, a60, a61)
            _store2(sums[7], kc, ncols, a70, a71)
    step_rows(how, base, n_cols, rows, 8, sums, sums[0], False)


@njit(cache=True, error_model="numpy")
def momentum_tile_step(deltas, samples, n_samples, coefs, rows, how, base):
    """:func:`grad_tile_step` for momentum and Nesterov: each chunk of sums steps its weights and velocities in registers.

    Where the other rules write the tile's sums to a scratch block for
    :func:`~ex3lib.kernels.updates.step_rows`, these take their step as plain
    SGD does in :func:`grad_tile`: each chunk of a row's weights and
    velocities is loaded and stored once (:func:`_momentum_lanes`). A
    function of its own, chosen by the caller: a branch to it inside
    :func:`grad_tile_step` made the other rules' tiles 2-7 % slower.
    """
    opt = how.opt
    _momentum_tile(deltas, samples, n_samples, coefs, rows, base, how.params, opt.velocity, how.scale,
                   opt.learning_rate, opt.momentum, opt.kind == NESTEROV)


@njit(cache=True, error_model="numpy")
def _momentum_tile(deltas, samples, n_samples, coefs, rows, base, params, velocity, scale, lr, alpha, nesterov):
    """:func:`momentum_tile_step` with the optimiser's arrays and constants taken out of ``how``."""
    n_cols = deltas.shape[1]
    l0, l1, l2, l3 = (base + rows[0] * n_cols, base + rows[1] * n_cols, base + rows[2] * n_cols,
                      base + rows[3] * n_cols)
    l4, l5, l6, l7 = (base + rows[4] * n_cols, base + rows[5] * n_cols, base + rows[6] * n_cols,
                      base + rows[7] * n_cols)
    if not WIDE_TILES:
        for kc in range(0, n_cols, LANES):
            n = n_cols - kc
            a0, a1, a2, a3, a4, a5, a6, a7 = _grad_sums_narrow(deltas, samples, n_samples, coefs, kc, n)
            _momentum_lanes(params, velocity, l0 + kc, n, a0, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l1 + kc, n, a1, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l2 + kc, n, a2, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l3 + kc, n, a3, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l4 + kc, n, a4, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l5 + kc, n, a5, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l6 + kc, n, a6, scale, lr, alpha, nesterov)
            _momentum_lanes(params, velocity, l7 + kc, n, a7, scale, lr, alpha, nesterov)
        return
    for kc in range(0, n_cols, 16):
        n = n_cols - kc
        a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71 = _grad_sums(
            deltas, samples, n_samples, coefs, kc, n)
        _momentum_lanes2(params, velocity, l0 + kc, n, a00, a01, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l1 + kc, n, a10, a11, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l2 + kc, n, a20, a21, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l3 + kc, n, a30, a31, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l4 + kc, n, a40, a41, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l5 + kc, n, a50, a51, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l6 + kc, n, a60, a61, scale, lr, alpha, nesterov)
        _momentum_lanes2(params, velocity, l7 + kc, n, a70, a71, scale, lr, alpha, nesterov)


@njit(cache=True, inline="always")
def _momentum_lanes2(params, velocity, lo, n, g0, g1, scale, lr, alpha, nesterov):
    """:func:`_momentum_lanes` of a row's 16-column chunk, two vectors."""
    _momentum_lanes(params, velocity, lo, n, g0, scale, lr, alpha, nesterov)
    _momentum_lanes(params, velocity, lo + 8, n - 8, g1, scale, lr, alpha, nesterov)


@njit(cache=True, inline="always")
def _row_sums(deltas, samples, coef, lo, hi, kc, ncols):
    a0 = a1 = vzero(deltas[0])
    for t in range(lo, hi):
        d = deltas[samples[t]]
        a0, a1 = _fma2(coef[t], vload(d, kc, ncols), vload(d, kc + 8, ncols - 8), a0, a1)
    return a0, a1


@njit(cache=True)
def grad_one(deltas, samples, coef, lo, hi, out):
    """``out += sum_{lo <= t < hi} coef[t] * deltas[samples[t]]``: one input unit's row, 16 columns at a time."""
    n_cols = deltas.shape[1]
    for kc in range(0, n_cols, 16):
        ncols = n_cols - kc
        a0, a1 = _row_sums(deltas, samples, coef, lo, hi, kc, ncols)
        _add_store2(out, kc, ncols, a0, a1)


@njit(cache=True, error_model="numpy")
def grad_one_step(deltas, samples, coef, lo, hi, how, base, row, sums):
    """:func:`grad_one` whose sums (in ``sums[0]``) go to the optimiser's rule: row ``row[0]`` of the matrix at ``base``."""
    n_cols = deltas.shape[1]
    for kc in range(0, n_cols, 16):
        ncols = n_cols - kc
        a0, a1 = _row_sums(deltas, samples, coef, lo, hi, kc, ncols)
        _store2(sums[0], kc, ncols, a0, a1)
    step_rows(how, base, n_cols, row, 1, sums, sums[0], False)


@njit(cache=True)
def dots_tile(weights, j0, deltas, s0, s1, out):
    """``out[s, j0 + q] = weights[j0 + q] . deltas[s]`` for ``q < 8`` and the two samples ``s0``, ``s1``.

    The error a layer sends back to its inputs, for eight weight rows and two
    samples at once: sixteen dot products summed lane-wise in registers, then
    reduced together by :func:`~ex3lib.kernels.simd.vsum8`. Rows past the end
    of ``weights`` are not written (their lanes repeat the last row). Used with
    ``WIDE_TILES`` only: its sixteen accumulators need 32 vector registers.
    """
    n_in, n_out = weights.shape
    last = n_in - 1
    r0, r1, r2, r3 = (weights[j0], weights[min(j0 + 1, last)], weights[min(j0 + 2, last)],
                      weights[min(j0 + 3, last)])
    r4, r5, r6, r7 = (weights[min(j0 + 4, last)], weights[min(j0 + 5, last)], weights[min(j0 + 6, last)],
                      weights[min(j0 + 7, last)])
    d0 = deltas[s0]
    d1 = deltas[s1]
    a00 = a01 = a02 = a03 = a04 = a05 = a06 = a07 = vzero(d0)
    a10 = a11 = a12 = a13 = a14 = a15 = a16 = a17 = a00
    for k in range(0, n_out, LANES):
        n = n_out - k
        x0 = vload(d0, k, n)
        x1 = vload(d1, k, n)
        a00, a10 = _muladd2(vload(r0, k, n), x0, x1, a00, a10)
        a01, a11 = _muladd2(vload(r1, k, n), x0, x1, a01, a11)
        a02, a12 = _muladd2(vload(r2, k, n), x0, x1, a02, a12)
        a03, a13 = _muladd2(vload(r3, k, n), x0, x1, a03, a13)
        a04, a14 = _muladd2(vload(r4, k, n), x0, x1, a04, a14)
        a05, a15 = _muladd2(vload(r5, k, n), x0, x1, a05, a15)
        a06, a16 = _muladd2(vload(r6, k, n), x0, x1, a06, a16)
        a07, a17 = _muladd2(vload(r7, k, n), x0, x1, a07, a17)
    vstore(out[s0], j0, n_in - j0, vsum8(a00, a01, a02, a03, a04, a05, a06, a07))
    vstore(out[s1], j0, n_in - j0, vsum8(a10, a11, a12, a13, a14, a15, a16, a17))


@njit(cache=True)
def dots_active(weights, deltas, s, inputs, out, rows, tmp):
    """``out[s, j] = weights[j] . deltas[s]`` where ``inputs[s, j]`` is non-zero, else 0: one sample's error sent back.

    Only the rows of the units the sample used (ReLU on), eight at a time,
    summed as in :func:`dots_tile` (so each dot product is the same bits);
    ``rows`` and ``tmp`` are scratch.
    """
    n_in, n_out = weights.shape
    x = inputs[s]
    o = out[s]
    n = 0
    for j in range(n_in):
        rows[n] = j
        n += 1 if x[j] != 0.0 else 0
        o[j] = 0.0
    d = deltas[s]
    for b in range(0, n, 8):
        last = n - 1
        r0, r1, r2, r3 = (weights[rows[b]], weights[rows[min(b + 1, last)]], weights[rows[min(b + 2, last)]],
                          weights[rows[min(b + 3, last)]])
        r4, r5, r6, r7 = (weights[rows[min(b + 4, last)]], weights[rows[min(b + 5, last)]],
                          weights[rows[min(b + 6, last)]], weights[rows[min(b + 7, last)]])
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = vzero(d)
        for k in range(0, n_out, LANES):
            m = n_out - k
            x0 = vload(d, k, m)
            a0 = vmuladd(vload(r0, k, m), x0, a0)
            a1 = vmuladd(vload(r1, k, m), x0, a1)
            a2 = vmuladd(vload(r2, k, m), x0, a2)
            a3 = vmuladd(vload(r3, k, m), x0, a3)
            a4 = vmuladd(vload(r4, k, m), x0, a4)
            a5 = vmuladd(vload(r5, k, m), x0, a5)
            a6 = vmuladd(vload(r6, k, m), x0, a6)
            a7 = vmuladd(vload(r7, k, m), x0, a7)
        vstore(tmp, 0, LANES, vsum8(a0, a1, a2, a3, a4, a5, a6, a7))
        for q in range(min(8, n - b)):
            o[rows[b + q]] = tmp[q]
