"""Compiled kernels: forward/backward passes, optimiser updates, evaluation and gradient checks.

Every Numba function of ex3lib lives in this one file on purpose: Numba's
on-disk cache (``cache=True``) only notices edits to the file that defines a
kernel, so a kernel calling a kernel from another file could silently keep
running stale machine code.  The Python modules (`network`, `optimisers`,
`training`, `gradcheck`) validate arguments, lay out memory and call in here.

Layout conventions shared by all kernels
----------------------------------------
* ``params`` is one flat vector; ``W[l]`` (fan_in x fan_out) and ``b[l]`` are
  C-contiguous views into it, starting at ``w_off[l]`` and ``b_off[l]``.
* The input layer is sparse (about 80 % of MNIST pixels are 0): inputs come as
  CSR rows ``(indptr, indices, values)`` and a sample is addressed by its row.
* ``A[l]`` holds the outputs of layer ``l`` for a batch (ReLU applied for hidden
  layers, raw logits for the last), ``D[l]`` the loss gradient with respect to
  layer ``l``'s pre-activation.
* Everything runs serially, so a seeded run is bit-for-bit reproducible;
  parallelism is across runs (processes), never inside a reduction.
* The heavy loops are register tiles (see "Register tiles" below): a block
  of rows of a matrix product is summed in SIMD registers, each weight chunk
  loaded once for several samples.
* Training runs on ``MLP.row_aligned`` copies, whose hidden widths are padded
  with zero units to whole cache lines.  The kernels work for any width, but
  every sum along a row must be lane-wise (vector lane ``k % LANES`` takes
  column ``k``), so that the zero columns of the padding change no bit of
  it; a reduction whose order depends on the row's length (e.g. a loop
  LLVM vectorises with ``fastmath`` reassociation) would break that.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

# The optimiser updates use error_model="numpy": a division by zero gives
# inf/nan (which the training loop reports as divergence) instead of a Python
# exception, and without that check LLVM vectorises the loops that divide.
# (Elsewhere the default model measured faster.)

SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADAM = 0, 1, 2, 3, 4, 5

# Optimisers whose update is an exact no-op where the gradient is exactly 0, so
# rows of a weight matrix that no sample in the batch touched can be skipped
# without changing a single bit of the result.
SPARSE_SAFE = (SGD, ADAGRAD)

# Optimisers whose zero-gradient step is a fixed linear map, so the first-layer
# rows of pixels that are 0 can be updated lazily (see catch_up_rows).
LAZY_FIRST_LAYER = (MOMENTUM, NESTEROV, RMSPROP)


@intrinsic
def _sqrt(typingctx, x):
    """IEEE square root as the LLVM intrinsic: correctly rounded like ``math.sqrt``.

    Numba lowers ``math.sqrt`` to a call of the C library's ``sqrt``, which
    may set errno and so keeps LLVM from vectorising the loop around it.
    """
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.sqrt", [args[0].type])
        return builder.call(fn, args)
    return x(x), codegen



# ---------------------------------------------------------------------------
# SIMD vectors
#
# LLVM does not keep a tile of sums in registers across a loop by itself
# (Numba arrays may alias, and its SLP vectoriser leaves loop-carried scalar
# sums alone), so the register tiles below use an explicit vector type:
# eight lanes of the array's dtype, an LLVM ``<8 x double>`` (or float).  LLVM
# lowers it to whatever the CPU has: one AVX-512 register, two AVX2 registers,
# four SSE2 registers, NEON pairs.  Loads and stores take a lane count ``n``
# (lanes ``k >= n`` are neither read nor written, loads give 0 there), so a
# row whose width is not a multiple of 8 needs no scalar tail loop.
# ---------------------------------------------------------------------------

LANES = 8


class Vec(types.Type):
    """Numba type of ``LANES`` values of ``dtype`` held in one SIMD vector."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Vec({dtype} x {LANES})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, LANES))


def _lane_mask(builder, n):
    """``<LANES x i1>``: lane k is on when ``k < n``."""
    i64 = ir.IntType(64)
    lanes = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
    splat = builder.insert_element(ir.Constant(ir.VectorType(i64, LANES), ir.Undefined), n,
                                   ir.Constant(ir.IntType(32), 0))
    splat = builder.shuffle_vector(splat, ir.Constant(splat.type, ir.Undefined),
                                   ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
    return builder.icmp_signed("<", lanes, splat)


def _masked_access(context, builder, sig, args, vtype):
    """Pointer to ``arr[idx]`` as a vector pointer, and the lane mask for ``n`` lanes."""
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), vtype.as_pointer())
    return ptr, _lane_mask(builder, context.cast(builder, args[2], sig.args[2], types.int64))


def _suffix(vtype):
    return f"v{vtype.count}{'f64' if isinstance(vtype.element, ir.DoubleType) else 'f32'}"


def _check_1d(arr):
    # Contiguous only: the vector is read from (or written to) consecutive addresses.
    return (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
            and isinstance(arr.dtype, types.Float))


@intrinsic
def vzero(typingctx, arr):
    """A vector of zeros of ``arr``'s dtype."""
    if not _check_1d(arr):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, signature, args):
        return ir.Constant(context.get_value_type(vt), None)
    return vt(arr), codegen


@intrinsic
def vload(typingctx, arr, idx, n):
    """``arr[idx:idx + min(n, LANES)]`` as a vector, 0 in the other lanes (nothing read there).

    The caller guarantees that the lanes it asks for are inside ``arr``.
    """
    if not (_check_1d(arr) and isinstance(idx, types.Integer) and isinstance(n, types.Integer)):
        return None
    vt = Vec(arr.dtype)

    def codegen(context, builder, signature, args):
        vtype = context.get_value_type(vt)
        ptr, mask = _masked_access(context, builder, signature, args, vtype)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vtype.as_pointer(), ir.IntType(32), mask.type, vtype]),
            f"llvm.masked.load.{_suffix(vtype)}.p0")
        return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 1), mask, ir.Constant(vtype, None)])
    return vt(arr, idx, n), codegen


