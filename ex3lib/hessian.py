r"""Curvature of the training loss: Hessian-vector products, the top eigenvalue, ε-sharpness, loss along a line.

These are the measurements of Keskar et al. (2017), "On large-batch training
for deep learning: generalization gap and sharp minima" (ICLR), for an
:class:`~ex3lib.network.MLP`. For the mean loss :math:`f(w)` over a fixed set
of samples :math:`(x, y)`, with gradient :math:`g(w) = \nabla f(w)` from
back-propagation:

* :func:`hvp`, the Hessian-vector product :math:`H v`, exactly by Pearlmutter's
  R-operator (the derivative :math:`\frac{d}{dt} g(w + t v)` at :math:`t = 0`,
  carried through the forward and backward passes), or by central differences
  of the gradient, :math:`\lVert v \rVert \, (g(w + h \hat v) - g(w - h \hat v)) / 2h`;
* :func:`top_eigenvalue`, the largest eigenvalue :math:`\lambda_{max}` of
  :math:`H` and its eigenvector, by the Lanczos method on those products;
* :func:`epsilon_sharpness`, Keskar et al.'s Eq. (4) with :math:`A = I`,
  :math:`\phi = 100 \, (\max_{z \in C_\epsilon} f(w + z) - f(w)) / (1 + f(w))`
  over the box :math:`C_\epsilon = \{z : |z_i| \le \epsilon (|w_i| + 1)\}`;
* :func:`line_losses`, the loss and accuracy of :math:`(1 - \alpha) w_a + \alpha w_b`
  (their Fig. 3, after Goodfellow et al. 2015).

The network is ReLU, so :math:`f` is only piecewise twice differentiable: each
set of units that are on, for every sample, is a piece on which :math:`f` is
smooth, and almost every :math:`w` lies inside one. :math:`H` is the Hessian of
that piece, the one automatic differentiation computes (ReLU'' = 0). A
difference step that carries a sample's pre-activation across 0 adds the jump
of the gradient there, divided by :math:`2h`, to the product, and a few are
enough to spoil it: on the first 5,000 MNIST training images, the report's
network at initialisation, the default step along a random direction flips 13
of the 2.5 million hidden pre-activations, and the difference product is 40 to
60 times the size of the exact one (two random directions; after one epoch of
training it is still 13 % off). So differences are a check on small
problems, not the tool for MNIST.

Every function reads the network's parameters and leaves them as they were:
the perturbed parameters live in a private copy of the network.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> net = MLP((6, 5, 4, 3), bias=True, seed=0)
>>> x, y = rng.random((20, 6)), rng.integers(0, 3, 20)
>>> top = top_eigenvalue(net, x, y, tol=1e-6)
>>> bool(top.converged and top.value > 0)
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from . import kernels
from ._validate import check_choice, check_float, check_int
from .network import MLP
from .optimisers import make_optimiser

#: Machine epsilon of float64; the default difference step scales with its cube root (see :func:`hvp`).
EPS = float(np.finfo(np.float64).eps)
#: How :func:`hvp` computes the product: Pearlmutter's R-operator, or central differences of the gradient.
METHODS = ("exact", "differences")


@dataclass(frozen=True)
class TopEigen:
    """The largest eigenvalue of the Hessian found by :func:`top_eigenvalue`.

    Attributes
    ----------
    value : float
        λ_max, the Rayleigh quotient ``vector @ H @ vector`` (nan if the
        Lanczos method did not converge within its products).
    vector : ndarray, shape (n_params,)
        Its unit eigenvector, laid out like ``net.params`` (the sign is
        arbitrary); the start vector if there was no convergence.
    residual : float
        ``||H v - λ v|| / |λ|`` at ``vector``, from one more product: some
        eigenvalue of H lies within ``residual * |value|`` of ``value`` (H is
        symmetric); inf if there was no convergence.
    iterations : int
        Hessian-vector products used, that one included.
    converged : bool
        Whether the Lanczos method met its tolerance within the allowed products.
    """

    value: float
    vector: np.ndarray
    residual: float
    iterations: int
    converged: bool


@dataclass(frozen=True)
class Sharpness:
    """The ε-sharpness found by :func:`epsilon_sharpness`.

    Attributes
    ----------
    value : float
        φ of Keskar et al.'s Eq. (4), in percent: ``100 * (max_loss - loss) / (1 + loss)``.
        A lower bound on the true φ (the maximum is searched, not proven).
    epsilon : float
        ε, the box's half-width relative to ``|w_i| + 1``.
    loss : float
        f(w), the mean loss at the network's parameters.
    max_loss : float
        The largest f(w + z) found in the box.
    perturbation : ndarray, shape (n_params,)
        The z that gave it, laid out like ``net.params``.
    losses : ndarray, shape (steps + 1,)
        f(w + z_k) at every iterate, from z_0 = 0.
    """

    value: float
    epsilon: float
    loss: float
    max_loss: float
    perturbation: np.ndarray
    losses: np.ndarray


@dataclass(frozen=True)
class LineLosses:
    """Loss and accuracy along the line between two networks (:func:`line_losses`).

    ``loss[k]`` and ``accuracy[k]`` are those of ``(1 - alphas[k]) w_a + alphas[k] w_b``.
    """

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray


class _LossGrad:
    """f(w) and g(w) over fixed samples, at any parameter vector w, on a private copy of ``net``.

    The samples are converted to the kernels' CSR form once and the scratch
    buffers are allocated once, as a training run does; each call is then one
    forward and backward pass. ``params`` holds the network's own parameters.
    """

    def __init__(self, net, x, y):
        _check_net("net", net)
        _require_labels(y)
        self._net = net.copy()
        self._data = self._net.sparse(x, y)
        n = self._data.y.shape[0]
        self._rows = np.arange(n, dtype=np.int64)
        self._work = self._net.workspace(n)
        sgd = make_optimiser("sgd")
        # The kernel takes an optimiser's arrays but takes no step with them.
        self._no_step = sgd.arrays(sgd.init(self._net.params), 1.0)
        self.params = net.params.copy()

    def __call__(self, w):
        """``(f(w), g(w))``: the mean loss and its gradient, flat like ``params`` (a new array)."""
        self._net.params[...] = w
        # The kernel adds every sample's gradient into work.grad, which only an
        # optimiser's step would zero.
        self._work.grad[...] = 0.0
        loss = kernels.loss_and_grad(self._net.arrays(), self._no_step, self._work, self._data, self._rows)
        return float(loss), self._work.grad.copy()


def flat_grad(net: MLP, x, y):
    r"""The mean loss over ``(x, y)`` and its gradient as one vector laid out like ``net.params``.

    .. math:: f(w) = \frac1n \sum_i -\log P_{y_i}(x_i; w), \qquad g(w) = \nabla_w f(w)

    The same numbers, bit for bit, as :meth:`MLP.loss_and_grad`, whose per-layer
    arrays are views of one flat gradient: weights layer by layer, then biases.

    Parameters
    ----------
    net : MLP
    x : ndarray, shape (n, fan_in)
        Inputs (pixels in [0, 1]).
    y : ndarray of int, shape (n,)
        Their labels.

    Returns
    -------
    loss : float
    grad : ndarray, shape (n_params,), of the network's dtype

    Examples
    --------
    >>> net = MLP((6, 5, 3), seed=0)
    >>> loss, g = flat_grad(net, np.full((2, 6), 0.5), np.array([0, 2]))
    >>> g.shape == net.params.shape
    True
    """
    oracle = _LossGrad(net, x, y)
    return oracle(oracle.params)


def hvp(net: MLP, x, y, v, *, method="exact", h=None):
    r"""The product of the Hessian of the mean loss over ``(x, y)`` with ``v``.

    With ``method="exact"``, Pearlmutter's (1994) R-operator
    :math:`\mathcal R\{\cdot\} = \frac{d}{dt} \cdot \big|_{w + t v,\, t = 0}` applied to
    the forward and backward passes of the piece :math:`w` lies in (the ReLU
    masks :math:`m_l = [a_l > 0]` fixed): with :math:`V_l, c_l` the blocks of
    :math:`v` that sit where :math:`W_l, b_l` sit in ``params``,

    .. math::
        \mathcal R a_l &= \mathcal R h_{l-1} W_l + h_{l-1} V_l + c_l, \quad
        \mathcal R h_l = m_l \odot \mathcal R a_l, \quad \mathcal R h_0 = 0 \\
        \mathcal R \delta_L &= P \odot (\mathcal R z - \textstyle\sum_k P_k \mathcal R z_k) / n, \quad
        \mathcal R \delta_{l-1} = (\mathcal R \delta_l W_l^\top + \delta_l V_l^\top) \odot m_{l-1} \\
        (H v)_{W_l} &= \mathcal R h_{l-1}^\top \delta_l + h_{l-1}^\top \mathcal R \delta_l, \quad
        (H v)_{b_l} = \textstyle\sum_s \mathcal R \delta_{l,s}

    (:math:`\delta_l` is back-propagation's error at layer :math:`l`'s
    pre-activation, :math:`P` the softmax): the Hessian that automatic
    differentiation gives, exact up to round-off, at the cost of about two
    gradients. With ``method="differences"``, central differences of the
    gradient of :func:`flat_grad` along :math:`\hat v = v / \lVert v \rVert`,

    .. math:: H v \approx \lVert v \rVert \, \frac{g(w + h \hat v) - g(w - h \hat v)}{2h},

    whose error is :math:`O(h^2)` from truncation plus about
    :math:`\epsilon_{mach} \lVert g \rVert / h` from round-off (the default
    :math:`h = \epsilon_{mach}^{1/3} (1 + \lVert w \rVert)` balances the two), plus the
    jump of the gradient at every pre-activation the step carries across 0,
    divided by :math:`2h`: wrong by far on a large data set (see the module's
    docstring), right on a small one whose steps flip no unit.

    Parameters
    ----------
    net : MLP
        float64 for ``method="differences"`` (differences of a float32 gradient
        are round-off); a float32 one's product is computed in float64.
    x : ndarray, shape (n, fan_in)
    y : ndarray of int, shape (n,)
    v : ndarray, shape (n_params,)
        Real, finite, laid out like ``net.params``.
    method : {"exact", "differences"}
    h : float > 0, optional
        ``method="differences"`` only: the step along :math:`\hat v`, in the units of the parameters.

    Returns
    -------
    ndarray, shape (n_params,), float64
        :math:`H v` (zeros for ``v = 0``).

    Examples
    --------
    >>> net = MLP((6, 5, 3), seed=0)
    >>> x, y = np.random.default_rng(0).random((10, 6)), np.arange(10) % 3
    >>> v = np.ones(net.n_params)
    >>> exact, differences = hvp(net, x, y, v), hvp(net, x, y, v, method="differences")
    >>> bool(np.allclose(exact, differences, rtol=1e-7, atol=1e-9))
    True
    """
    _check_net("net", net)
    v = _check_vector("v", v, net.n_params)
    return _operator("hvp", net, x, y, method, h)(v)


def _operator(function, net, x, y, method, h):
    """``v -> H v`` at ``net``'s parameters over ``(x, y)`` by ``method``, arguments checked."""
    _check_net("net", net)
    check_choice("method", method, METHODS)
    if method == "exact":
        if h is not None:
            raise ValueError(f"h applies to method 'differences' only, got h={h!r} with method 'exact'")
        return _PieceHessian(net, x, y)
    if net.dtype != np.float64:
        raise ValueError(f"net must be a float64 network for {function} with method 'differences': "
                         f"differences of a {net.dtype} gradient are round-off (use method 'exact', or "
                         f"MLP(..., dtype=np.float64)), got {net.dtype}")
    oracle = _LossGrad(net, x, y)
    step = _step(oracle.params, h)
    return lambda v: _product(oracle, v, step)


