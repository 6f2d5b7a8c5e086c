"""ex3lib.hessian against a Hessian built column by column, brute-force searches of the box, and by hand."""

import itertools

import numpy as np
import pytest

from ex3lib import MLP
from ex3lib import hessian
from ex3lib.hessian import epsilon_sharpness, flat_grad, hvp, line_losses, top_eigenvalue
from ex3lib.reference import forward, loss_and_grad

#: The step of the column-by-column Hessian: about eps^(1/3) for parameters of order 1.
COLUMN_STEP = 1e-5


def _problem(bias, layers=(6, 5, 4, 3), n=30, seed=0):
    """A small network (non-zero biases when it has them) and random samples with pixels in [0, 1)."""
    rng = np.random.default_rng(seed)
    net = MLP(layers, bias=bias, seed=seed)
    for b in net.biases:
        b[:] = rng.normal(scale=0.1, size=b.shape)
    return net, rng.random((n, layers[0])), rng.integers(0, layers[-1], n)


def _at(net, w):
    """A copy of ``net`` with parameters ``w``."""
    other = net.copy()
    other.params[...] = w
    return other


def _relu_pattern(net, x):
    """Which hidden units are on, for every sample: the smooth piece of the loss ``net`` lies in."""
    return [h > 0 for h in forward(net.weights, x, net.biases or None)[:-1]]


def _same_piece(net, x, points):
    """Whether every parameter vector of ``points`` turns on the same hidden units as ``net`` does."""
    base = _relu_pattern(net, x)
    return all(all(np.array_equal(a, b) for a, b in zip(base, _relu_pattern(_at(net, w), x))) for w in points)


def _column_hessian(net, x, y):
    """H[:, i] = (g(w + h e_i) - g(w - h e_i)) / 2h, from flat_grad: the Hessian the tests trust."""
    w, n = net.params.copy(), net.n_params
    steps = COLUMN_STEP * np.eye(n)
    # Central differences are exact to O(h^2) only inside one smooth piece of a ReLU network.
    assert _same_piece(net, x, list(w + steps) + list(w - steps))
    H = np.empty((n, n))
    for i in range(n):
        H[:, i] = (flat_grad(_at(net, w + steps[i]), x, y)[1]
                   - flat_grad(_at(net, w - steps[i]), x, y)[1]) / (2 * COLUMN_STEP)
    return H


@pytest.fixture(scope="module", params=[False, True], ids=["no-bias", "bias"])
def exact(request):
    """A small problem, bias off and on, with its column-by-column Hessian (symmetrised)."""
    net, x, y = _problem(request.param)
    H = _column_hessian(net, x, y)
    return net, x, y, H, (H + H.T) / 2


@pytest.mark.parametrize("bias", [False, True])
def test_flat_grad_is_loss_and_grad_in_the_order_of_params(bias):
    """flat_grad equals MLP.loss_and_grad's arrays concatenated, and each entry is d f / d params[i]."""
    net, x, y = _problem(bias)
    loss, g = flat_grad(net, x, y)
    ref_loss, grads = net.loss_and_grad(x, y)
    assert loss == ref_loss
    np.testing.assert_array_equal(g, np.concatenate([a.ravel() for a in grads]))
    # Independent of the kernels' layout: central differences of the NumPy loss along params[i].
    h, numeric = 1e-6, np.empty(net.n_params)
    for i in range(net.n_params):
        up, down = net.params.copy(), net.params.copy()
        up[i] += h
        down[i] -= h
        f = [loss_and_grad(m.weights, x, y, m.biases or None)[0] for m in (_at(net, up), _at(net, down))]
        numeric[i] = (f[0] - f[1]) / (2 * h)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bias", [False, True])