@intrinsic
def vstore(typingctx, arr, idx, n, v):
    """``arr[idx:idx + min(n, LANES)] = v[:n]``; nothing else is written."""
    if not (_check_1d(arr) and isinstance(v, Vec) and v.dtype == arr.dtype):
        return None

    def codegen(context, builder, signature, args):
        vtype = args[3].type
        ptr, mask = _masked_access(context, builder, signature, args, vtype)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vtype, vtype.as_pointer(), ir.IntType(32), mask.type]),
            f"llvm.masked.store.{_suffix(vtype)}.p0")
        builder.call(fn, [args[3], ptr, ir.Constant(ir.IntType(32), 1), mask])
        return context.get_dummy_value()
    return types.none(arr, idx, n, v), codegen


@intrinsic
def vfma(typingctx, a, x, acc):
    """``acc + a * x`` lane by lane with one rounding (IEEE fused multiply-add); ``a`` is a scalar."""
    if not (isinstance(x, Vec) and acc == x and isinstance(a, (types.Float, types.Integer))):
        return None

    def codegen(context, builder, signature, args):
        vtype = args[1].type
        scalar = context.cast(builder, args[0], signature.args[0], signature.args[1].dtype)
        splat = builder.insert_element(ir.Constant(vtype, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
        splat = builder.shuffle_vector(splat, ir.Constant(vtype, ir.Undefined),
                                       ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3),
                                            f"llvm.fma.{_suffix(vtype)}")
        return builder.call(fn, [splat, args[1], args[2]])
    return x(a, x, acc), codegen


@intrinsic
def vadd(typingctx, x, y):
    """``x + y`` lane by lane."""
    if not (isinstance(x, Vec) and y == x):
        return None

    def codegen(context, builder, signature, args):
        return builder.fadd(args[0], args[1])
    return x(x, y), codegen


@intrinsic
def vmuladd(typingctx, x, y, acc):
    """``acc + x * y`` lane by lane with one rounding."""
    if not (isinstance(x, Vec) and y == x and acc == x):
        return None

    def codegen(context, builder, signature, args):
        vtype = args[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vtype, [vtype] * 3),
                                            f"llvm.fma.{_suffix(vtype)}")
        return builder.call(fn, [args[0], args[1], args[2]])
    return x(x, y, acc), codegen


def _pair_sums(builder, x, y, take):
    """Lane-wise ``x[even] + x[odd]``-style pair sums of two vectors, interleaved by ``take``."""
    i32 = ir.IntType(32)
    first = ir.Constant(ir.VectorType(i32, LANES), take[0])
    second = ir.Constant(ir.VectorType(i32, LANES), take[1])
    return builder.fadd(builder.shuffle_vector(x, y, first), builder.shuffle_vector(x, y, second))


@intrinsic
def vsum8(typingctx, a0, a1, a2, a3, a4, a5, a6, a7):
    """The vector of the eight lane sums ``(sum(a0), ..., sum(a7))``, in a fixed order.

    Three rounds of shuffles and adds (a transpose-and-add tree) instead of
    eight separate horizontal sums.
    """
    if not (isinstance(a0, Vec) and all(a == a0 for a in (a1, a2, a3, a4, a5, a6, a7))):
        return None

    def codegen(context, builder, signature, args):
        # Round 1: neighbouring lanes of each vector, two vectors per result.
        r1 = ([0, 8, 2, 10, 4, 12, 6, 14], [1, 9, 3, 11, 5, 13, 7, 15])
        # Round 2: pairs of pairs; round 3: the two halves.
        r2 = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15])
        r3 = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15])
        t = [_pair_sums(builder, args[2 * i], args[2 * i + 1], r1) for i in range(4)]
        u = [_pair_sums(builder, t[2 * i], t[2 * i + 1], r2) for i in range(2)]
        return _pair_sums(builder, u[0], u[1], r3)
    return a0(a0, a1, a2, a3, a4, a5, a6, a7), codegen


# ---------------------------------------------------------------------------
# Register tiles
#
# A layer's matrix product is done in tiles of a few rows x 32 (or 16)
# columns whose sums stay in vector registers while the loop runs over the
# shared index: each weight chunk is loaded once for all rows of the tile,
# and each row of the result is written once.  The helpers are inlined, so
# the tuples they return never exist in memory.
# ---------------------------------------------------------------------------


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
def _add_store2(row, kc, n, a0, a1):
    vstore(row, kc, n, vadd(vload(row, kc, n), a0))
    vstore(row, kc + 8, n - 8, vadd(vload(row, kc + 8, n - 8), a1))


#: Samples per block of the forward tile (:func:`_forward_tile`).
FWD_BLOCK = 5
#: Inputs per block of the first layer's gradient tile (:func:`_grad_tile`).
GRAD_BLOCK = 8


@njit(cache=True)
def _forward_tile(W, U, nU, X, out, s0):
    """``out[s0 + q] = sum_u X[U[u], q] * W[U[u]]`` for ``q < 5``, 32 columns at a time.

    ``U[:nU]`` lists the inputs any of the five samples uses, ascending, and
    ``X[i, q]`` is sample ``q``'s input ``i`` (0 where it has none: an exact
    no-op, so every sample's sum is the one it would get alone).  Columns
    past the last multiple of 32 go 8 at a time, so a narrow layer computes
    few unused lanes.
    """
    n_out = W.shape[1]
    full = n_out - n_out % 32
    for kc in range(0, full, 32):
        ncols = n_out - kc
        a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = a20 = a21 = a22 = a23 = vzero(W[0])
        a30 = a31 = a32 = a33 = a40 = a41 = a42 = a43 = a00
        for u in range(nU):
            i = U[u]
            w = W[i]
            x = X[i]
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
        a0 = a1 = a2 = a3 = a4 = vzero(W[0])
        for u in range(nU):
            i = U[u]
            x = X[i]
            w0 = vload(W[i], kc, ncols)
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
def _forward_one(W, idx, val, n, o):
    """``o = sum_{u < n} val[u] * W[idx[u]]`` (one sample), 32 columns at a time (the rest 8 at a time)."""
    n_out = W.shape[1]
    full = n_out - n_out % 32
    for kc in range(0, full, 32):
        ncols = n_out - kc
        a0 = a1 = a2 = a3 = vzero(W[0])
        for u in range(n):
            w = W[idx[u]]
            a0, a1, a2, a3 = _fma4(val[u], vload(w, kc, ncols), vload(w, kc + 8, ncols - 8),
                                   vload(w, kc + 16, ncols - 16), vload(w, kc + 24, ncols - 24), a0, a1, a2, a3)
        _store4(o, kc, ncols, a0, a1, a2, a3)
    for kc in range(full, n_out, LANES):
        ncols = n_out - kc
        a0 = vzero(W[0])
        for u in range(n):
            a0 = vfma(val[u], vload(W[idx[u]], kc, ncols), a0)
        vstore(o, kc, ncols, a0)


