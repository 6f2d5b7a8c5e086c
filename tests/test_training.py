import json
import math
import subprocess
import sys

import numpy as np
import pytest

import ex3lib
from ex3lib import MLP, RunConfig, train

TINY = dict(train_size=120, log_every=60, epochs=2, batch_size=10, learning_rate=0.05)


def _same(a, b):
    for key in ("epoch", "loss", "test_loss", "test_accuracy", "learning_rate"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert (a.diverged, a.reason, a.config) == (b.diverged, b.reason, b.config)


def test_history_has_a_point_before_training_and_per_window(small):
    hist = train(MLP((784, 16, 10)), small, progress=False, **TINY)
    np.testing.assert_allclose(hist.epoch, [0, 0.5, 1, 1.5, 2])
    assert math.isnan(hist.learning_rate[0]) and np.all(hist.learning_rate[1:] == 0.05)
    assert hist.loss.shape == hist.test_accuracy.shape == hist.test_loss.shape == hist.time.shape == (5,)
    assert np.all(np.diff(hist.time) >= 0) and hist.seconds >= hist.time[-1]
    assert not hist.diverged and hist.reason == ""
    assert hist.config["learning_rate"] == 0.05 and hist.config["init_seed"] == 0
    assert hist.extra == {"updates": 24, "n_train": 120}


def test_window_ends_move_to_batch_boundaries(small):
    hist = train(MLP((784, 16, 10)), small, progress=False, train_size=100, log_every=30,
                 batch_size=7, epochs=1)
    # windows end after 35, 63, 91 and 100 samples (batches of 7, last one of 2)
    np.testing.assert_allclose(hist.epoch, [0, 0.35, 0.63, 0.91, 1.0])


def test_same_config_same_bits_and_shuffle_differs(small):
    a = train(MLP((784, 16, 10), seed=3), small, progress=False, **TINY)
    b = train(MLP((784, 16, 10), seed=3), small, progress=False, **TINY)
    _same(a, b)
    s1 = train(MLP((784, 16, 10), seed=3), small, order="shuffle", seed=1, progress=False, **TINY)
    s2 = train(MLP((784, 16, 10), seed=3), small, order="shuffle", seed=1, progress=False, **TINY)
    s3 = train(MLP((784, 16, 10), seed=3), small, order="shuffle", seed=2, progress=False, **TINY)
    _same(s1, s2)
    assert not np.array_equal(s1.loss, a.loss)
    assert not np.array_equal(s1.loss, s3.loss)


def test_reproducible_in_another_process(mnist):
    config = RunConfig(train_size=3000, log_every=1500, epochs=1, batch_size=10, order="shuffle", seed=4)
    here = ex3lib.run(config, mnist, progress=False).to_dict()
    code = ("import json, ex3lib; c = ex3lib.RunConfig.from_dict(json.loads(input()));"
            "print(json.dumps(ex3lib.run(c, ex3lib.load_mnist(), progress=False).to_dict()))")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(config.to_dict()),
                         capture_output=True, text=True, check=True).stdout
    there = json.loads(out.strip().splitlines()[-1])
    for key in ("epoch", "loss", "test_loss", "test_accuracy", "config", "diverged"):
        assert here[key] == there[key]


def test_linear_decay_learning_rates_are_logged(small):
    hist = train(MLP((784, 16, 10)), small, schedule="linear_decay", lr_final=0.001, progress=False,
                 **{**TINY, "epochs": 4, "learning_rate": 0.1})
    expected = [0.1 * (1 - k / 4) + k / 4 * 0.001 for k in range(4)]
    np.testing.assert_allclose(hist.learning_rate[1:], np.repeat(expected, 2))


def test_non_finite_loss_stops_the_run_at_once(small):
    net = MLP((784, 16, 10), seed=0)
    net.params *= 1e200
    hist = train(net, small, progress=False, **TINY)
    assert hist.diverged and "non-finite" in hist.reason
    assert len(hist.epoch) == 2 and not np.isfinite(hist.loss[-1])
    assert hist.epoch[-1] == pytest.approx(10 / 120)


def test_dead_network_is_detected(small):
    net = MLP((784, 16, 16, 10), seed=0)
    net.weights[1][:] = -np.abs(net.weights[1])
    hist = train(net, small, progress=False, **TINY)
    assert hist.diverged and "dead network: hidden layer 2" in hist.reason
    assert hist.loss[-1] == pytest.approx(math.log(10))
    assert len(hist.epoch) == 2


def test_report_collapse_eta01_m1_is_flagged(mnist):
    """The report's eta = 0.1, m = 1 run: nan loss, 0.098 accuracy.  With a stable softmax the net dies."""
    hist = train(MLP(seed=0), mnist, learning_rate=0.1, batch_size=1, epochs=2, progress=False)
    assert hist.diverged and "dead network" in hist.reason
    assert hist.loss[-1] == pytest.approx(math.log(10), abs=1e-12)
    assert hist.test_accuracy[-1] == pytest.approx(0.098)