def test_repeated_gradients_equal_fresh_ones_bit_for_bit(bias):
    """The reused CSR data and scratch buffers give what a fresh MLP.loss_and_grad gives, call after call."""
    net, x, y = _problem(bias, layers=(20, 8, 6, 3))
    oracle = hessian._LossGrad(net, x, y)
    rng = np.random.default_rng(1)
    for _ in range(4):
        w = net.params + rng.normal(scale=0.1, size=net.n_params)
        loss, g = oracle(w)
        ref_loss, grads = _at(net, w).loss_and_grad(x, y)
        assert loss == ref_loss
        np.testing.assert_array_equal(g, np.concatenate([a.ravel() for a in grads]))


def test_column_hessian_is_symmetric_and_matches_second_differences_of_the_loss(exact):
    """The trusted Hessian: symmetric to 1e-8 of its largest entry, and equal to an independent one."""
    net, x, y, H, Hs = exact
    scale = np.abs(H).max()
    assert scale > 0.1
    assert np.abs(H - H.T).max() <= 1e-8 * scale
    # Second differences of the NumPy loss alone (no gradient, no layout): H_ij from four losses.
    h, n, w = 1e-4, net.n_params, net.params.copy()
    def f(d):
        m = _at(net, w + d)
        return loss_and_grad(m.weights, x, y, m.biases or None)[0]
    E = h * np.eye(n)
    second = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            second[i, j] = second[j, i] = (f(E[i] + E[j]) - f(E[i] - E[j]) - f(E[j] - E[i])
                                           + f(-E[i] - E[j])) / (4 * h * h)
    assert np.abs(second - Hs).max() <= 1e-6 * scale


@pytest.mark.parametrize("method", ["exact", "differences"])
def test_hvp_matches_the_hessian_times_v(exact, method):
    """hvp(v) = H v to 1e-7 relative, for random v of any length, and 0 for v = 0."""
    net, x, y, _, Hs = exact
    rng = np.random.default_rng(2)
    for scale in (1e-3, 1.0, 1e3):
        v = scale * rng.standard_normal(net.n_params)
        if method == "differences":
            h = hessian._step(net.params, None) / np.linalg.norm(v)
            assert _same_piece(net, x, [net.params + h * v, net.params - h * v])
        product = hvp(net, x, y, v, method=method)
        assert product.dtype == np.float64 and product.shape == (net.n_params,)
        assert np.linalg.norm(product - Hs @ v) <= 1e-7 * np.linalg.norm(Hs @ v)
    np.testing.assert_array_equal(hvp(net, x, y, np.zeros(net.n_params), method=method), 0.0)


def test_exact_hvp_is_symmetric_and_linear(exact):
    """u . H v = v . H u and H (a u + b v) = a H u + b H v, to round-off (1e-12 relative)."""
    net, x, y, _, _ = exact
    rng = np.random.default_rng(5)
    u, v = rng.standard_normal((2, net.n_params))
    hu, hv = hvp(net, x, y, u), hvp(net, x, y, v)
    assert u @ hv == pytest.approx(v @ hu, rel=1e-12)
    combined = hvp(net, x, y, 2.0 * u - 3.0 * v)
    assert np.linalg.norm(combined - (2.0 * hu - 3.0 * hv)) <= 1e-12 * np.linalg.norm(combined)


def test_exact_hvp_of_a_float32_network_is_that_of_its_float64_twin():
    net, x, y = _problem(True)
    single = MLP(net.layers, bias=True, dtype=np.float32, seed=0)
    single.params[...] = net.params
    twin = _at(net, single.params.astype(np.float64))
    v = np.random.default_rng(6).standard_normal(net.n_params)
    np.testing.assert_array_equal(hvp(single, x, y, v), hvp(twin, x, y, v))