@njit(cache=True)
def _grad_tile(D, S, nS, C, dest, rows):
    """``dest[rows[q]] += sum_t C[S[t], q] * D[S[t]]`` for ``q < 8``, 16 columns at a time.

    The first layer's weight update for eight input pixels at once:
    ``S[:nS]`` lists, ascending, the samples that use any of them and
    ``C[s, q]`` is sample ``s``'s coefficient for pixel ``rows[q]`` (0 when it
    does not use it).
    """
    for kc in range(0, D.shape[1], 16):
        ncols = D.shape[1] - kc
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = vzero(D[0])
        a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = a00
        for t in range(nS):
            s = S[t]
            d = D[s]
            c = C[s]
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
        _add_store2(dest[rows[0]], kc, ncols, a00, a01)
        _add_store2(dest[rows[1]], kc, ncols, a10, a11)
        _add_store2(dest[rows[2]], kc, ncols, a20, a21)
        _add_store2(dest[rows[3]], kc, ncols, a30, a31)
        _add_store2(dest[rows[4]], kc, ncols, a40, a41)
        _add_store2(dest[rows[5]], kc, ncols, a50, a51)
        _add_store2(dest[rows[6]], kc, ncols, a60, a61)
        _add_store2(dest[rows[7]], kc, ncols, a70, a71)


@njit(cache=True)
def _grad_one(D, samples, coef, lo, hi, o):
    """``o += sum_{lo <= t < hi} coef[t] * D[samples[t]]`` (one input), 16 columns at a time."""
    for kc in range(0, D.shape[1], 16):
        ncols = D.shape[1] - kc
        a0 = a1 = vzero(D[0])
        for t in range(lo, hi):
            d = D[samples[t]]
            a0, a1 = _fma2(coef[t], vload(d, kc, ncols), vload(d, kc + 8, ncols - 8), a0, a1)
        _add_store2(o, kc, ncols, a0, a1)



@njit(cache=True, inline="always")
def _muladd2(w, x0, x1, a0, a1):
    return vmuladd(w, x0, a0), vmuladd(w, x1, a1)


@njit(cache=True)
def _dots_tile(W, j0, D, s0, s1, out):
    """``out[s, j0 + q] = W[j0 + q] . D[s]`` for ``q < 8`` and ``s`` in ``(s0, s1)``.

    The error a hidden layer sends back to its inputs, for eight weight rows
    and two samples at once: sixteen dot products summed lane-wise in
    registers, then reduced together by :func:`vsum8`.  Rows past the end of
    ``W`` are not written (their lanes repeat the last row).
    """
    n_in, n_out = W.shape
    last = n_in - 1
    r0, r1, r2, r3 = W[j0], W[min(j0 + 1, last)], W[min(j0 + 2, last)], W[min(j0 + 3, last)]
    r4, r5, r6, r7 = W[min(j0 + 4, last)], W[min(j0 + 5, last)], W[min(j0 + 6, last)], W[min(j0 + 7, last)]
    d0 = D[s0]
    d1 = D[s1]
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
def _dots_active(W, D, s, inp, out, rows, tmp):
    """``out[s, j] = W[j] . D[s]`` where ``inp[s, j]`` is non-zero, else 0: one sample's error sent back.

    Only the rows of the units the sample used (ReLU on), eight at a time,
    summed as in :func:`_dots_tile` (so each dot product is the same bits);
    ``rows`` and ``tmp`` are scratch.
    """
    n_in, n_out = W.shape
    x = inp[s]
    o = out[s]
    n = 0
    for j in range(n_in):
        rows[n] = j
        n += 1 if x[j] != 0.0 else 0
        o[j] = 0.0
    d = D[s]
    for b in range(0, n, 8):
        last = n - 1
        r0, r1, r2, r3 = W[rows[b]], W[rows[min(b + 1, last)]], W[rows[min(b + 2, last)]], W[rows[min(b + 3, last)]]
        r4, r5, r6, r7 = (W[rows[min(b + 4, last)]], W[rows[min(b + 5, last)]], W[rows[min(b + 6, last)]],
                          W[rows[min(b + 7, last)]])
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


@njit(cache=True, inline="always", fastmath={"contract"})
def _axpy(a, x, y):
    for k in range(y.shape[0]):
        y[k] += a * x[k]


@njit(cache=True, inline="always")
def _compact(x, idx, val):
    """Indices and values of the non-zero entries of ``x``; returns their count.

    Branch-free: about half of a hidden layer's units are off, so a branch
    would mispredict half the time.
    """
    n = 0
    for j in range(x.shape[0]):
        v = x[j]
        idx[n] = j
        val[n] = v
        n += 1 if v != 0.0 else 0
    return n