class _PieceHessian:
    """``v -> H v`` by the R-operator (see :func:`hvp`), in float64.

    The forward and backward passes at w do not depend on v, so they run once,
    here; each product is then one R-forward and one R-backward pass (in
    memory: every layer's inputs and errors for every sample, about
    8 n (fan_in + 2 * hidden units + 2 * classes) bytes).
    """

    def __init__(self, net, x, y):
        _require_labels(y)
        labels = net.sparse(x, y).y  # the network's own checks of x and y
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0]
        self.shapes = [w.shape for w in net.weights]
        self.has_bias = net.bias
        self.weights = [w.astype(np.float64) for w in net.weights]
        biases = [b.astype(np.float64) for b in net.biases] if net.bias else [0.0] * len(self.weights)
        # inputs[l] is h_l, the input of layer l (h_0 = x); a unit is on where it is > 0.
        self.inputs = [x]
        for w, b in zip(self.weights[:-1], biases):
            self.inputs.append(np.maximum(self.inputs[-1] @ w + b, 0.0))
        z = self.inputs[-1] @ self.weights[-1] + biases[-1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        self.softmax = e / e.sum(axis=1, keepdims=True)
        self.n = n
        delta = self.softmax.copy()
        delta[np.arange(n), labels] -= 1.0
        delta /= n
        self.deltas = [delta]
        for l in range(len(self.weights) - 1, 0, -1):
            delta = (delta @ self.weights[l].T) * (self.inputs[l] > 0)
            self.deltas.insert(0, delta)

    def __call__(self, v):
        V, c = self._blocks(v)
        L = len(self.weights)
        r_inputs = [None]  # R h_0 = 0: the inputs do not depend on w
        for l in range(L):
            r_a = self.inputs[l] @ V[l] + c[l]
            if l:
                r_a += r_inputs[l] @ self.weights[l]
            if l < L - 1:
                r_inputs.append(r_a * (self.inputs[l + 1] > 0))
        p = self.softmax
        r_delta = p * (r_a - (p * r_a).sum(axis=1, keepdims=True)) / self.n
        hv_w, hv_b = [None] * L, [None] * L
        for l in range(L - 1, -1, -1):
            hv_w[l] = self.inputs[l].T @ r_delta
            if l:
                hv_w[l] += r_inputs[l].T @ self.deltas[l]
            hv_b[l] = r_delta.sum(axis=0)
            if l:
                r_delta = (r_delta @ self.weights[l].T + self.deltas[l] @ V[l].T) * (self.inputs[l] > 0)
        blocks = hv_w + (hv_b if self.has_bias else [])
        return np.concatenate([b.ravel() for b in blocks])

    def _blocks(self, v):
        """The weight blocks V_l and bias blocks c_l of ``v``, laid out as ``params`` (c_l = 0 without biases)."""
        sizes = [n * m for n, m in self.shapes]
        ends = np.cumsum(sizes)
        V = [v[e - s:e].reshape(shape) for s, e, shape in zip(sizes, ends, self.shapes)]
        if not self.has_bias:
            return V, [0.0] * len(V)
        bias_ends = ends[-1] + np.cumsum([m for _, m in self.shapes])
        c = [v[e - m:e] for (_, m), e in zip(self.shapes, bias_ends)]
        return V, c


def _step(w, h):
    """The difference step: ``h`` checked, or the default of :func:`hvp`."""
    if h is not None:
        return check_float("h", h, low=0.0, low_open=True)
    # Central differences: truncation O(h^2) against round-off O(eps / h) is
    # balanced at h ~ eps^(1/3) times the scale of the variables, ||w|| (1 +
    # for a network near 0).
    return EPS ** (1.0 / 3.0) * (1.0 + float(np.linalg.norm(w)))


def _product(oracle, v, h):
    """H v at ``oracle.params`` by central differences with step ``h`` along v / ||v||."""
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        return np.zeros_like(oracle.params)
    unit = v / norm
    w = oracle.params
    _, up = oracle(w + h * unit)
    _, down = oracle(w - h * unit)
    return (up - down) * (norm / (2.0 * h))


def top_eigenvalue(net: MLP, x, y, *, iterations=200, tol=1e-3, seed=0, method="exact", h=None) -> TopEigen:
    r"""The largest eigenvalue of the Hessian of the mean loss over ``(x, y)`` and its eigenvector.

    The Lanczos method on the products of :func:`hvp`: ARPACK's implicitly
    restarted Lanczos through :func:`scipy.sparse.linalg.eigsh` (the largest
    *algebraic* eigenvalue, ``which="LA"``, so a negative eigenvalue of larger
    magnitude, which H can have at initialisation and at the end of training,
    is not the answer), with a Krylov space of :data:`LANCZOS_VECTORS`
    vectors, from a random unit start vector (``seed``), until ARPACK's
    estimate of the relative residual

    .. math:: r = \frac{\lVert H u - \lambda u \rVert}{|\lambda|}

    is at most ``tol``; then one more product measures :math:`r` at the
    result. Since H is symmetric, some eigenvalue lies within :math:`r |\lambda|`
    of :math:`\lambda`. On the protocol chapter's 15 networks (5,000 images,
    tol = 1e-3) it took 12 to 22 products, that one included, and left
    residuals of 2e-8 to 4e-4; power iteration, which it replaced, took 9 to
    171 products to reach 1e-3.

    Parameters
    ----------
    net : MLP
    x : ndarray, shape (n, fan_in)
    y : ndarray of int, shape (n,)
    iterations : int >= 1
        The most Hessian-vector products; past them the result is not converged.
    tol : float > 0
        The relative residual :math:`r` to stop at.
    seed : int >= 0
        Seed of the start vector; a seed gives the same result every time.
    method : {"exact", "differences"}
        How the products are computed (see :func:`hvp`; differences only on small problems).
    h : float > 0, optional
        The difference step of ``method="differences"``.

    Returns
    -------
    TopEigen

    Examples
    --------
    >>> net = MLP((6, 5, 3), bias=True, seed=0)
    >>> x, y = np.random.default_rng(0).random((10, 6)), np.arange(10) % 3
    >>> top = top_eigenvalue(net, x, y, tol=1e-6)
    >>> bool(top.converged), top.vector.shape
    (True, (53,))
    """
    iterations = check_int("iterations", iterations, 1)
    tol = check_float("tol", tol, low=0.0, low_open=True)
    seed = check_int("seed", seed, 0)
    product = _operator("top_eigenvalue", net, x, y, method, h)
    return _top_eigen(product, net.n_params, iterations, tol, seed)


#: Lanczos vectors ARPACK keeps (its ``ncv``): a run takes at least about this
#: many products. With SciPy's default, 20, a run takes at least 20; with 10,
#: the protocol chapter's networks took 11 to 21 (before the residual's).
LANCZOS_VECTORS = 10


class _OutOfProducts(Exception):
    """The Lanczos run asked for more Hessian-vector products than it was allowed."""


def _top_eigen(matvec, n, iterations, tol, seed) -> TopEigen:
    """:func:`top_eigenvalue` for any symmetric operator ``matvec`` on vectors of length ``n`` >= 1."""
    start = _unit(np.random.default_rng(seed).standard_normal(n))
    products = 0

    def counted(v):
        nonlocal products
        if products == iterations:
            raise _OutOfProducts
        products += 1
        return matvec(np.ravel(v))

    try:
        if n < 3:
            # ARPACK needs n > k + 1; here H itself is n products.
            _, vectors = np.linalg.eigh(np.column_stack([counted(e) for e in np.eye(n)]))
            vector = vectors[:, -1]
        else:
            operator = LinearOperator((n, n), matvec=counted, dtype=np.float64)
            _, vectors = eigsh(operator, k=1, which="LA", v0=start, ncv=min(n, LANCZOS_VECTORS), tol=tol,
                               maxiter=iterations)
            vector = vectors[:, 0]
        hv = counted(vector)
    except (_OutOfProducts, ArpackNoConvergence):
        return TopEigen(np.nan, start, np.inf, products, False)
    value = float(vector @ hv)
    off = float(np.linalg.norm(hv - value * vector))
    residual = 0.0 if off == 0.0 else (off / abs(value) if value != 0.0 else np.inf)
    return TopEigen(value, vector, residual, products, True)


def _unit(v):
    return v / np.linalg.norm(v)


def epsilon_sharpness(net: MLP, x, y, *, epsilon=1e-3, steps=20) -> Sharpness:
    r"""Keskar et al.'s ε-sharpness (their Eq. 4, with A = I: the full parameter space).

    .. math:: \phi_{w,f}(\epsilon) = 100 \times
              \frac{\max_{z \in C_\epsilon} f(w + z) - f(w)}{1 + f(w)},
              \qquad C_\epsilon = \{z : |z_i| \le \epsilon (|w_i| + 1)\}

    Keskar et al. maximise with L-BFGS-B (10 iterations). Here it is projected
    sign-gradient ascent: from :math:`z_0 = 0`,

    .. math:: z_{k+1} = \Pi_{C_\epsilon}\big(z_k + b \odot \operatorname{sign} \nabla f(w + z_k)\big),
              \qquad b_i = \epsilon (|w_i| + 1)

    (:math:`\Pi` clips each coordinate into its interval). The first step
    lands on the corner that maximises the linearisation of f; later steps move
    a coordinate whose gradient changed sign back to 0, then on to the
    opposite face if the sign holds. For a function convex on the box, whose
    maximum is at a corner, no step lowers f (each moves with the gradient's
    signs, so f rises at least by its linear part). The
    result is the largest f over the ``steps + 1`` iterates: a lower bound on
    the maximum, so a lower bound on φ, and never below 0 (z_0 = 0 counts).

    Parameters
    ----------
    net : MLP
    x : ndarray, shape (n, fan_in)
    y : ndarray of int, shape (n,)
    epsilon : float > 0
        ε, the box's half-width relative to ``|w_i| + 1`` (Keskar et al.: 1e-3 and 5e-4).
    steps : int >= 1
        Ascent steps, one gradient each.

    Returns
    -------
    Sharpness

    Examples
    --------
    >>> net = MLP((6, 5, 3), seed=0)
    >>> x, y = np.random.default_rng(0).random((10, 6)), np.arange(10) % 3
    >>> epsilon_sharpness(net, x, y, epsilon=1e-3).value > 0
    True
    """
    epsilon = check_float("epsilon", epsilon, low=0.0, low_open=True)
    steps = check_int("steps", steps, 1)
    oracle = _LossGrad(net, x, y)
    w = oracle.params
    half_width = epsilon * (np.abs(w) + 1.0)
    z = np.zeros_like(w)
    loss, grad = oracle(w)
    best, best_z, losses = loss, z, [loss]
    for _ in range(steps):
        z = np.clip(z + half_width * np.sign(grad), -half_width, half_width)
        value, grad = oracle(w + z)
        losses.append(value)
        if value > best:
            best, best_z = value, z
    return Sharpness(100.0 * (best - loss) / (1.0 + loss), epsilon, loss, best, best_z, np.array(losses))


def line_losses(net_a: MLP, net_b: MLP, x, y, alphas) -> LineLosses:
    r"""The loss and accuracy on ``(x, y)`` along the line through two networks' parameters.

    .. math:: w(\alpha) = (1 - \alpha) \, w_a + \alpha \, w_b

    :math:`\alpha = 0` is ``net_a`` and 1 is ``net_b`` (exactly: the same losses
    as their own :meth:`MLP.evaluate`); values outside [0, 1] extrapolate, as in
    Keskar et al.'s Fig. 3 and Goodfellow et al. (2015).

    Parameters
    ----------
    net_a, net_b : MLP
        Of the same layers, bias and dtype; neither is changed.
    x : ndarray, shape (n, fan_in)
    y : ndarray of int, shape (n,)
    alphas : sequence of float
        At least one, finite.

    Returns
    -------
    LineLosses

    Examples
    --------
    >>> a, b = MLP((6, 5, 3), seed=0), MLP((6, 5, 3), seed=1)
    >>> x, y = np.random.default_rng(0).random((10, 6)), np.arange(10) % 3
    >>> line = line_losses(a, b, x, y, np.linspace(-0.5, 1.5, 9))
    >>> bool(line.loss[2] == a.evaluate(x, y)[0])
    True
    """
    _check_net("net_a", net_a)
    _check_net("net_b", net_b)
    for attribute in ("layers", "bias", "dtype"):
        if getattr(net_a, attribute) != getattr(net_b, attribute):
            raise ValueError(f"net_b must have the {attribute} of net_a ({getattr(net_a, attribute)}), "
                             f"got {getattr(net_b, attribute)}")
    alphas = _check_vector("alphas", alphas, None)
    _require_labels(y)
    data = net_a.sparse(x, y)
    between = net_a.copy()
    loss, accuracy = np.empty(alphas.size), np.empty(alphas.size)
    for k, alpha in enumerate(alphas):
        between.params[...] = (1.0 - alpha) * net_a.params + alpha * net_b.params
        loss[k], accuracy[k], _ = between.evaluate_sparse(data)
    return LineLosses(alphas, loss, accuracy)


def _require_labels(y):
    """Refuse ``y=None``, which ``MLP.sparse`` would read as every label 0."""
    if y is None:
        raise TypeError("y must be the integer labels of x, one per row (got None, which would score "
                        "every sample against label 0)")


def _check_net(name, net):
    if not isinstance(net, MLP):
        raise TypeError(f"{name} must be an ex3lib.MLP, got {type(net).__name__}")


def _check_vector(name, v, size):
    """``v`` as a finite float64 vector (of length ``size`` unless None; at least one entry)."""
    try:
        array = np.asarray(v)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "iuf":
        kind = type(v).__name__ if array is None else f"dtype {array.dtype}"
        raise TypeError(f"{name} must be a vector of real numbers (float or integer dtype), got {kind}")
    want = f"({size},)" if size is not None else "(k,) with k >= 1"
    if array.ndim != 1 or (size is not None and array.size != size) or array.size == 0:
        raise ValueError(f"{name} must have shape {want}" + (", laid out like net.params" if size else "")
                         + f", got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.astype(np.float64)
