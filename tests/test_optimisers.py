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
def test_deferred_first_layer_rows_match_step_by_step(small, name, hyper, batch_size, monkeypatch):
    """Momentum, Nesterov and RMSProp defer the rows of zero pixels; the closed form equals stepping."""
    runs = []
    for lazy in (True, False):
        net = MLP((784, 24, 16, 10), seed=1)
        hist = _train_forcing(monkeypatch, "lazy_first_layer", lazy, net, small, optimiser=name, learning_rate=0.01,
                              batch_size=batch_size, epochs=2, log_every=70, **hyper)
        runs.append((net.params.copy(), hist))
    (lazy, lazy_hist), (eager, eager_hist) = runs
    np.testing.assert_allclose(lazy, eager, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lazy_hist.test_loss, eager_hist.test_loss, rtol=1e-10)