@njit(cache=True, fastmath={"contract"})
def gather_batch(data, rows, cols, scale):
    """Regroup the non-zero inputs of the batch ``rows`` by input pixel, as the first layer's gradient reads them.

    Lists the pixels used in ``cols.pixels`` in the order the samples first
    use them (neighbouring entries then tend to share samples, which keeps
    the register tiles of :func:`_first_layer_grad` dense) and returns how
    many there are.  The ``u``-th pixel listed is column ``q = u %
    GRAD_BLOCK`` of block ``k = u // GRAD_BLOCK``: ``cols.coef[k, s, q]`` is
    ``scale`` times sample ``s``'s value of it (0 if the sample does not use
    it) and ``cols.seen[k, s]`` is 1 if sample ``s`` uses any pixel of block
    ``k`` -- the tile's coefficient matrix as it is.  One pass over the
    batch's non-zero inputs, never over all pixels; it first clears what the
    previous call wrote (recorded in ``cols.extent``), so the batch's
    gradient may be skipped (a diverged batch) without leaving stale entries.
    ``cols.count`` is 0 between calls.
    """
    coef, seen = cols.coef, cols.seen
    n_blocks = (cols.extent[0] + GRAD_BLOCK - 1) // GRAD_BLOCK
    for k in range(n_blocks):
        for s in range(cols.extent[1]):
            coef[k, s, :] = 0.0
            seen[k, s] = 0
    indptr, indices, values = data.indptr, data.indices, data.values
    count = cols.count  # 1 + the list position of each pixel seen so far
    n_used = 0
    for s in range(rows.shape[0]):
        r = rows[s]
        for p in range(indptr[r], indptr[r + 1]):
            i = indices[p]
            c = count[i]
            # Branch-free: whether a pixel is new is hard to predict.
            u = n_used if c == 0 else c - 1
            cols.pixels[n_used] = i
            n_used += 1 if c == 0 else 0
            count[i] = u + 1
            k = u // GRAD_BLOCK
            coef[k, s, u % GRAD_BLOCK] = values[p] * scale
            seen[k, s] = 1
    for u in range(n_used):
        count[cols.pixels[u]] = 0
    cols.extent[0] = n_used
    cols.extent[1] = rows.shape[0]
    return n_used


@njit(cache=True, fastmath={"contract"})
def _block_inputs(data, rows, l, inputs, s0, X, U, seen):
    """Lay out the inputs of samples ``s0 .. s0 + FWD_BLOCK - 1`` for :func:`_forward_tile`; returns how many.

    ``X[i, q]`` becomes sample ``q``'s input ``i`` and ``U`` the ascending list
    of inputs any of them uses.  The first layer's inputs are sparse: only
    their entries of ``X`` are written (``X`` and ``seen`` are all 0 before,
    and :func:`_clear_block` restores that).  A hidden layer's are dense rows
    of ``inputs``, copied whole.
    """
    nU = 0
    if l == 0:
        lo = X.shape[0]
        hi = 0
        for q in range(FWD_BLOCK):
            r = rows[s0 + q]
            p0 = data.indptr[r]
            p1 = data.indptr[r + 1]
            for p in range(p0, p1):
                i = data.indices[p]
                X[i, q] = data.values[p]
                seen[i] = 1
            if p1 > p0:
                lo = min(lo, data.indices[p0])
                hi = max(hi, data.indices[p1 - 1] + 1)
        for i in range(lo, hi):
            U[nU] = i
            nU += seen[i]
    else:
        for j in range(inputs.shape[1]):
            used = False
            for q in range(FWD_BLOCK):
                v = inputs[s0 + q, j]
                X[j, q] = v
                used |= v != 0.0
            U[nU] = j
            nU += 1 if used else 0
    return nU


@njit(cache=True, fastmath={"contract"})
def _clear_block(X, U, nU, seen):
    for u in range(nU):
        i = U[u]
        seen[i] = 0
        X[i, :] = 0.0


@njit(cache=True, fastmath={"contract"})
def forward_batch(W, b, has_bias, data, rows, A, work):
    """Forward pass of the samples ``rows``; fills ``A``.

    Samples go through each layer in blocks of ``FWD_BLOCK`` (a register
    tile, :func:`_forward_tile`, over the inputs any of them uses), the rest
    one by one (:func:`_forward_one`, over the sample's own non-zero inputs).
    Either way a sample's sums run over its non-zero inputs in ascending
    order, so its outputs do not depend on the batch it is in (while the
    weights are finite: in a block, 0 times an infinite weight is nan).
    ``work.alive[l]`` is set to 1 when hidden layer ``l`` has a positive
    output for some sample of the batch (used to detect a dead network).
    """
    L = len(W)
    B = rows.shape[0]
    idx = work.nz_idx
    val = work.nz_val
    for l in range(L):
        out = A[l]
        Wl = W[l]
        n_out = Wl.shape[1]
        inputs = A[l - 1] if l > 0 else A[l]
        X = work.block_x0 if l == 0 else work.block_x
        s0 = 0
        while B - s0 >= FWD_BLOCK:
            nU = _block_inputs(data, rows, l, inputs, s0, X, work.block_u, work.block_seen)
            _forward_tile(Wl, work.block_u, nU, X, out, s0)
            if l == 0:
                _clear_block(X, work.block_u, nU, work.block_seen)
            s0 += FWD_BLOCK
        for s in range(s0, B):
            if l == 0:
                r = rows[s]
                p0 = data.indptr[r]
                n = data.indptr[r + 1] - p0
                _forward_one(Wl, data.indices[p0:p0 + n], data.values[p0:p0 + n], n, out[s])
            else:
                n = _compact(inputs[s], idx, val)
                _forward_one(Wl, idx, val, n, out[s])
        any_pos = False
        for s in range(B):
            o = out[s]
            if has_bias:
                for k in range(n_out):
                    o[k] += b[l][k]
            if l < L - 1:
                for k in range(n_out):
                    o[k] = o[k] if o[k] > 0.0 else 0.0
                if not any_pos:
                    for k in range(n_out):
                        if o[k] > 0.0:
                            any_pos = True
                            break
        if any_pos and l < L - 1:
            work.alive[l] = 1


