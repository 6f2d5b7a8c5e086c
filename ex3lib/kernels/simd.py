"""SIMD vectors for Numba: the register tiles' building blocks, an IEEE square root and a float32 first guess.

LLVM does not keep a tile of sums in registers across a loop by itself (Numba
arrays may alias, and its SLP vectoriser leaves loop-carried scalar sums
alone), so the register tiles of :mod:`ex3lib.kernels.tiles` use an explicit
vector type: ``LANES`` = 8 lanes of the array's dtype, an LLVM ``<8 x double>``
(or float). LLVM lowers it to whatever the CPU has: one AVX-512 register, two
AVX2 registers, four SSE2 registers, NEON pairs. Loads and stores take a lane
count ``n`` (lanes ``k >= n`` are neither read nor written, loads give 0
there), so a row whose width is not a multiple of 8 needs no scalar tail loop;
a whole vector is a plain load or store, only a partial one masked.

Every operation here is exact IEEE arithmetic lane by lane (``vfma`` and
``vmuladd`` round once, as a fused multiply-add does); :mod:`ex3lib.reference`
computes the same sums with NumPy, up to the order of the additions.

``+``, ``-``, ``*``, ``/`` and unary ``-`` also work on a ``Vec`` (with a
scalar standing for itself in every lane), and :func:`fma`, :func:`sqrt` and
:func:`zero_if_below` take floats or vectors alike, so an update rule of
:mod:`ex3lib.kernels.updates` is written once and gives the same bits on one
weight or on eight (the momentum tile of :mod:`ex3lib.kernels.tiles`, the
update loops of :mod:`ex3lib.kernels.updates`). :func:`widen` takes a float32
value or vector to float64, :func:`rsqrt_guess` with :func:`all_between`
and :func:`where_between` serve :func:`ex3lib.kernels.updates.inv_sqrt`, and
:func:`holds_float64` tells a kernel its arrays' type.
"""

import operator

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, overload, register_model


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
    """Pointer to ``arr[idx]`` as a vector pointer, the lane mask for ``n`` lanes, and whether ``n >= LANES``.

    A whole vector is read or written with a plain load or store, and only a
    row's last, partial one with a masked one: on CPUs without AVX-512 (AVX2's
    ``vmaskmovpd``) a masked store costs many times a plain one (on AMD's Zen
    cores it is microcoded), even with every lane on. The values read and
    written are the same either way.
    """
    arr = context.make_array(sig.args[0])(context, builder, args[0])
    ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), vtype.as_pointer())
    n = context.cast(builder, args[2], sig.args[2], types.int64)
    full = builder.icmp_signed(">=", n, ir.Constant(ir.IntType(64), LANES))
    return ptr, _lane_mask(builder, n), full


def _align(vtype):
    """The alignment a vector of ``vtype`` may assume: its element's (an array row need not start on a vector)."""
    return 8 if isinstance(vtype.element, ir.DoubleType) else 4


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
        ptr, mask, full = _masked_access(context, builder, signature, args, vtype)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vtype, [vtype.as_pointer(), ir.IntType(32), mask.type, vtype]),
            f"llvm.masked.load.{_suffix(vtype)}.p0")
        with builder.if_else(full, likely=True) as (whole, part):
            with whole:
                plain = builder.load(ptr, align=_align(vtype))
                whole_block = builder.block
            with part:
                masked = builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 1), mask, ir.Constant(vtype, None)])
                part_block = builder.block
        value = builder.phi(vtype)
        value.add_incoming(plain, whole_block)
        value.add_incoming(masked, part_block)
        return value
    return vt(arr, idx, n), codegen


@intrinsic
def vstore(typingctx, arr, idx, n, v):
    """``arr[idx:idx + min(n, LANES)] = v[:n]``; nothing else is written.

    A float64 vector stored into a float32 array is rounded to float32 first,
    as a float64 number stored into one element is.
    """
    if not (_check_1d(arr) and isinstance(v, Vec)
            and (v.dtype == arr.dtype or (v.dtype == types.float64 and arr.dtype == types.float32))):
        return None

    def codegen(context, builder, signature, args):
        vtype = context.get_value_type(Vec(signature.args[0].dtype))
        value = args[3] if args[3].type == vtype else builder.fptrunc(args[3], vtype)
        ptr, mask, full = _masked_access(context, builder, signature, args, vtype)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vtype, vtype.as_pointer(), ir.IntType(32), mask.type]),
            f"llvm.masked.store.{_suffix(vtype)}.p0")
        with builder.if_else(full, likely=True) as (whole, part):
            with whole:
                builder.store(value, ptr, align=_align(vtype))
            with part:
                builder.call(fn, [value, ptr, ir.Constant(ir.IntType(32), 1), mask])
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


