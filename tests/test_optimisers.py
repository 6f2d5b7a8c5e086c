import numpy as np
import pytest

import ex3lib
from ex3lib import MLP, make_optimiser

from ex3lib import reference

# (name, hyper-parameters, learning rate): every optimiser and option the library offers.
TABLE = [
    ("sgd", {}, 0.1),
    ("sgd", {"momentum": 0.9}, 0.05),
    ("sgd", {"momentum": 0.5, "nesterov": True}, 0.05),
    ("adagrad", {}, 0.1),
    ("adagrad", {"eps": 1e-4}, 0.1),
    ("rmsprop", {}, 0.01),
    ("rmsprop", {"b2": 0.99}, 0.01),
    ("adam", {}, 0.01),
    ("adam", {"b1": 0.8, "b2": 0.99, "eps": 1e-6}, 0.01),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in h.items()) or 'default'}" for n, h, _ in TABLE]


def _twin_kwargs(opt):
    return {"momentum": opt.momentum, "nesterov": opt.nesterov, "b1": opt.b1, "b2": opt.b2, "eps": opt.eps}


@pytest.mark.parametrize("name, hyper, lr", TABLE, ids=IDS)
def test_reduces_a_quadratic_and_matches_its_twin_step_by_step(name, hyper, lr):
    curvature = np.linspace(0.5, 2.0, 50)
    w = np.linspace(-1.0, 1.0, 50)
    twin_w, twin_state = w.copy(), reference.init_state(w)
    opt = make_optimiser(name, **hyper)
    state = opt.init(w)
    f0 = 0.5 * np.sum(curvature * w**2)
    for step in range(1, 101):
        g = curvature * w
        twin_w, twin_state = reference.update(name, twin_w, curvature * twin_w, twin_state, learning_rate=lr,
                                              **_twin_kwargs(opt))
        state = opt.update(w, g.copy(), state, learning_rate=lr)
        assert state.step == step
        np.testing.assert_allclose(w, twin_w, rtol=1e-12, atol=1e-15)
    assert 0.5 * np.sum(curvature * w**2) < 0.5 * f0


@pytest.mark.parametrize("name, hyper, lr", TABLE, ids=IDS)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_training_steps_match_numpy_twin(small, name, hyper, lr, batch_size):
    """The compiled training path (sparse rows, fused SGD) takes the same steps as the equations."""
    net = MLP((784, 24, 16, 10), seed=7)
    weights = [w.copy() for w in net.weights]
    hist = ex3lib.train(net, small, optimiser=name, learning_rate=lr, batch_size=batch_size, epochs=1,
                        train_size=35, log_every=35, progress=False, **hyper)
    opt = make_optimiser(name, **hyper)
    flat = np.concatenate([w.ravel() for w in weights])
    state = reference.init_state(flat)
    losses = []
    for start in range(0, 35, batch_size):
        x, y = small.x_train[start:start + batch_size], small.y_train[start:start + batch_size]
        loss, gw, _ = reference.loss_and_grad(weights, x, y)
        losses.append(loss * len(y))
        g = np.concatenate([gi.ravel() for gi in gw])
        flat, state = reference.update(name, flat, g, state, learning_rate=lr, **_twin_kwargs(opt))
        offset = 0
        for w in weights:
            w[...] = flat[offset:offset + w.size].reshape(w.shape)
            offset += w.size
    np.testing.assert_allclose(net.params, flat, rtol=1e-9, atol=1e-12)
    assert hist.loss[-1] == pytest.approx(sum(losses) / 35, rel=1e-10)


def _max_rel(a, b):
    """Max-norm relative difference of ``a`` from the reference ``b``."""
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


@pytest.mark.parametrize("name, hyper, lr", TABLE, ids=IDS)
@pytest.mark.parametrize("batch_size, bias", [(1, False), (7, False), (10, True)])
def test_every_training_step_is_the_reference_rule_to_1e_12(small, name, hyper, lr, batch_size, bias):
    """The compiled training path, batch by batch, against ex3lib.reference from the same state.

    Each step starts the reference from the kernel's own weights and state, so
    the comparison is of one step, not of a trajectory; both must agree to
    1e-12 (max-norm relative) in the weights and in every state array.
    """
    from ex3lib import kernels

    net = MLP((784, 24, 16, 10), seed=7, bias=bias)
    if bias:
        for b in net.biases:
            b[:] = np.random.default_rng(3).normal(0, 0.1, b.shape)
    opt = make_optimiser(name, **hyper)
    state = opt.init(net.params)
    arrays = opt.arrays(state, lr)
    n_steps = 12
    n = n_steps * batch_size
    data = net.sparse(small.x_train[:n], small.y_train[:n])
    work = net.workspace(batch_size)
    order = np.arange(n, dtype=np.int64)
    slots = {"sgd": ("velocity",), "adagrad": ("sum_sq",), "rmsprop": ("sum_sq",), "adam": ("mu", "nu")}[name]
    step = 0
    for k in range(n_steps):
        w0 = net.params.copy()
        ref_state = reference.init_state(w0)._replace(step=step, **{s: getattr(state, s).copy() for s in slots
                                                                    if getattr(state, s).size})
        weights = [w.copy() for w in net.weights]
        biases = [b.copy() for b in net.biases] if bias else None
        rows = slice(k * batch_size, (k + 1) * batch_size)
        _, gw, gb = reference.loss_and_grad(weights, small.x_train[rows], small.y_train[rows], biases)
        g = np.concatenate([x.ravel() for x in gw + list(gb)])
        want_w, want_state = reference.update(name, w0, g, ref_state, learning_rate=lr, **_twin_kwargs(opt))
        _, _, step, status = kernels.train_window(net.arrays(), arrays, work, data, order, k * batch_size,
                                                  (k + 1) * batch_size, batch_size, step)
        assert status == 0 and step == k + 1
        assert _max_rel(net.params, want_w) <= 1e-12, (k, _max_rel(net.params, want_w))
        for s in slots:
            if getattr(state, s).size:
                assert _max_rel(getattr(state, s), getattr(want_state, s)) <= 1e-12, (k, s)
        assert _max_rel(net.params, w0) > 1e-6, "the step moved the weights"