def test_differences_across_a_kink_are_wrong_and_the_exact_product_is_not():
    """One pre-activation 1e-9 above 0: the default step flips it, and adds the gradient's jump / 2h."""
    net, x, y = _problem(True)
    a = x @ net.weights[0] + net.biases[0]
    net.biases[0][0] -= a[0, 0] - 1e-9  # sample 0's first hidden unit now sits just above 0
    assert _relu_pattern(net, x)[0][0, 0]
    v = np.random.default_rng(7).standard_normal(net.n_params)
    u, h = v / np.linalg.norm(v), hessian._step(net.params, None)
    assert not _same_piece(net, x, [net.params + h * u, net.params - h * u])
    small = 1e-11  # moves no pre-activation across 0, at a round-off cost of about eps |g| / small
    assert _same_piece(net, x, [net.params + small * u, net.params - small * u])
    exact = hvp(net, x, y, v)
    assert np.linalg.norm(hvp(net, x, y, v, method="differences", h=small) - exact) <= 1e-3 * np.linalg.norm(exact)
    assert np.linalg.norm(hvp(net, x, y, v, method="differences") - exact) > 0.1 * np.linalg.norm(exact)


def test_hvp_with_a_given_step(exact):
    """An explicit h is used: a 1e-3 step is still O(h^2)-accurate here, a huge one is not."""
    net, x, y, _, Hs = exact
    v = np.random.default_rng(3).standard_normal(net.n_params)
    assert np.linalg.norm(hvp(net, x, y, v, method="differences", h=1e-3) - Hs @ v) <= 1e-4 * np.linalg.norm(Hs @ v)
    assert np.linalg.norm(hvp(net, x, y, v, method="differences", h=10.0) - Hs @ v) > 1e-2 * np.linalg.norm(Hs @ v)


@pytest.mark.parametrize("method", ["exact", "differences"])
def test_top_eigenvalue_matches_eigvalsh(exact, method):
    """λ_max to 1e-7 relative and its eigenvector up to sign to 1e-6, converged at tol 1e-8."""
    net, x, y, _, Hs = exact
    values, vectors = np.linalg.eigh(Hs)
    top = top_eigenvalue(net, x, y, iterations=500, tol=1e-8, method=method)
    assert top.converged and top.residual <= 1e-7 and top.iterations < 500
    assert abs(top.value - values[-1]) <= 1e-7 * abs(values[-1])
    assert np.linalg.norm(top.vector) == pytest.approx(1.0, abs=1e-12)
    u = vectors[:, -1]
    assert min(np.linalg.norm(top.vector - u), np.linalg.norm(top.vector + u)) <= 1e-6


def test_top_eigenvalue_is_deterministic_for_a_seed():
    net, x, y = _problem(True)
    a, b = (top_eigenvalue(net, x, y, tol=1e-6, seed=5) for _ in range(2))
    assert a.value == b.value and a.iterations == b.iterations and a.residual == b.residual
    np.testing.assert_array_equal(a.vector, b.vector)
    other = top_eigenvalue(net, x, y, tol=1e-6, seed=6)
    assert not np.array_equal(np.abs(other.vector), np.abs(a.vector))  # another start, another path
    assert other.value == pytest.approx(a.value, rel=1e-5)


def test_top_eigenvalue_records_when_it_has_not_converged():
    """Out of products: not converged, no estimate, and never more products than allowed."""
    net, x, y = _problem(False)
    for allowed in (2, 12):
        products = []
        op = hessian._operator("top_eigenvalue", net, x, y, "exact", None)
        top = hessian._top_eigen(lambda v: products.append(1) or op(v), net.n_params, allowed, 1e-14, 0)
        assert not top.converged and np.isnan(top.value) and top.residual == np.inf
        assert top.iterations == len(products) == allowed
        assert np.linalg.norm(top.vector) == pytest.approx(1.0, abs=1e-12)


def _symmetric(eigenvalues, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues),) * 2))
    return q @ np.diag(eigenvalues) @ q.T, q


@pytest.mark.parametrize("n", [1, 2, 4, 8, 40])
def test_the_largest_eigenvalue_not_the_largest_in_magnitude(n):
    """With a negative eigenvalue of larger magnitude (H is indefinite off a minimum) the result is the largest one."""
    rng = np.random.default_rng(n)
    eigenvalues = np.concatenate([[-5.0, 3.0], rng.uniform(-4.0, 2.5, 38)])[:n] if n > 1 else np.array([-5.0])
    A, q = _symmetric(eigenvalues, seed=n)
    top = hessian._top_eigen(lambda v: A @ v, n, 1000, 1e-10, 0)
    best = int(np.argmax(eigenvalues))
    assert top.converged and top.value == pytest.approx(eigenvalues[best], rel=1e-9)
    assert top.residual <= 1e-9
    assert min(np.linalg.norm(top.vector - q[:, best]), np.linalg.norm(top.vector + q[:, best])) <= 1e-8


