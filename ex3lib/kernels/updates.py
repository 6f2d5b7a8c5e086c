r"""Optimiser updates over the flat parameter vector: each update rule once, element by element.

With :math:`\bar g` the mean mini-batch gradient and :math:`\eta` the
learning rate (the equations and their sources are in
:mod:`ex3lib.optimisers`):

* SGD        :math:`w \leftarrow w - \eta \bar g`
* momentum   :math:`v \leftarrow \alpha v + \eta \bar g`, :math:`w \leftarrow w - v`
  (Nesterov: :math:`w \leftarrow w - (\alpha v + \eta \bar g)`)
* AdaGrad    :math:`G \leftarrow G + \bar g^2`, :math:`w \leftarrow w - \eta \bar g / \sqrt{G + \epsilon}`
* RMSProp    :math:`G \leftarrow \beta_2 G + (1 - \beta_2) \bar g^2`, the same step
* Adam       :math:`\mu \leftarrow \beta_1 \mu + (1 - \beta_1) \bar g`,
  :math:`\nu \leftarrow \beta_2 \nu + (1 - \beta_2) \bar g^2`,
  :math:`w \leftarrow w - \eta \frac{\mu / c_1}{\sqrt{\nu / c_2} + \epsilon}`,
  :math:`c_i = 1 - \beta_i^t`

Each rule is one inlined function of a single weight and its state
(:func:`sgd_rule`, :func:`momentum_rule`, :func:`nesterov_rule`, :func:`adagrad_rule`,
:func:`rmsprop_rule`, :func:`adam_rule`). The same functions take a
:class:`~ex3lib.kernels.simd.Vec` of eight weights and states (every
operation is then lane by lane, the same bits), and the loops below apply
them to ranges of the flat parameters eight at a time (:func:`load` widens a
float32 array's vector, so every rule computes in float64), as the momentum
tile :func:`~ex3lib.kernels.tiles.momentum_tile_step` does. AdaGrad and
RMSProp divide by :math:`\sqrt{G + \epsilon}` through :func:`inv_sqrt`. They
must match :func:`ex3lib.reference.sgd`, :func:`~ex3lib.reference.adagrad`,
:func:`~ex3lib.reference.rmsprop` and :func:`~ex3lib.reference.adam` step by
step (to 1e-12, tested). The kernels
receive the optimiser as an ``OptArrays`` named tuple
(:meth:`ex3lib.optimisers.Optimiser.arrays`).

A decaying state that falls below the smallest normal float64 is set to 0
(:func:`flush`; why, at :data:`SMALLEST_NORMAL`), in the reference too.

Where a rule rounds a product and a sum once, it says so with an explicit
:func:`~ex3lib.kernels.simd.fma`, and no other product here feeds a sum, so
the compiler has nothing to fuse on its own: the bits of a step do not depend
on how the loops around a rule are written, nor on its caller (Numba compiles
a function called from a ``fastmath`` one with the caller's flags, and the
first compilation of a signature is the one every caller gets, and the one
cached). The update loops use
``error_model="numpy"``: a division by zero gives inf/nan (which the training
loop reports as divergence) instead of a Python exception.
"""

from collections import namedtuple

from numba import njit

from .simd import (LANES, all_between, fma, holds_float64, rsqrt_guess, sqrt, vload, vstore, where_between, widen,
                   zero_if_below)

SGD, MOMENTUM, NESTEROV, ADAGRAD, RMSPROP, ADAM = 0, 1, 2, 3, 4, 5

#: Rules whose step is an exact no-op where the gradient is exactly 0, so rows
#: of a weight matrix that no sample of the batch touched can be skipped
#: without changing a bit of the result.
SPARSE_SAFE = (SGD, ADAGRAD)

#: Rules whose zero-gradient step is a fixed linear map, so rows of a weight
#: matrix whose input was 0 (a pixel that is off, a unit whose ReLU is off) can
#: be brought up to date lazily, when next read (:func:`catch_up_rows`).
LAZY_ROWS = (MOMENTUM, NESTEROV, RMSPROP)


@njit(cache=True, inline="always")
def is_momentum(kind):
    """Whether the rule ``kind`` is momentum or Nesterov momentum (which step inside the gradient tile)."""
    return kind == MOMENTUM or kind == NESTEROV