def _train_forcing(monkeypatch, field, value, net, data, **kwargs):
    """Train with one field of the kernels' optimiser arguments forced, e.g. ``sparse_safe=False``."""
    from ex3lib.optimisers import Optimiser

    real = Optimiser.arrays
    monkeypatch.setattr(Optimiser, "arrays",
                        lambda self, state, lr: real(self, state, lr)._replace(**{field: value}))
    return ex3lib.train(net, data, progress=False, **kwargs)


def test_skipping_untouched_rows_changes_no_bit(small, monkeypatch):
    """AdaGrad only visits rows with a gradient; the full update must give identical bits."""
    params = []
    for sparse in (True, False):
        net = MLP((784, 24, 16, 10), seed=1)
        _train_forcing(monkeypatch, "sparse_safe", sparse, net, small, optimiser="adagrad",
                       learning_rate=0.05, batch_size=4, epochs=2)
        params.append(net.params.copy())
    assert np.array_equal(params[0], params[1])


def test_optimiser_state_is_explicit():
    opt = make_optimiser("adam")
    state = opt.init(np.zeros(5))
    assert state._fields == ("velocity", "sum_sq", "mu", "nu", "step")
    assert state.mu.shape == state.nu.shape == (5,) and state.step == 0
    assert make_optimiser("sgd").init(np.zeros(5)).velocity.size == 0
    assert make_optimiser("sgd", momentum=0.9).init(np.zeros(5)).velocity.shape == (5,)


def test_default_b2_depends_on_the_method():
    assert make_optimiser("rmsprop").b2 == 0.9
    assert make_optimiser("adam").b2 == 0.999


@pytest.mark.parametrize("name, kwargs, exc, word", [
    ("lbfgs", {}, ValueError, "optimiser"),
    ("sgd", {"momentum": 1.0}, ValueError, "momentum"),
    ("sgd", {"momentum": -0.1}, ValueError, "momentum"),
    ("sgd", {"momentum": float("nan")}, ValueError, "momentum"),
    ("adam", {"momentum": 0.9}, ValueError, "momentum"),
    ("sgd", {"nesterov": True}, ValueError, "nesterov"),
    ("sgd", {"momentum": 0.9, "nesterov": 1}, TypeError, "nesterov"),
    ("adam", {"b1": 1.0}, ValueError, "b1"),
    ("rmsprop", {"b2": 1.5}, ValueError, "b2"),
    ("adagrad", {"eps": 0.0}, ValueError, "eps"),
])
def test_bad_optimiser_arguments(name, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        make_optimiser(name, **kwargs)


def test_update_refuses_bad_learning_rate_and_shapes():
    opt = make_optimiser("sgd")
    w = np.zeros(3)
    with pytest.raises(ValueError, match="learning_rate"):
        opt.update(w, np.zeros(3), opt.init(w), learning_rate=-0.1)
    with pytest.raises(ValueError, match="same shape"):
        opt.update(w, np.zeros(4), opt.init(w), learning_rate=0.1)


@pytest.mark.parametrize("name, hyper", [("sgd", {"momentum": 0.9}), ("sgd", {"momentum": 0.5, "nesterov": True}),
                                         ("rmsprop", {})])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_deferred_rows_match_step_by_step(small, name, hyper, batch_size, monkeypatch):
    """Momentum, Nesterov and RMSProp defer the rows of zero inputs (pixels, units that are off); the closed form
    equals stepping them."""
    runs = []
    for lazy in (True, False):
        net = MLP((784, 24, 16, 10), seed=1)
        hist = _train_forcing(monkeypatch, "lazy_rows", lazy, net, small, optimiser=name, learning_rate=0.01,
                              batch_size=batch_size, epochs=2, log_every=70, **hyper)
        runs.append((net.params.copy(), hist))
    (lazy, lazy_hist), (eager, eager_hist) = runs
    np.testing.assert_allclose(lazy, eager, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lazy_hist.test_loss, eager_hist.test_loss, rtol=1e-10)


def test_flush_sets_subnormal_states_to_zero_and_keeps_everything_else():
    from ex3lib.kernels.updates import SMALLEST_NORMAL, flush

    tiny = np.nextafter(0.0, 1.0)  # 2**-1074, where 0.9 * v rounds back to v for ever
    assert 0.9 * tiny == tiny, "the reason: a decaying subnormal state sticks"
    for value in (tiny, -tiny, SMALLEST_NORMAL / 2, -1e-310):
        assert flush(value) == 0.0 and reference.flush(np.array([value]))[0] == 0.0
    for value in (SMALLEST_NORMAL, -SMALLEST_NORMAL, 1e-300, 0.5, -3.0):
        assert flush(value) == value and reference.flush(np.array([value]))[0] == value
    assert np.isnan(flush(np.nan)) and np.isnan(reference.flush(np.array([np.nan]))[0])
    assert np.signbit(flush(-0.0)) and np.signbit(reference.flush(np.array([-0.0]))[0])
    small32 = np.float32(1e-40)  # a float32 subnormal: left alone, and still float32
    assert flush(small32) == small32 and reference.flush(np.array([small32])).dtype == np.float32