# -- Scalar and vector arithmetic: the update rules of :mod:`ex3lib.kernels.updates` are written once, for a
# float or a ``Vec`` alike (a scalar operand of a vector operation stands for that value in every lane).

def _splat(builder, vtype, value):
    """``value`` (of the vector's element type) in every lane of a ``vtype``."""
    one = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vtype, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _operands(context, builder, signature, args, result):
    """The arguments as values of ``result``'s LLVM type: vectors as they are, scalars cast and splatted."""
    out = []
    for value, ty in zip(args, signature.args):
        if isinstance(ty, Vec):
            out.append(value)
        elif isinstance(result, Vec):
            out.append(_splat(builder, context.get_value_type(result),
                              context.cast(builder, value, ty, result.dtype)))
        else:
            out.append(context.cast(builder, value, ty, result))
    return out


def _result_type(typingctx, *operands):
    """The type of an operation on ``operands``: their ``Vec`` if any is one (all vectors must agree), else the
    widest float of the scalars; ``None`` (no match) for anything else."""
    vectors = {t for t in operands if isinstance(t, Vec)}
    if len(vectors) > 1 or not all(isinstance(t, (Vec, types.Float, types.Integer)) for t in operands):
        return None
    if vectors:
        return vectors.pop()
    result = typingctx.unify_types(*operands)
    return result if isinstance(result, types.Float) else types.float64


def _intrinsic_name(base, ty):
    """LLVM's name of intrinsic ``base`` (``"llvm.fma"``) for the LLVM type ``ty``."""
    if isinstance(ty, ir.VectorType):
        return f"{base}.{_suffix(ty)}"
    return f"{base}.{'f64' if isinstance(ty, ir.DoubleType) else 'f32'}"