#: The smallest normal float64. A decaying state (momentum's ``v``, RMSProp's ``G``, Adam's ``μ`` and ``ν``)
#: whose gradient stays 0 (a dead unit, a pixel that is never on) shrinks by its factor every step
#: until it is subnormal, and there rounding holds it at the smallest subnormal, 2⁻¹⁰⁷⁴, for ever
#: (0.9 × 2⁻¹⁰⁷⁴ rounds back up), each step one more operation on a subnormal number, many times
#: slower than on a normal one: RMSProp at η = 0.01, m = 10 took 3.9 s for its first epoch and
#: 19-21 s for each later one. :func:`flush` sets such a state to 0, which is where the decay goes;
#: no weight moves by a subnormal amount unless it is itself below about 1e-292. Float32 states
#: are never below this float64 bound while non-zero, so they are left as they are.
SMALLEST_NORMAL = 2.2250738585072014e-308


@njit(cache=True, inline="always")
def flush(x):
    """``x``, or 0 where ``x`` is a non-zero float64 below the smallest normal (:data:`SMALLEST_NORMAL`).

    NaN and ±0 are kept, and so is ``x``'s type; a ``Vec`` lane by lane.
    """
    return zero_if_below(x, SMALLEST_NORMAL)


#: Where the float32 first guess of :func:`inv_sqrt` holds: arguments (and results)
#: well inside the normal float32 range. Elsewhere (and for NaN) a lane takes the exact IEEE operations.
GUESS_LOW, GUESS_HIGH = 2.0**-125, 2.0**125


@njit(cache=True, inline="always")
def inv_sqrt(x):
    """``1 / sqrt(x)`` within 4e-14 relative, without a float64 square root or division (a float or a ``Vec``).

    A first guess ``y`` in float32 arithmetic (:func:`~ex3lib.kernels.simd.rsqrt_guess`,
    within 1.5e-7) and one Newton step in float64, ``y + y (1 - x y²) / 2``,
    which squares its relative error. AdaGrad and RMSProp take one per weight
    and step; the float64 square root and division it replaces cost about
    twice as much. Outside ``[GUESS_LOW, GUESS_HIGH]`` a lane is the exact
    ``1 / sqrt(x)``, so the result of each lane depends on its own ``x`` only
    (tested against ``1 / np.sqrt``).
    """
    y = rsqrt_guess(x)
    y = fma(0.5 * y, fma(-(x * y), y, 1.0), y)
    if all_between(x, GUESS_LOW, GUESS_HIGH):
        return y
    return where_between(x, GUESS_LOW, GUESS_HIGH, y, 1.0 / sqrt(x))


@njit(cache=True, inline="always")
def sgd_rule(w, g, learning_rate):
    """``w - η g`` (report Eq. 4)."""
    return fma(-learning_rate, g, w)


@njit(cache=True, inline="always")
def momentum_rule(w, v, lr_g, momentum):
    """Classical momentum: ``v = α v + η g``, ``w - v``; ``lr_g`` is ``η g``. Returns ``(w, v)``."""
    v = flush(fma(momentum, v, lr_g))
    return w - v, v


@njit(cache=True, inline="always")
def nesterov_rule(w, v, lr_g, momentum):
    """Nesterov momentum (Sutskever et al.'s form): ``v = α v + η g``, ``w - (α v + η g)``. Returns ``(w, v)``."""
    v = flush(fma(momentum, v, lr_g))
    return w - fma(momentum, v, lr_g), v


@njit(cache=True, inline="always")
def momentum_coast(w, v, momentum, nesterov):
    """:func:`momentum_rule` or :func:`nesterov_rule` with no gradient: ``v = α v``, then ``w - v`` or ``w - α v``.

    The step of a weight that no sample of the batch touched (the rule with
    ``g = 0``, written out so that no ``+ 0`` is computed).
    """
    v = flush(momentum * v)
    if nesterov:
        return fma(-momentum, v, w), v
    return w - v, v