def test_one_epoch_m10_reaches_95_percent(mnist):
    hist = train(MLP(seed=0), mnist, learning_rate=0.1, batch_size=10, epochs=1, progress=False)
    assert hist.final_accuracy >= 0.95
    assert hist.loss[0] > 2.0 > 0.5 > hist.loss[-1]


def test_history_round_trips_through_json(small):
    net = MLP((784, 16, 10))
    net.params *= 1e200
    hist = train(net, small, progress=False, **TINY)
    back = ex3lib.History.from_dict(json.loads(json.dumps(hist.to_dict())))
    _same(hist, back)


def test_run_config_is_canonical():
    assert RunConfig(optimiser="rmsprop").b2 == 0.9
    assert RunConfig(optimiser="rmsprop") == RunConfig(optimiser="rmsprop", b2=0.9)
    assert RunConfig().replace(batch_size=100).batch_size == 100
    assert RunConfig().replace(learning_rate=0.01) == RunConfig(learning_rate=0.01)
    decay = RunConfig(schedule="linear_decay", lr_final=0.001)
    assert decay.replace(learning_rate=0.05).lr_final == 0.001
    assert decay.replace(schedule="constant", lr_final=None) == RunConfig()
    assert RunConfig.from_dict(RunConfig(layers=(784, 10)).to_dict()) == RunConfig(layers=(784, 10))
    with pytest.raises(ValueError, match="unknown RunConfig field"):
        RunConfig.from_dict({"lr": 0.1})


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"learning_rate": 0.0}, ValueError, "learning_rate"),
    ({"learning_rate": -0.1}, ValueError, "learning_rate"),
    ({"learning_rate": float("inf")}, ValueError, "learning_rate"),
    ({"learning_rate": float("nan")}, ValueError, "learning_rate"),
    ({"learning_rate": "fast"}, TypeError, "learning_rate"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 201}, ValueError, "batch_size"),
    ({"batch_size": 2.0}, TypeError, "batch_size"),
    ({"epochs": 0}, ValueError, "epochs"),
    ({"epochs": True}, TypeError, "epochs"),
    ({"optimiser": "sgdm"}, ValueError, "optimiser"),
    ({"schedule": "step"}, ValueError, "schedule"),
    ({"schedule": "linear_decay"}, ValueError, "lr_final"),
    ({"momentum": 1.0}, ValueError, "momentum"),
    ({"order": "random"}, ValueError, "order"),
    ({"seed": -3}, ValueError, "seed"),
    ({"train_size": 0}, ValueError, "train_size"),
    ({"train_size": 5, "batch_size": 10}, ValueError, "batch_size"),
    ({"log_every": 0}, ValueError, "log_every"),
    ({"progress": "no"}, TypeError, "progress"),
])
def test_bad_training_arguments(small, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        train(MLP((784, 8, 10)), small, **kwargs)


def test_train_takes_a_run_config_or_its_fields_by_name(small):
    config = RunConfig(layers=(784, 16, 10), optimiser="adam", **{**TINY, "learning_rate": 0.01})
    by_config = train(MLP((784, 16, 10)), small, config, progress=False)
    by_name = train(MLP((784, 16, 10)), small, optimiser="adam", progress=False, **{**TINY, "learning_rate": 0.01})
    _same(by_config, by_name)
    assert by_config.config == {**config.to_dict(), "init_seed": 0}
    _same(ex3lib.run(config, small, progress=False), by_config)


@pytest.mark.parametrize("call, exc, words", [
    (lambda net, data: train(net, data, RunConfig(), progress=False), ValueError,
     r"config does not describe net: layers=\(784, 300, 100, 100, 10\) but the network has \(784, 8, 10\)"),
    (lambda net, data: train(net, data, RunConfig(layers=(784, 8, 10), dtype="float32")), ValueError,
     "dtype='float32' but the network has 'float64'"),
    (lambda net, data: train(net, data, RunConfig(layers=(784, 8, 10)), epochs=2), TypeError,
     "either as config or by name, not both"),
    (lambda net, data: train(net, data, {"epochs": 1}), TypeError, "config must be an ex3lib.RunConfig"),
    (lambda net, data: train(net, data, learning_rat=0.1), TypeError,
     "unknown hyper-parameter.*'learning_rat'.*allowed: optimiser, learning_rate"),
    (lambda net, data: train(net, data, layers=(784, 8, 10)), TypeError, "unknown hyper-parameter.*'layers'"),
])
def test_train_refuses_a_config_that_does_not_fit(small, call, exc, words):
    with pytest.raises(exc, match=words):
        call(MLP((784, 8, 10)), small)


def test_bad_data(small):
    class Wrong:
        x_train = np.zeros((10, 100))
        y_train = np.zeros(10, int)
        x_test, y_test = small.x_test, small.y_test
    with pytest.raises(ValueError, match="x_train must have shape"):
        train(MLP((784, 8, 10)), Wrong(), batch_size=1)
    with pytest.raises(TypeError, match="x_train"):
        train(MLP((784, 8, 10)), object())
    with pytest.raises(TypeError, match="net must be"):
        train("net", small)


def test_adaptive_methods_record_their_effective_step(small):
    small.x_train[:, :100] = 0.0  # pixels that are never on, like MNIST's border
    hist = train(MLP((784, 16, 10)), small, optimiser="adagrad", learning_rate=0.1, progress=False, **{
        k: v for k, v in TINY.items() if k != "learning_rate"})
    steps = np.array(hist.extra["effective_step"])
    assert steps.shape == (len(hist.epoch), 2, 3)
    assert np.all(steps[0] == pytest.approx(0.1 / np.sqrt(1e-8)))
    # AdaGrad's accumulator only grows, so every percentile of the step only shrinks.
    assert np.all(np.diff(steps, axis=0) <= 0)
    by_pixel = np.array(hist.extra["first_layer_step_by_input"])
    never_on = (small.x_train[:120] == 0).all(axis=0)
    assert by_pixel.shape == (784,)
    assert np.all(by_pixel[never_on] == pytest.approx(0.1 / np.sqrt(1e-8)))
    assert by_pixel[~never_on].max() < by_pixel[never_on].min()
    assert "effective_step" not in train(MLP((784, 16, 10)), small, progress=False, **TINY).extra


def test_run_config_from_history_reproduces_the_run(small):
    config = RunConfig(learning_rate=0.05, batch_size=5, epochs=1, seed=3, order="shuffle",
                       optimiser="adam", log_every=200)
    h = ex3lib.run(config, small, progress=False)
    again = RunConfig.from_history(h)
    assert again == config
    assert np.array_equal(ex3lib.run(again, small, progress=False).loss, h.loss)
    # train() with a network seeded apart from the sample order has no RunConfig.
    h2 = train(MLP(seed=1), small, epochs=1, seed=2, progress=False)
    with pytest.raises(ValueError, match="initialised with seed 1 on samples drawn with seed 2"):
        RunConfig.from_history(h2)
    with pytest.raises(TypeError, match="history must be a History"):
        RunConfig.from_history(h.config)


@pytest.mark.parametrize("layers, bias, dtype", [((784, 300, 100, 100, 10), False, np.float64),
                                                 ((784, 13, 7, 10), True, np.float64),
                                                 ((784, 20, 10), False, np.float32)])
@pytest.mark.parametrize("optimiser, kwargs", [
    ("sgd", {}), ("sgd", {"batch_size": 1}), ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.9, "nesterov": True, "batch_size": 1}),
    ("adagrad", {}), ("rmsprop", {"batch_size": 1}), ("adam", {"learning_rate": 0.01}),
])
def test_row_aligned_copy_trains_bit_for_bit_like_the_network(mnist, monkeypatch, layers, bias, dtype,
                                                              optimiser, kwargs):
    import ex3lib.training as training

    net = MLP(layers, bias=bias, dtype=dtype, seed=5)
    twin = net.row_aligned()
    assert twin is not net and all(w.ctypes.data % 64 == 0 for w in twin.weights)
    assert all(w.strides[0] % 64 == 0 for w in twin.weights[:-1])
    if bias:
        net.params[-sum(layers[1:]):] = 0.01  # non-zero biases must land on the real units only
    cfg = dict(train_size=600, log_every=200, epochs=2, batch_size=10, learning_rate=0.05, order="shuffle",
               seed=1)
    runs = []
    for aligned in (True, False):
        monkeypatch.setattr(training, "_ALIGN_ROWS", aligned)
        trained = net.copy()
        hist = train(trained, mnist, optimiser=optimiser, progress=False, **{**cfg, **kwargs})
        runs.append((trained.params, hist))
    (p_aligned, h_aligned), (p_plain, h_plain) = runs
    assert not np.array_equal(p_plain, net.params)
    np.testing.assert_array_equal(p_aligned, p_plain)
    _same(h_aligned, h_plain)
    assert h_aligned.extra == h_plain.extra


def test_an_interrupted_run_leaves_the_network_as_trained_so_far(mnist, monkeypatch):
    import ex3lib.training as training

    real = training.kernels.train_window
    calls = []

    def interrupted_after_one_window(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(training.kernels, "train_window", interrupted_after_one_window)
    net = MLP(seed=2)
    with pytest.raises(KeyboardInterrupt):
        train(net, mnist, train_size=400, log_every=200, epochs=1, progress=False)
    monkeypatch.setattr(training.kernels, "train_window", real)
    one_window = MLP(seed=2)
    train(one_window, mnist, train_size=200, log_every=200, epochs=1, progress=False)
    assert not np.array_equal(one_window.params, MLP(seed=2).params)
    np.testing.assert_array_equal(net.params, one_window.params)