def test_functions_leave_the_network_bit_for_bit_unchanged():
    net, x, y = _problem(True)
    other = MLP(net.layers, bias=True, seed=3)
    before, before_other = net.params.copy(), other.params.copy()
    hvp(net, x, y, np.ones(net.n_params))
    hvp(net, x, y, np.ones(net.n_params), method="differences")
    top_eigenvalue(net, x, y, iterations=5)
    top_eigenvalue(net, x, y, iterations=5, method="differences")
    epsilon_sharpness(net, x, y, epsilon=0.1, steps=3)
    line_losses(net, other, x, y, [-0.5, 0.3, 1.5])
    flat_grad(net, x, y)
    # Compared as bits: -0.0 == 0.0 and nan != nan would hide or invent a change.
    np.testing.assert_array_equal(net.params.view(np.uint64), before.view(np.uint64))
    np.testing.assert_array_equal(other.params.view(np.uint64), before_other.view(np.uint64))
    assert np.shares_memory(net.weights[0], net.params)


def test_sharpness_is_positive_grows_with_epsilon_and_stays_in_the_box():
    net, x, y = _problem(True, layers=(20, 8, 6, 3))
    loss = flat_grad(net, x, y)[0]
    values = []
    for epsilon in (1e-4, 1e-3, 1e-2, 1e-1):
        s = epsilon_sharpness(net, x, y, epsilon=epsilon, steps=10)
        assert s.loss == loss == s.losses[0] and s.max_loss == s.losses.max() and len(s.losses) == 11
        assert s.value == 100 * (s.max_loss - s.loss) / (1 + s.loss)
        assert np.all(np.abs(s.perturbation) <= epsilon * (np.abs(net.params) + 1))
        assert flat_grad(_at(net, net.params + s.perturbation), x, y)[0] == s.max_loss
        values.append(s.value)
    assert 0 < values[0] < values[1] < values[2] < values[3]


def test_sharpness_at_small_epsilon_is_the_first_order_formula():
    """For ε -> 0, f is linear on the box: φ = 100 ε Σ (|w_i| + 1) |g_i| / (1 + f), to O(ε)."""
    net, x, y = _problem(True, layers=(20, 8, 6, 3))
    loss, g = flat_grad(net, x, y)
    epsilon = 1e-6
    by_hand = 100 * epsilon * np.sum((np.abs(net.params) + 1) * np.abs(g)) / (1 + loss)
    assert epsilon_sharpness(net, x, y, epsilon=epsilon).value == pytest.approx(by_hand, rel=1e-3)


def test_sharpness_beats_random_corners_of_the_box():
    """The ascent finds at least as high a loss as the best of 200 random corners of the box."""
    net, x, y = _problem(True, layers=(20, 8, 6, 3))
    w, rng = net.params.copy(), np.random.default_rng(4)
    for epsilon in (1e-3, 1e-2):
        s = epsilon_sharpness(net, x, y, epsilon=epsilon)
        corners = epsilon * (np.abs(w) + 1) * rng.choice([-1.0, 1.0], size=(200, w.size))
        best = max(flat_grad(_at(net, w + z), x, y)[0] for z in corners)
        assert s.max_loss >= best


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sharpness_finds_the_best_corner_of_a_convex_loss(bias, seed):
    """Softmax regression (no hidden layer) has a convex loss, so its maximum on the box is at a corner:
    enumerate all 2^n corners (n = 12 or 15). At ε = 1e-3 the ascent must find that maximum."""
    net, x, y = _problem(bias, layers=(4, 3), n=12, seed=seed)
    w, epsilon = net.params.copy(), 1e-3
    corners = w + epsilon * (np.abs(w) + 1) * np.array(list(itertools.product([-1.0, 1.0], repeat=w.size)))
    weights = corners[:, :12].reshape(-1, 4, 3)
    logits = np.einsum("si,kio->kso", x, weights) + (corners[:, None, 12:] if bias else 0.0)
    logits -= logits.max(axis=-1, keepdims=True)
    losses = np.mean(np.log(np.exp(logits).sum(-1)) - np.take_along_axis(logits, y[None, :, None], -1)[..., 0], -1)
    f0 = flat_grad(net, x, y)[0]
    exact = 100 * (losses.max() - f0) / (1 + f0)
    assert epsilon_sharpness(net, x, y, epsilon=epsilon).value == pytest.approx(exact, rel=1e-9)