@njit(cache=True, inline="always")
def adagrad_rule(w, sum_sq, g, learning_rate, eps):
    """``G = G + g²``, ``w - η g / sqrt(G + ε)`` (report Algorithm 2); returns ``(w, G)``."""
    sum_sq = fma(g, g, sum_sq)
    return fma(-(learning_rate * inv_sqrt(sum_sq + eps)), g, w), sum_sq


@njit(cache=True, inline="always")
def rmsprop_rule(w, sum_sq, g, learning_rate, b2, eps):
    """``G = β₂ G + (1 - β₂) g²``, ``w - η g / sqrt(G + ε)``; returns ``(w, G)``."""
    sum_sq = flush(fma(b2, sum_sq, (1.0 - b2) * g * g))
    return fma(-(learning_rate * inv_sqrt(sum_sq + eps)), g, w), sum_sq


@njit(cache=True, inline="always")
def adam_rule(w, mu, nu, g, lr_c1, b1, b2, eps, inv_c2):
    """Adam with bias corrections: ``lr_c1 = η / (1 - β₁^t)``, ``inv_c2 = 1 / (1 - β₂^t)``; returns ``(w, μ, ν)``."""
    mu = flush(fma(b1, mu, (1.0 - b1) * g))
    nu = flush(fma(b2, nu, (1.0 - b2) * g * g))
    return w - lr_c1 * mu / (sqrt(nu * inv_c2) + eps), mu, nu


@njit(cache=True, error_model="numpy")
def bias_corrections(b1, b2, step):
    """Adam's bias corrections ``(1 - b1**step, 1 - b2**step)`` for update number ``step`` (from 1)."""
    return 1.0 - b1**step, 1.0 - b2**step


#: What back-propagation does with a row's gradient: keep it (``GRADIENT``,
#: for :func:`~ex3lib.kernels.evaluation.loss_and_grad`), add it scaled by
#: ``-η/m`` to the weights (``SGD_FUSED``, plain SGD), or apply the
#: optimiser's rule to the row (``RULE``).
GRADIENT, SGD_FUSED, RULE = 0, 1, 2

Stepping = namedtuple("Stepping", "mode opt params scale corrections count")
Stepping.__doc__ = """How back-propagation applies a batch's gradient (see ``kernels.backward.backward_batch``).

``mode`` is ``GRADIENT``, ``SGD_FUSED`` or ``RULE``; ``opt`` is the optimiser
(``OptArrays``), ``params`` the flat parameters, ``scale`` turns a summed
gradient into the step's: ``η / m`` for ``SGD_FUSED``, the mean's ``1 / m``
for ``RULE``; ``corrections`` are Adam's bias corrections and ``count`` the
update count after this step.
"""


@njit(cache=True, inline="always")
def load(arr, i, n):
    """Elements ``i .. i + n - 1`` (at most ``LANES``) of ``arr`` as a float64 ``Vec``: the rules compute in float64."""
    return widen(vload(arr, i, n))