@njit(cache=True, fastmath={"contract"})
def softmax_xent(logits, y, D):
    """Per-sample cross-entropy of ``logits`` (B x K) and its gradient ``D`` = softmax - onehot.

    Uses the log-sum-exp shift, so large logits never overflow.  Returns the
    sum of the per-sample losses.
    """
    B, K = logits.shape
    total = 0.0
    for s in range(B):
        z = logits[s]
        zmax = z[0]
        for k in range(1, K):
            if z[k] > zmax:
                zmax = z[k]
        d = D[s]
        acc = 0.0
        for k in range(K):
            e = math.exp(z[k] - zmax)
            d[k] = e
            acc += e
        total += zmax + math.log(acc) - z[y[s]]
        for k in range(K):
            d[k] /= acc
        d[y[s]] -= 1.0
    return total


@njit(cache=True, fastmath={"contract"})
def _momentum_row(w, v, a, d, lr, alpha, nesterov):
    """On-line (m = 1) momentum step of one weight row whose gradient is ``a * d`` (``a`` = 0: none)."""
    for k in range(w.shape[0]):
        g = lr * (a * d[k])
        vk = alpha * v[k] + g
        v[k] = vk
        if nesterov:
            w[k] -= alpha * vk + g
        else:
            w[k] -= vk


@njit(cache=True, fastmath={"contract"})
def _hidden_grad(D, inp, B, scale, dest, work):
    """``dest[j] += scale * sum_s inp[s, j] * D[s]`` for every input unit ``j`` some sample used.

    The units used go in blocks of ``GRAD_BLOCK`` through :func:`_grad_tile`,
    the rest one by one; each sum runs over the samples in ascending order.
    The inputs are ReLU outputs (never negative), so a unit is used where its
    largest input is positive.  The units used are left in ``work.block_u``;
    returns how many.
    """
    n_in = inp.shape[1]
    top = work.col_max[:n_in]
    top[:] = 0.0
    for s in range(B):
        x = inp[s]
        for j in range(n_in):
            top[j] = max(top[j], x[j])
    rows = work.block_u
    n_rows = 0
    for j in range(n_in):
        rows[n_rows] = j
        n_rows += 1 if top[j] > 0.0 else 0
    C = work.hid_c
    S = work.grad_s
    b0 = 0
    while n_rows - b0 >= GRAD_BLOCK:
        j0 = rows[b0]
        # In a batch most units are used, so a block is usually a run of
        # consecutive units, whose coefficients are contiguous in each sample.
        run = rows[b0 + GRAD_BLOCK - 1] - j0 == GRAD_BLOCK - 1
        nS = 0
        for s in range(B):
            x = inp[s]
            c = C[s]
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
            S[nS] = s
            nS += 1 if used else 0
        _grad_tile(D, S, nS, C, dest, rows[b0:b0 + GRAD_BLOCK])
        b0 += GRAD_BLOCK
    samples = work.nz_idx
    coef = work.nz_val
    for t in range(b0, n_rows):
        j = rows[t]
        n = 0
        for s in range(B):
            a = inp[s, j]
            samples[n] = s
            coef[n] = scale * a
            n += 1 if a != 0.0 else 0
        _grad_one(D, samples, coef, 0, n, dest[j])
    return n_rows


@njit(cache=True, fastmath={"contract"})
def _first_layer_grad(D, cols, n_used, B, dest, S, samples, coef):
    """``dest[i] += sum_s c(s, i) * D[s]`` for every pixel ``i`` the batch uses (``c``: see :func:`gather_batch`).

    Full blocks of ``GRAD_BLOCK`` pixels go through :func:`_grad_tile`
    (``S``: the samples using any of them), the rest one by one
    (:func:`_grad_one`; ``samples``/``coef``: scratch).  Each sum runs over
    the pixel's samples in ascending order (a sample of the block that does
    not use the pixel adds exactly 0), so how pixels are grouped does not
    change a bit of the result.
    """
    n_full = n_used // GRAD_BLOCK
    for k in range(n_full):
        seen = cols.seen[k]
        nS = 0
        for s in range(B):
            S[nS] = s
            nS += seen[s]
        _grad_tile(D, S, nS, cols.coef[k], dest, cols.pixels[k * GRAD_BLOCK:(k + 1) * GRAD_BLOCK])
    for q in range(n_used - n_full * GRAD_BLOCK):
        C = cols.coef[n_full]
        n = 0
        for s in range(B):
            a = C[s, q]
            samples[n] = s
            coef[n] = a
            n += 1 if a != 0.0 else 0
        _grad_one(D, samples, coef, 0, n, dest[cols.pixels[n_full * GRAD_BLOCK + q]])


@njit(cache=True, fastmath={"contract"})
def backward_batch(W, b, has_bias, cols, n_used, B, A, D, work, fused, c):
    """Back-propagate ``D[L-1]`` (softmax - onehot) through the batch.

    With ``fused`` (plain SGD) each weight row takes its update
    ``-c * sum_s a_s d_s`` (``c = lr / B``) right after the row's contribution
    to the previous layer's error has been taken with the old weights;
    no gradient is stored.  Otherwise the summed gradients go to
    ``work.GW``/``work.Gb`` and every row that received a contribution is
    listed once in ``work.active[l][:work.n_active[l]]``, so the optimiser can
    skip the rest.  For a hidden layer the error sent back, ``D[l-1]``, is
    computed for every unit first (:func:`_dots_tile`), then its weights take
    their update or gradient (:func:`_hidden_grad`); the first layer's rows go
    pixel by pixel (:func:`gather_batch`, :func:`_first_layer_grad`).  All of
    it runs in register tiles, so each weight row is loaded once per batch.
    """
    L = len(W)
    for l in range(L - 1, -1, -1):
        Dl = D[l]
        if has_bias:
            target = b[l] if fused else work.Gb[l]
            scale = -c if fused else 1.0
            for s in range(B):
                _axpy(scale, Dl[s], target)
        Wl = W[l]
        Gl = work.GW[l]
        mk = work.mark[l]
        act = work.active[l]
        if l > 0:
            inp = A[l - 1]
            Dprev = D[l - 1]
            n_in = Wl.shape[0]
            # The error sent back, with the old weights: the dot products of
            # pairs of samples in register tiles, then 0 where the unit was
            # off (ReLU); an odd sample out takes only the units it used.
            pairs = B - B % 2
            for j0 in range(0, n_in, 8):
                for s in range(0, pairs, 2):
                    _dots_tile(Wl, j0, Dl, s, s + 1, Dprev)
            for s in range(pairs):
                for j in range(n_in):
                    Dprev[s, j] = Dprev[s, j] if inp[s, j] != 0.0 else 0.0
            if pairs < B:
                _dots_active(Wl, Dl, B - 1, inp, Dprev, work.block_u, work.col_max)
            n_rows = _hidden_grad(Dl, inp, B, -c if fused else 1.0, Wl if fused else Gl, work)
            if not fused:
                for t in range(n_rows):
                    j = work.block_u[t]
                    if mk[j] == 0:
                        mk[j] = 1
                        act[work.n_active[l]] = j
                        work.n_active[l] += 1
        else:
            # (With ``fused``, gather_batch has scaled the inputs by -c.)
            dest = Wl if fused else Gl
            _first_layer_grad(Dl, cols, n_used, B, dest, work.grad_s, work.nz_idx, work.nz_val)
            if not fused:
                for u in range(n_used):
                    i = cols.pixels[u]
                    if mk[i] == 0:
                        mk[i] = 1
                        act[work.n_active[l]] = i
                        work.n_active[l] += 1