def test_line_losses_at_0_and_1_are_the_networks_own():
    a, x, y = _problem(True)
    b = MLP(a.layers, bias=True, seed=7)
    alphas = np.linspace(-0.5, 1.5, 9)
    line = line_losses(a, b, x, y, alphas)
    np.testing.assert_array_equal(line.alphas, alphas)
    assert (line.loss[2], line.accuracy[2]) == a.evaluate(x, y)[:2]
    assert (line.loss[6], line.accuracy[6]) == b.evaluate(x, y)[:2]
    middle = _at(a, 0.5 * a.params + 0.5 * b.params)
    assert line.loss[4] == middle.evaluate(x, y)[0]
    assert np.all((line.accuracy >= 0) & (line.accuracy <= 1)) and np.isfinite(line.loss).all()


_NET, _X, _Y = _problem(True)
_V = np.ones(_NET.n_params)
BAD = {
    "differences on a float32 net": (lambda: hvp(MLP((6, 5, 4, 3), dtype=np.float32), _X, _Y, np.ones(62),
                                                 method="differences"), ValueError,
                                     "net must be a float64 network for hvp with method 'differences'"),
    "method unknown": (lambda: hvp(_NET, _X, _Y, _V, method="exakt"), ValueError,
                       "method must be one of 'exact', 'differences'; got 'exakt' \\(did you mean 'exact'\\?\\)"),
    "h with method exact": (lambda: hvp(_NET, _X, _Y, _V, h=1e-5), ValueError,
                            "h applies to method 'differences' only"),
    "differences x of the wrong width": (lambda: hvp(_NET, _X[:, :5], _Y, _V, method="differences"), ValueError,
                                         r"x must have shape \(n_samples, 6\)"),
    "differences y missing": (lambda: hvp(_NET, _X, None, _V, method="differences"), TypeError,
                              "y must be the integer labels of x"),
    "hvp net not an MLP": (lambda: hvp("net", _X, _Y, _V), TypeError, "net must be an ex3lib.MLP"),
    "v of the wrong length": (lambda: hvp(_NET, _X, _Y, np.ones(5)), ValueError, r"v must have shape \(74,\)"),
    "v a matrix": (lambda: hvp(_NET, _X, _Y, np.ones((74, 1))), ValueError, r"v must have shape \(74,\)"),
    "v complex": (lambda: hvp(_NET, _X, _Y, _V * 1j), TypeError, "v must be a vector of real numbers"),
    "v of text": (lambda: hvp(_NET, _X, _Y, ["a"] * 74), TypeError, "v must be a vector of real numbers"),
    "v with nan": (lambda: hvp(_NET, _X, _Y, np.r_[np.nan, _V[1:]]), ValueError, "v contains NaN"),
    "h zero": (lambda: hvp(_NET, _X, _Y, _V, method="differences", h=0.0), ValueError,
               "h must be a finite number in \\(0"),
    "h text": (lambda: hvp(_NET, _X, _Y, _V, method="differences", h="1e-5"), TypeError, "h must be a real number"),
    "x of the wrong width": (lambda: hvp(_NET, _X[:, :5], _Y, _V), ValueError, r"x must have shape \(n_samples, 6\)"),
    "y of the wrong length": (lambda: hvp(_NET, _X, _Y[:-1], _V), ValueError, r"y must have shape \(30,\)"),
    "y missing": (lambda: hvp(_NET, _X, None, _V), TypeError, "y must be the integer labels of x"),
    "y out of range": (lambda: flat_grad(_NET, _X, _Y + 3), ValueError, "y must hold labels from 0 to 2"),
    "flat_grad net not an MLP": (lambda: flat_grad(None, _X, _Y), TypeError, "net must be an ex3lib.MLP"),
    "iterations zero": (lambda: top_eigenvalue(_NET, _X, _Y, iterations=0), ValueError,
                        "iterations must be an integer >= 1"),
    "iterations float": (lambda: top_eigenvalue(_NET, _X, _Y, iterations=10.0), TypeError,
                         "iterations must be an integer"),
    "tol zero": (lambda: top_eigenvalue(_NET, _X, _Y, tol=0.0), ValueError, "tol must be a finite number in \\(0"),
    "seed negative": (lambda: top_eigenvalue(_NET, _X, _Y, seed=-1), ValueError, "seed must be an integer >= 0"),
    "top_eigenvalue differences on a float32 net": (lambda: top_eigenvalue(MLP((6, 3), dtype=np.float32), _X, _Y,
                                                                           method="differences"), ValueError,
                                                    "net must be a float64 network for top_eigenvalue"),
    "top_eigenvalue method unknown": (lambda: top_eigenvalue(_NET, _X, _Y, method=None), ValueError,
                                      "method must be one of 'exact', 'differences'; got None"),
    "epsilon zero": (lambda: epsilon_sharpness(_NET, _X, _Y, epsilon=0.0), ValueError,
                     "epsilon must be a finite number in \\(0"),
    "epsilon infinite": (lambda: epsilon_sharpness(_NET, _X, _Y, epsilon=np.inf), ValueError,
                         "epsilon must be a finite number"),
    "steps zero": (lambda: epsilon_sharpness(_NET, _X, _Y, steps=0), ValueError, "steps must be an integer >= 1"),
    "net_a not an MLP": (lambda: line_losses(1, _NET, _X, _Y, [0.0]), TypeError, "net_a must be an ex3lib.MLP"),
    "net_b not an MLP": (lambda: line_losses(_NET, 1, _X, _Y, [0.0]), TypeError, "net_b must be an ex3lib.MLP"),
    "net_b of other layers": (lambda: line_losses(_NET, MLP((6, 4, 4, 3), bias=True), _X, _Y, [0.0]), ValueError,
                              r"net_b must have the layers of net_a \(\(6, 5, 4, 3\)\), got \(6, 4, 4, 3\)"),
    "net_b without bias": (lambda: line_losses(_NET, MLP((6, 5, 4, 3)), _X, _Y, [0.0]), ValueError,
                           "net_b must have the bias of net_a"),
    "net_b float32": (lambda: line_losses(_NET, MLP((6, 5, 4, 3), bias=True, dtype=np.float32), _X, _Y, [0.0]),
                      ValueError, "net_b must have the dtype of net_a"),
    "alphas empty": (lambda: line_losses(_NET, _NET, _X, _Y, []), ValueError, r"alphas must have shape \(k,\)"),
    "alphas a matrix": (lambda: line_losses(_NET, _NET, _X, _Y, [[0.0, 1.0]]), ValueError,
                        r"alphas must have shape \(k,\)"),
    "alphas with inf": (lambda: line_losses(_NET, _NET, _X, _Y, [0.0, np.inf]), ValueError,
                        "alphas contains NaN or infinite"),
    "alphas of text": (lambda: line_losses(_NET, _NET, _X, _Y, "0 1"), TypeError,
                       "alphas must be a vector of real numbers"),
    "line y missing": (lambda: line_losses(_NET, _NET, _X, None, [0.0]), TypeError, "y must be the integer labels"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_with_a_message_naming_the_parameter(case):
    call, error, message = BAD[case]
    with pytest.raises(error, match=message):
        call()