@njit(cache=True, error_model="numpy")
def step_rows(how, base, n_cols, rows, n_rows, grads, scales, shared):
    """The rule's step of rows ``rows[:n_rows]`` of a weight matrix at ``base`` in the flat parameters.

    Row ``rows[q]``'s gradient is ``grads[q] * how.scale`` (a tile's sums),
    or with ``shared`` ``grads[0] * scales[q] * how.scale`` (on-line
    learning: the layer's error times the row's input). Each rule has one
    loop here, chosen once per call, over ``LANES`` weights at a time: the
    optimiser's arrays are taken out of ``how`` once, and a row costs only
    its pass over weights and state.
    """
    opt, params, scale = how.opt, how.params, how.scale
    kind, lr = opt.kind, opt.learning_rate
    velocity, sum_sq, mu_all, nu_all = opt.velocity, opt.sum_sq, opt.mu, opt.nu
    alpha, b1, b2, eps = opt.momentum, opt.b1, opt.b2, opt.eps
    c1, c2 = how.corrections
    lr_c1, inv_c2 = lr / c1, 1.0 / c2
    for q in range(n_rows):
        lo = base + rows[q] * n_cols
        g = grads[0] if shared else grads[q]
        s = scales[q] * scale if shared else scale
        if kind == SGD:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                vstore(params, k, n, sgd_rule(load(params, k, n), load(g, i, n) * s, lr))
        elif kind == MOMENTUM:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, v = momentum_rule(load(params, k, n), load(velocity, k, n), lr * (load(g, i, n) * s), alpha)
                vstore(params, k, n, w)
                vstore(velocity, k, n, v)
        elif kind == NESTEROV:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, v = nesterov_rule(load(params, k, n), load(velocity, k, n), lr * (load(g, i, n) * s), alpha)
                vstore(params, k, n, w)
                vstore(velocity, k, n, v)
        elif kind == ADAGRAD:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, G = adagrad_rule(load(params, k, n), load(sum_sq, k, n), load(g, i, n) * s, lr, eps)
                vstore(params, k, n, w)
                vstore(sum_sq, k, n, G)
        elif kind == RMSPROP:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, G = rmsprop_rule(load(params, k, n), load(sum_sq, k, n), load(g, i, n) * s, lr, b2, eps)
                vstore(params, k, n, w)
                vstore(sum_sq, k, n, G)
        else:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, m1, m2 = adam_rule(load(params, k, n), load(mu_all, k, n), load(nu_all, k, n),
                                      load(g, i, n) * s, lr_c1, b1, b2, eps, inv_c2)
                vstore(params, k, n, w)
                vstore(mu_all, k, n, m1)
                vstore(nu_all, k, n, m2)


@njit(cache=True, inline="always")
def decays_in_step(opt):
    """Whether on-line steps of ``opt`` bring deferred rows up to date themselves (:func:`rmsprop_rows_online`).

    RMSProp's, with lazy rows and float64 accumulators: its forward pass does
    not read them, so the step can decay them in its own pass.
    """
    return opt.kind == RMSPROP and opt.lazy_rows and holds_float64(opt.sum_sq)


@njit(cache=True, error_model="numpy")
def rmsprop_rows_online(how, base, n_cols, rows, n_rows, error, inputs, updated_at):
    """:func:`step_rows` for on-line RMSProp, whose rows may be behind: each decays its accumulator first.

    Row ``rows[q]``'s gradient is ``error * inputs[q]`` (one sample). A row
    whose input was 0 for the last ``k`` steps (``updated_at``, see
    :func:`catch_up_rows`) multiplies its accumulator by ``β₂^k`` in the same
    pass, just before the rule: the operations of :func:`catch_up_rows`
    followed by :func:`step_rows`, without writing the accumulator in between
    (it must be float64, where writing and reading back rounds nothing). The
    forward pass does not read the accumulators, so they need not be up to
    date before it; one pass over a row instead of two.
    """
    opt, params, scale = how.opt, how.params, how.scale
    lr, b2, eps, sum_sq = opt.learning_rate, opt.b2, opt.eps, opt.sum_sq
    for q in range(n_rows):
        lo = base + rows[q] * n_cols
        s = inputs[q] * scale
        behind = how.count - 1 - updated_at[rows[q]]
        if behind > 0:
            decay = b2**behind
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                G = flush(load(sum_sq, k, n) * decay)
                w, G = rmsprop_rule(load(params, k, n), G, load(error, i, n) * s, lr, b2, eps)
                vstore(params, k, n, w)
                vstore(sum_sq, k, n, G)
        else:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, G = rmsprop_rule(load(params, k, n), load(sum_sq, k, n), load(error, i, n) * s, lr, b2, eps)
                vstore(params, k, n, w)
                vstore(sum_sq, k, n, G)