@njit(cache=True, fastmath={"contract"})
def backward_online_momentum(net, opt, cols, n_used, A, D, work, step):
    """Back-propagation fused with an on-line (m = 1) momentum or Nesterov step.

    Like plain SGD in :func:`backward_batch`, each weight row takes its step
    as soon as its gradient ``a * d`` is known, after its contribution to the
    previous layer's error has been taken with the old weights.  Hidden rows
    whose input is 0 take the zero-gradient step; first-layer rows of zero
    pixels are left to :func:`catch_up_rows`.
    """
    W, b = net.W, net.b
    L = len(W)
    lr, alpha, nesterov = opt.lr, opt.momentum, opt.kind == NESTEROV
    for l in range(L - 1, -1, -1):
        d = D[l][0]
        n_out = W[l].shape[1]
        if net.has_bias:
            lo = net.b_off[l]
            _momentum_row(b[l], opt.s1[lo:lo + n_out], 1.0, d, lr, alpha, nesterov)
        Wl = W[l]
        base = net.w_off[l]
        if l > 0:
            inp = A[l - 1][0]
            Dprev = D[l - 1]
            # The error sent back, with the old weights (as in backward_batch).
            _dots_active(Wl, D[l], 0, A[l - 1], Dprev, work.block_u, work.col_max)
            for j in range(Wl.shape[0]):
                lo = base + j * n_out
                _momentum_row(Wl[j], opt.s1[lo:lo + n_out], inp[j], d, lr, alpha, nesterov)
        else:
            for u in range(n_used):
                i = cols.pixels[u]
                lo = base + i * n_out
                _momentum_row(Wl[i], opt.s1[lo:lo + n_out], cols.coef[u // GRAD_BLOCK, 0, u % GRAD_BLOCK], d,
                              lr, alpha, nesterov)
                work.last[i] = step


@njit(cache=True, error_model="numpy")
def bias_corrections(b1, b2, step):
    """Adam's bias corrections ``(1 - b1**step, 1 - b2**step)`` for update number ``step`` (from 1)."""
    return 1.0 - b1**step, 1.0 - b2**step


@njit(cache=True, fastmath={"contract"}, error_model="numpy")
def update_range(kind, params, grad, s1, s2, lo, hi, scale, lr, momentum, b1, b2, eps, c1, c2, has_grad):
    """Apply one optimiser step to ``params[lo:hi]`` and zero the used gradient.

    ``g = grad * scale`` is the mean mini-batch gradient; with ``has_grad``
    false the gradient is known to be 0 there and is not read.  ``c1`` and
    ``c2`` are Adam's bias corrections ``1 - b1**t`` and ``1 - b2**t`` for
    update ``t`` (see :func:`bias_corrections`).  The update rules are
    documented in :mod:`ex3lib.optimisers`.
    """
    # Slices, looped from 0: with range(lo, hi) Numba keeps a negative-index
    # check that stops LLVM from vectorising the loops.
    p = params[lo:hi]
    gr = grad[lo:hi]
    m1 = s1[lo:hi] if s1.shape[0] else s1
    m2 = s2[lo:hi] if s2.shape[0] else s2
    n = hi - lo
    if kind == SGD:
        for i in range(n):
            p[i] -= lr * (gr[i] * scale)
            gr[i] = 0.0
    elif kind == MOMENTUM:
        if has_grad:
            for i in range(n):
                v = momentum * m1[i] + lr * (gr[i] * scale)
                m1[i] = v
                p[i] -= v
                gr[i] = 0.0
        else:
            for i in range(n):
                v = momentum * m1[i]
                m1[i] = v
                p[i] -= v
    elif kind == NESTEROV:
        if has_grad:
            for i in range(n):
                g = lr * (gr[i] * scale)
                v = momentum * m1[i] + g
                m1[i] = v
                p[i] -= momentum * v + g
                gr[i] = 0.0
        else:
            for i in range(n):
                v = momentum * m1[i]
                m1[i] = v
                p[i] -= momentum * v
    elif kind == ADAGRAD:
        for i in range(n):
            g = gr[i] * scale
            G = m1[i] + g * g
            m1[i] = G
            p[i] -= lr / _sqrt(G + eps) * g
            gr[i] = 0.0
    elif kind == RMSPROP:
        if has_grad:
            for i in range(n):
                g = gr[i] * scale
                E = b2 * m1[i] + (1.0 - b2) * g * g
                m1[i] = E
                p[i] -= lr / _sqrt(E + eps) * g
                gr[i] = 0.0
        else:
            for i in range(n):
                m1[i] = b2 * m1[i]
    else:
        if has_grad:
            for i in range(n):
                g = gr[i] * scale
                m = b1 * m1[i] + (1.0 - b1) * g
                v = b2 * m2[i] + (1.0 - b2) * g * g
                m1[i] = m
                m2[i] = v
                p[i] -= lr * (m / c1) / (_sqrt(v / c2) + eps)
                gr[i] = 0.0
        else:
            for i in range(n):
                m = b1 * m1[i]
                v = b2 * m2[i]
                m1[i] = m
                m2[i] = v
                p[i] -= lr * (m / c1) / (_sqrt(v / c2) + eps)


@njit(cache=True, fastmath={"contract"})
def apply_update(net, opt, work, scale, step):
    """One optimiser step over every parameter, skipping rows where that is exact or deferred.

    For SGD and AdaGrad a zero gradient leaves weight and state bit-for-bit
    unchanged, so only the rows listed in ``work.active`` are visited (when
    ``opt.sparse``).  With ``opt.lazy`` the first layer's untouched rows are
    deferred to :func:`catch_up_rows`.  Every other row is updated, reading
    the gradient only where there is one.
    """
    c1, c2 = bias_corrections(opt.b1, opt.b2, step)
    L = net.shapes.shape[0]
    for l in range(L):
        n_out = net.shapes[l, 1]
        base = net.w_off[l]
        mk = work.mark[l]
        act = work.active[l]
        if opt.sparse or (opt.lazy and l == 0):
            for q in range(work.n_active[l]):
                j = act[q]
                if opt.lazy:
                    work.last[j] = step
                lo = base + j * n_out
                update_range(opt.kind, net.params, work.grad, opt.s1, opt.s2, lo, lo + n_out, scale,
                             opt.lr, opt.momentum, opt.b1, opt.b2, opt.eps, c1, c2, True)
                mk[j] = 0
        else:
            for j in range(net.shapes[l, 0]):
                lo = base + j * n_out
                update_range(opt.kind, net.params, work.grad, opt.s1, opt.s2, lo, lo + n_out, scale,
                             opt.lr, opt.momentum, opt.b1, opt.b2, opt.eps, c1, c2, mk[j] != 0)
                mk[j] = 0
        work.n_active[l] = 0
        if net.has_bias:
            lo = net.b_off[l]
            update_range(opt.kind, net.params, work.grad, opt.s1, opt.s2, lo, lo + n_out, scale,
                         opt.lr, opt.momentum, opt.b1, opt.b2, opt.eps, c1, c2, True)


@njit(cache=True, fastmath={"contract"})
def _forward_rows(net, work, data, rows):
    """Gather and forward the batch ``rows``; returns the summed loss, leaving softmax - onehot in D."""
    B = rows.shape[0]
    L = len(net.W)
    forward_batch(net.W, net.b, net.has_bias, data, rows, work.A, work)
    yb = work.yb[:B]
    for s in range(B):
        yb[s] = data.y[rows[s]]
    return softmax_xent(work.A[L - 1][:B], yb, work.D[L - 1][:B])


@njit(cache=True, fastmath={"contract"})
def train_window(net, opt, work, data, order, start, stop, batch_size, step):
    """Train on ``order[start:stop]`` in consecutive mini-batches of ``batch_size``.

    ``net``, ``opt``, ``work`` and ``data`` are the named tuples built by
    :mod:`ex3lib.network` and :mod:`ex3lib.training`.  Returns
    ``(loss_sum, n_samples, step, status)``: the summed per-sample training
    loss (each measured before its batch's update), how many samples were
    used, the update counter, and 1 if a loss was not finite (the window then
    stops at that batch, without updating), else 0.  Hidden layers that
    produced a positive output are flagged in ``work.alive``.  With
    ``opt.lazy`` every deferred first-layer row is brought up to date before
    returning (see :func:`catch_up_rows`).
    """
    loss_sum = 0.0
    n = 0
    pos = start
    status = 0
    while pos < stop:
        end = min(pos + batch_size, stop)
        B = end - pos
        rows = order[pos:end]
        fused = opt.kind == SGD
        # Plain SGD folds its step into the first layer's inputs (see backward_batch).
        n_used = gather_batch(data, rows, work.cols, -(opt.lr / B) if fused else 1.0)
        if opt.lazy:
            catch_up_rows(opt, net.params, net.w_off[0], net.shapes[0, 1], work.cols.pixels, n_used,
                          work.last, step)
        batch_loss = _forward_rows(net, work, data, rows)
        if not math.isfinite(batch_loss):
            loss_sum += batch_loss
            n += B
            status = 1
            break
        loss_sum += batch_loss
        n += B
        step += 1
        if B == 1 and opt.lazy and (opt.kind == MOMENTUM or opt.kind == NESTEROV):
            backward_online_momentum(net, opt, work.cols, n_used, work.A, work.D, work, step)
        else:
            backward_batch(net.W, net.b, net.has_bias, work.cols, n_used, B, work.A, work.D, work,
                           fused, opt.lr / B)
            if not fused:
                apply_update(net, opt, work, 1.0 / B, step)
        pos = end
    if opt.lazy:
        every = np.arange(net.shapes[0, 0])
        catch_up_rows(opt, net.params, net.w_off[0], net.shapes[0, 1], every, every.shape[0],
                      work.last, step)
    return loss_sum, n, step, status


@njit(cache=True, error_model="numpy")
def catch_up_rows(opt, params, base, n_out, rows, n_rows, last, step):
    """Apply the updates that first-layer rows skipped while their pixel was 0, in closed form.

    A row whose pixel is 0 in every sample of a batch has a zero gradient;
    for momentum, Nesterov and RMSProp the update is then a fixed linear map
    of weight and state, so ``k`` skipped steps can be applied at once before
    the row is next read: momentum ``w -= v * S_k``, ``v *= α^k`` with
    ``S_k = α (1 - α^k) / (1 - α)``; Nesterov ``w -= v * α S_k``, ``v *= α^k``;
    RMSProp ``G *= β₂^k`` (the weight does not move).  This equals taking the
    ``k`` steps one by one, up to rounding.  ``last[j]`` is the update count
    row ``j`` is up to date with; afterwards it is ``step``.
    """
    a = opt.momentum
    for q in range(n_rows):
        j = rows[q]
        k = step - last[j]
        if k <= 0:
            continue
        last[j] = step
        lo = base + j * n_out
        w = params[lo:lo + n_out]
        st = opt.s1[lo:lo + n_out]
        if opt.kind == RMSPROP:
            decay = opt.b2**k
            for i in range(n_out):
                st[i] *= decay
            continue
        ak = a**k
        shift = a * (1.0 - ak) / (1.0 - a)
        if opt.kind == NESTEROV:
            shift *= a
        for i in range(n_out):
            w[i] -= st[i] * shift
            st[i] *= ak


@njit(cache=True, fastmath={"contract"})
def evaluate(net, work, data, rows_all, out_pred):
    """Forward ``rows_all`` in chunks; returns ``(loss_sum, n_correct)`` and writes predictions.

    Ties in the logits go to the lowest class index (as ``argmax`` does).
    """
    L = len(net.W)
    chunk = work.A[0].shape[0]
    loss_sum = 0.0
    correct = 0
    n = rows_all.shape[0]
    for pos in range(0, n, chunk):
        end = min(pos + chunk, n)
        B = end - pos
        rows = rows_all[pos:end]
        batch_loss = _forward_rows(net, work, data, rows)
        loss_sum += batch_loss
        logits = work.A[L - 1]
        for s in range(B):
            z = logits[s]
            best = 0
            for k in range(1, z.shape[0]):
                if z[k] > z[best]:
                    best = k
            out_pred[pos + s] = best
            if best == work.yb[s]:
                correct += 1
    return loss_sum, correct


@njit(cache=True, fastmath={"contract"})
def loss_and_grad(net, work, data, rows):
    """Mean loss over ``rows`` and the mean gradient left in ``work.grad`` (one batch)."""
    L = len(net.W)
    B = rows.shape[0]
    total = _forward_rows(net, work, data, rows)
    n_used = gather_batch(data, rows, work.cols, 1.0)
    backward_batch(net.W, net.b, net.has_bias, work.cols, n_used, B, work.A, work.D, work, False, 0.0)
    for l in range(L):
        mk = work.mark[l]
        for q in range(work.n_active[l]):
            mk[work.active[l][q]] = 0
        work.n_active[l] = 0
    inv = 1.0 / B
    for i in range(work.grad.shape[0]):
        work.grad[i] *= inv
    return total * inv


@njit(cache=True, fastmath={"contract"})
def _relu_into(z, out):
    for k in range(z.shape[0]):
        out[k] = z[k] if z[k] > 0.0 else 0.0


@njit(cache=True, fastmath={"contract"})
def sample_loss(logits, y):
    zmax = logits[0]
    for k in range(1, logits.shape[0]):
        if logits[k] > zmax:
            zmax = logits[k]
    acc = 0.0
    for k in range(logits.shape[0]):
        acc += math.exp(logits[k] - zmax)
    return zmax + math.log(acc) - logits[y]


@njit(cache=True, fastmath={"contract"})
def perturbed_losses(W, b, has_bias, Z, H, y, layer, x_in, hs, out):
    """Loss of one sample with each weight of ``W[layer]`` moved by each step in ``hs``.

    ``Z[l]``/``H[l]`` are the sample's pre-activations and outputs of layer
    ``l`` (``H[L-1]`` = logits), ``x_in`` the input of ``layer``.  Moving
    ``W[layer][j, k]`` by ``h`` moves only ``Z[layer][k]`` by ``h * x_in[j]``,
    so the layers before it are reused and the next layer is updated
    incrementally.  A weight whose input is 0 cannot change the loss: its
    entries are the unperturbed loss.  ``out`` has shape (fan_in, fan_out, len(hs)).
    """
    L = len(W)
    fan_in, fan_out = W[layer].shape
    base = sample_loss(H[L - 1], y)
    nh = hs.shape[0]
    for j in range(fan_in):
        if x_in[j] == 0.0:
            for k in range(fan_out):
                for q in range(nh):
                    out[j, k, q] = base
    if layer == L - 1:
        logits = H[L - 1].copy()
        for j in range(fan_in):
            if x_in[j] == 0.0:
                continue
            for k in range(fan_out):
                z0 = logits[k]
                for q in range(nh):
                    logits[k] = z0 + hs[q] * x_in[j]
                    out[j, k, q] = sample_loss(logits, y)
                logits[k] = z0
        return
    # layer < L-1: one hidden unit k of this layer changes; propagate onwards.
    bufs_z = [Z[l].copy() for l in range(L)]
    bufs_h = [H[l].copy() for l in range(L)]
    Wn = W[layer + 1]
    for j in range(fan_in):
        if x_in[j] == 0.0:
            continue
        for k in range(fan_out):
            z0 = Z[layer][k]
            h0 = H[layer][k]
            for q in range(nh):
                zk = z0 + hs[q] * x_in[j]
                hk = zk if zk > 0.0 else 0.0
                dh = hk - h0
                zn = bufs_z[layer + 1]
                if dh == 0.0:
                    zn[:] = Z[layer + 1]
                else:
                    for c in range(zn.shape[0]):
                        zn[c] = Z[layer + 1][c] + dh * Wn[k, c]
                if layer + 1 == L - 1:
                    out[j, k, q] = sample_loss(zn, y)
                    continue
                _relu_into(zn, bufs_h[layer + 1])
                for l in range(layer + 2, L):
                    zl = bufs_z[l]
                    if has_bias:
                        zl[:] = b[l]
                    else:
                        zl[:] = 0.0
                    hin = bufs_h[l - 1]
                    Wl = W[l]
                    for c in range(hin.shape[0]):
                        a = hin[c]
                        if a != 0.0:
                            _axpy(a, Wl[c], zl)
                    if l < L - 1:
                        _relu_into(zl, bufs_h[l])
                out[j, k, q] = sample_loss(bufs_z[L - 1], y)