@intrinsic
def sqrt(typingctx, x):
    """IEEE square root as the LLVM intrinsic, of a float or lane by lane: correctly rounded like ``math.sqrt``.

    Numba lowers ``math.sqrt`` to a call of the C library's ``sqrt``, which
    may set errno and so keeps LLVM from vectorising the loop around it.
    """
    if not isinstance(x, (types.Float, Vec)):
        return None

    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty]), _intrinsic_name("llvm.sqrt", ty))
        return builder.call(fn, args)
    return x(x), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (IEEE fused multiply-add), of floats or lane by lane.

    Written out where a kernel wants one, so that no compiler's choice of
    which products to fuse (``fastmath`` "contract") can change a result.
    """
    result = _result_type(typingctx, a, b, c)
    if result is None:
        return None

    def codegen(context, builder, signature, args):
        values = _operands(context, builder, signature, args, result)
        ty = values[0].type
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3),
                                            _intrinsic_name("llvm.fma", ty))
        return builder.call(fn, values)
    return result(a, b, c), codegen


@intrinsic
def zero_if_below(typingctx, x, bound):
    """``x`` with 0 where it is non-zero and below ``bound`` in magnitude (lane by lane for a ``Vec``); NaN kept."""
    if not (isinstance(x, (types.Float, Vec)) and isinstance(bound, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        ty = args[0].type
        element = signature.args[0].dtype if isinstance(signature.args[0], Vec) else signature.args[0]
        b = context.cast(builder, args[1], signature.args[1], element)
        if isinstance(ty, ir.VectorType):
            b = _splat(builder, ty, b)
        fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty]), _intrinsic_name("llvm.fabs", ty))
        small = builder.fcmp_ordered("<", builder.call(fabs, [args[0]]), b)
        nonzero = builder.fcmp_ordered("!=", args[0], ir.Constant(ty, None))
        return builder.select(builder.and_(small, nonzero), ir.Constant(ty, None), args[0])
    return x(x, bound), codegen


def _vector_operator(op, build):
    """Give ``op`` (``operator.add``, ...) a meaning when either operand is a ``Vec``: ``build`` lane by lane."""
    @intrinsic
    def lanes(typingctx, a, b):
        result = _result_type(typingctx, a, b)
        if not isinstance(result, Vec):
            return None

        def codegen(context, builder, signature, args):
            return build(builder, *_operands(context, builder, signature, args, result))
        return result(a, b), codegen

    @overload(op, inline="always")
    def _overload(a, b):
        if isinstance(a, Vec) or isinstance(b, Vec):
            return lambda a, b: lanes(a, b)


_vector_operator(operator.add, lambda builder, a, b: builder.fadd(a, b))
_vector_operator(operator.sub, lambda builder, a, b: builder.fsub(a, b))
_vector_operator(operator.mul, lambda builder, a, b: builder.fmul(a, b))
_vector_operator(operator.truediv, lambda builder, a, b: builder.fdiv(a, b))


@intrinsic
def _negate(typingctx, x):
    if not isinstance(x, Vec):
        return None

    def codegen(context, builder, signature, args):
        return builder.fneg(args[0])
    return x(x), codegen


@overload(operator.neg, inline="always")
def _neg(x):
    if isinstance(x, Vec):
        return lambda x: _negate(x)


@intrinsic
def widen(typingctx, x):
    """``x`` in float64: a float32 (or a ``Vec`` of them) widened exactly, a float64 as it is.

    The update rules compute in float64 whatever the arrays hold (their
    hyper-parameters are float64 numbers), and a vector loaded from a float32
    array is widened first so that it does the same.
    """
    if x == types.float64 or (isinstance(x, Vec) and x.dtype == types.float64):
        return x(x), lambda context, builder, signature, args: args[0]
    if x == types.float32:
        return types.float64(x), lambda context, builder, signature, args: builder.fpext(args[0], ir.DoubleType())
    if isinstance(x, Vec) and x.dtype == types.float32:
        vt = Vec(types.float64)

        def codegen(context, builder, signature, args):
            return builder.fpext(args[0], context.get_value_type(vt))
        return vt(x), codegen
    return None


# -- A first guess in float32 for the division-free reciprocal square root of :mod:`ex3lib.kernels.updates`
# (``inv_sqrt``), and the range test that says where it holds.

def _is_float64(x):
    return x == types.float64 or (isinstance(x, Vec) and x.dtype == types.float64)


def _float32_like(ty):
    """The float32 LLVM type of the same shape as the float64 (vector) type ``ty``."""
    return ir.VectorType(ir.FloatType(), ty.count) if isinstance(ty, ir.VectorType) else ir.FloatType()


def _float32_ones(ty):
    return ir.Constant(ty, [1.0] * ty.count) if isinstance(ty, ir.VectorType) else ir.Constant(ty, 1.0)


@intrinsic
def rsqrt_guess(typingctx, x):
    """``1 / sqrt(x)`` in float32 arithmetic, widened: ``float32(x)``, its IEEE square root, one IEEE division.

    Three correctly rounded float32 operations (deterministic on every CPU),
    so within 1.5e-7 relative of ``1 / sqrt(x)`` while ``x`` and the results
    are normal float32 numbers; a float64 or lane by lane.
    """
    if not _is_float64(x):
        return None

    def codegen(context, builder, signature, args):
        ty = _float32_like(args[0].type)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty]), _intrinsic_name("llvm.sqrt", ty))
        root = builder.call(fn, [builder.fptrunc(args[0], ty)])
        return builder.fpext(builder.fdiv(_float32_ones(ty), root), args[0].type)
    return x(x), codegen


def _between(context, builder, signature, args):
    """``lo <= x <= hi`` (an ``i1``, or a vector of them; false for NaN)."""
    ty = args[0].type
    element = signature.args[0].dtype if isinstance(signature.args[0], Vec) else signature.args[0]
    lo, hi = (context.cast(builder, a, t, element) for a, t in zip(args[1:3], signature.args[1:3]))
    if isinstance(ty, ir.VectorType):
        lo, hi = _splat(builder, ty, lo), _splat(builder, ty, hi)
    return builder.and_(builder.fcmp_ordered(">=", args[0], lo), builder.fcmp_ordered("<=", args[0], hi))


@intrinsic
def all_between(typingctx, x, lo, hi):
    """Whether ``lo <= x <= hi`` (in every lane of a ``Vec``; false where ``x`` is NaN)."""
    if not (isinstance(x, (types.Float, Vec)) and isinstance(lo, types.Float) and isinstance(hi, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        inside = _between(context, builder, signature, args)
        if not isinstance(inside.type, ir.VectorType):
            return inside
        bits = builder.bitcast(inside, ir.IntType(LANES))
        return builder.icmp_unsigned("==", bits, ir.Constant(ir.IntType(LANES), (1 << LANES) - 1))
    return types.boolean(x, lo, hi), codegen


@intrinsic
def where_between(typingctx, x, lo, hi, inside, outside):
    """``inside`` where ``lo <= x <= hi``, else ``outside`` (lane by lane for a ``Vec``)."""
    if not (isinstance(x, (types.Float, Vec)) and inside == x and outside == x):
        return None

    def codegen(context, builder, signature, args):
        return builder.select(_between(context, builder, signature, args[:3]), args[3], args[4])
    return x(x, lo, hi, inside, outside), codegen


def holds_float64(arr):
    """Whether ``arr`` holds float64 numbers; in compiled code a constant, so LLVM drops the branch it rules out."""
    return arr.dtype == np.float64


@overload(holds_float64, inline="always")
def _holds_float64(arr):
    answer = isinstance(arr, types.Array) and arr.dtype == types.float64
    return lambda arr: answer