@njit(cache=True, error_model="numpy")
def coast_rows_except(how, base, n_cols, n_rows, used, n_used, seen):
    """The step of every row of a matrix not in ``used[:n_used]``, whose gradient is 0 (the rule with ``g = 0``).

    SGD and AdaGrad leave such rows unchanged; momentum coasts
    (:func:`momentum_coast`), RMSProp's accumulator decays while its weight
    stays, and Adam moves by its first moment. ``seen`` is scratch, all 0
    before and after.
    """
    opt, params = how.opt, how.params
    kind = opt.kind
    if kind == SGD or kind == ADAGRAD:
        return
    velocity, sum_sq, mu_all, nu_all = opt.velocity, opt.sum_sq, opt.mu, opt.nu
    alpha, b1, b2, eps = opt.momentum, opt.b1, opt.b2, opt.eps
    c1, c2 = how.corrections
    lr_c1, inv_c2 = opt.learning_rate / c1, 1.0 / c2
    nesterov = kind == NESTEROV
    for t in range(n_used):
        seen[used[t]] = 1
    for j in range(n_rows):
        if seen[j]:
            continue
        lo = base + j * n_cols
        if kind == MOMENTUM or kind == NESTEROV:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, v = momentum_coast(load(params, k, n), load(velocity, k, n), alpha, nesterov)
                vstore(params, k, n, w)
                vstore(velocity, k, n, v)
        elif kind == RMSPROP:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                vstore(sum_sq, k, n, flush(b2 * load(sum_sq, k, n)))
        else:
            for i in range(0, n_cols, LANES):
                n, k = n_cols - i, lo + i
                w, m1, m2 = adam_rule(load(params, k, n), load(mu_all, k, n), load(nu_all, k, n), 0.0, lr_c1,
                                      b1, b2, eps, inv_c2)
                vstore(params, k, n, w)
                vstore(mu_all, k, n, m1)
                vstore(nu_all, k, n, m2)
    for t in range(n_used):
        seen[used[t]] = 0


@njit(cache=True, error_model="numpy")
def skip_rows_without_gradient(how, base, n_cols, n_rows, used, n_used, updated_at, seen):
    """What the rows of a matrix other than ``used[:n_used]`` (whose gradient is 0) get from this step.

    Nothing for SGD and AdaGrad (their zero-gradient step changes no bit);
    for the rules of :data:`LAZY_ROWS` the step is deferred: the rows that
    were stepped are marked up to date in ``updated_at`` and the others catch
    up when next read (:func:`catch_up_rows`); Adam's rows take their
    zero-gradient step now (:func:`coast_rows_except`, with ``seen`` as its
    scratch).
    """
    opt = how.opt
    if opt.lazy_rows:
        for t in range(n_used):
            updated_at[used[t]] = how.count
    elif not opt.sparse_safe:
        coast_rows_except(how, base, n_cols, n_rows, used, n_used, seen)


@njit(cache=True, error_model="numpy")
def catch_up_rows(opt, params, base, n_out, rows, n_rows, updated_at, step):
    """Apply the steps that rows skipped while their input was 0, in closed form.

    A row whose input (a pixel, a hidden unit) is 0 in every sample of a
    batch has a zero gradient; for momentum, Nesterov and RMSProp the step is
    then a fixed linear map of weight and state, so ``k`` skipped steps can be
    applied at once before the row is next read: momentum ``w -= v * S_k``
    (one fused multiply-add), ``v *= α^k`` with ``S_k = α (1 - α^k) / (1 - α)``;
    Nesterov ``w -= v * α S_k``, ``v *= α^k``; RMSProp
    ``G *= β₂^k`` (the weight does not move). This equals taking the ``k``
    steps one by one (:func:`momentum_rule`, :func:`nesterov_rule`,
    :func:`rmsprop_rule` with ``g = 0``), up to rounding. ``updated_at[j]`` is
    the update count row ``j`` is up to date with; afterwards it is ``step``.
    :func:`rmsprop_rows_online` can take RMSProp's in its own pass instead.
    """
    a = opt.momentum
    for q in range(n_rows):
        j = rows[q]
        k = step - updated_at[j]
        if k <= 0:
            continue
        updated_at[j] = step
        lo = base + j * n_out
        if opt.kind == RMSPROP:
            decay = opt.b2**k
            for i in range(0, n_out, LANES):
                vstore(opt.sum_sq, lo + i, n_out - i, flush(load(opt.sum_sq, lo + i, n_out - i) * decay))
            continue
        ak = a**k
        shift = a * (1.0 - ak) / (1.0 - a)
        if opt.kind == NESTEROV:
            shift *= a
        for i in range(0, n_out, LANES):
            n, at = n_out - i, lo + i
            v = load(opt.velocity, at, n)
            vstore(params, at, n, fma(-v, shift, load(params, at, n)))
            vstore(opt.velocity, at, n, flush(v * ak))
