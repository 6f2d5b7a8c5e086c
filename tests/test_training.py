import json
import math
import re
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
    assert hist.extra == {"updates": 24, "updates_at": [0, 6, 12, 18, 24], "n_train": 120}


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


def test_a_growing_batch_takes_the_updates_of_its_batch_sizes(small):
    # m_0 = 3, m_N = 60, N = 4: m_k = 720 / (240 - 57 k) = 3, 3.93, 5.71, 10.43
    hist = train(MLP((784, 16, 10)), small, batch_schedule="increase", batch_size=3, batch_final=60, epochs=4,
                 log_every=50, learning_rate=0.05, progress=False)
    assert hist.extra["batch_size"] == [3, 4, 6, 10]
    # ceil(200 / m_k) updates per epoch: 67 + 50 + 34 + 20
    assert hist.extra["updates"] == sum(math.ceil(200 / m) for m in (3, 4, 6, 10)) == 171
    assert np.all(hist.learning_rate[1:] == 0.05)  # η stays where it started
    np.testing.assert_array_equal(hist.epoch[[4, 8, 12, 16]], [1, 2, 3, 4])
    assert hist.config["batch_schedule"] == "increase" and hist.config["batch_final"] == 60
    assert RunConfig.from_history(hist).label == "SGD η=0.05 m=3→60"


def test_a_growing_batch_stops_at_the_training_set(small):
    # m_0 = 50, m_N = 10⁶, N = 5: m_4 = 249.95, more than the 200 samples
    hist = train(MLP((784, 8, 10)), small, batch_schedule="increase", batch_size=50, batch_final=10**6,
                 epochs=5, progress=False)
    assert hist.extra["batch_size"] == [50, 62, 83, 125, 200]
    assert hist.extra["updates"] == 4 + 4 + 3 + 2 + 1


def test_each_epoch_of_a_growing_batch_is_a_run_at_that_batch_size(small):
    """Bit for bit: epoch k of the schedule is one epoch at m_k (plain SGD carries no state between epochs)."""
    # m_0 = 5, m_N = 50, N = 2: m_1 = 500 / 55 = 9.09
    grown_net, net = MLP((784, 16, 10), seed=2), MLP((784, 16, 10), seed=2)
    grown = train(grown_net, small, batch_schedule="increase", batch_size=5, batch_final=50, epochs=2,
                  log_every=60, train_size=150, progress=False)
    assert grown.extra["batch_size"] == [5, 9]
    first = train(net, small, batch_size=5, epochs=1, log_every=60, train_size=150, progress=False)
    second = train(net, small, batch_size=9, epochs=1, log_every=60, train_size=150, progress=False)
    np.testing.assert_array_equal(grown_net.params, net.params)
    n1 = len(first.epoch)
    for key in ("loss", "test_loss", "test_accuracy", "learning_rate"):
        np.testing.assert_array_equal(getattr(grown, key)[:n1], getattr(first, key))
        np.testing.assert_array_equal(getattr(grown, key)[n1:], getattr(second, key)[1:])
    np.testing.assert_array_equal(grown.epoch[n1:], second.epoch[1:] + 1)
    assert grown.extra["updates"] == first.extra["updates"] + second.extra["updates"] == 30 + 17


def test_a_growing_batch_with_momentum_matches_the_numpy_twin(small):
    """The velocity carries over from one batch size to the next, as in ex3lib.reference's rule."""
    from ex3lib import reference

    net = MLP((784, 24, 16, 10), seed=7)
    weights = [w.copy() for w in net.weights]
    # m_0 = 2, m_N = 20, N = 3: m_k = 120 / (60 - 18 k) = 2, 2.86, 5
    hist = train(net, small, batch_schedule="increase", batch_size=2, batch_final=20, epochs=3, momentum=0.9,
                 learning_rate=0.05, train_size=35, log_every=35, progress=False)
    assert hist.extra["batch_size"] == [2, 3, 5]
    x, y = small.x_train[:35], small.y_train[:35]
    flat = np.concatenate([w.ravel() for w in weights])
    state = reference.init_state(flat)
    for m in (2, 3, 5):
        for start in range(0, 35, m):  # the last batch of m = 2 and 3 is smaller
            _, gw, _ = reference.loss_and_grad(weights, x[start:start + m], y[start:start + m])
            g = np.concatenate([gi.ravel() for gi in gw])
            flat, state = reference.update("sgd", flat, g, state, learning_rate=0.05, momentum=0.9)
            offset = 0
            for w in weights:
                w[...] = flat[offset:offset + w.size].reshape(w.shape)
                offset += w.size
    np.testing.assert_allclose(net.params, flat, rtol=1e-9, atol=1e-12)
    assert hist.extra["updates"] == 18 + 12 + 7


def test_batch_schedule_config_is_canonical_and_round_trips(tmp_path):
    grown = RunConfig(batch_schedule="increase", batch_final=1000)
    assert grown.label == "SGD η=0.1 m=10→1000"
    assert RunConfig(schedule="linear_decay", lr_final=0.001, batch_schedule="increase",
                     batch_final=1000).label == "SGD η=0.1→0.001 m=10→1000"
    assert RunConfig.from_dict(grown.to_dict()) == grown
    assert grown.to_dict()["batch_final"] == 1000 and grown.to_dict()["batch_schedule"] == "increase"
    # A constant batch schedule's batch_final is its batch size, and follows it.
    assert RunConfig().batch_final == 10 and RunConfig(batch_final=10) == RunConfig()
    assert RunConfig().replace(batch_size=20) == RunConfig(batch_size=20)
    assert grown.replace(batch_size=20).batch_final == 1000
    assert grown.replace(batch_schedule="constant", batch_final=None) == RunConfig()
    # A dict from before batch schedules existed is a constant batch.
    old = {k: v for k, v in RunConfig().to_dict().items() if not k.startswith("batch_") or k == "batch_size"}
    assert RunConfig.from_dict(old) == RunConfig()
    store = ex3lib.ResultsStore(tmp_path)
    assert store.key(grown) != store.key(RunConfig())
    assert store.key(grown) != store.key(grown.replace(batch_final=999))
    assert [grown.batch_schedule_spec.batch_size_at(k) for k in (0, 9)] == [10, 92]


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"batch_schedule": "grow"}, ValueError, r"batch_schedule must be one of 'constant', 'increase'; got 'grow'"),
    ({"batch_schedule": "increse", "batch_final": 100}, ValueError, r"did you mean 'increase'\?"),
    ({"batch_schedule": "increase"}, ValueError, "batch_schedule 'increase' needs batch_final"),
    ({"batch_schedule": "increase", "batch_final": 5}, ValueError, "batch_final must be at least batch_size=10"),
    ({"batch_schedule": "increase", "batch_final": -1}, ValueError, "batch_final must be an integer >= 1"),
    ({"batch_schedule": "increase", "batch_final": 1e3}, TypeError, "batch_final must be an integer"),
    ({"batch_schedule": "increase", "batch_size": 0, "batch_final": 100}, ValueError, "batch_size"),
    ({"batch_final": 100}, ValueError, "batch_final applies to batch_schedule 'increase' only"),
    ({"batch_schedule": "increase", "batch_size": 10, "batch_final": 100, "train_size": 5}, ValueError,
     "batch_size must be from 1 to train_size=5"),
])
def test_batch_schedule_refusals_name_the_parameter(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        RunConfig(**kwargs)


def test_a_growing_batch_must_start_within_the_data(small):
    with pytest.raises(ValueError, match=r"batch_size must be from 1 to the number of training samples \(200\)"):
        train(MLP((784, 8, 10)), small, batch_schedule="increase", batch_size=201, batch_final=1000)


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
    ({"validation_size": -1}, ValueError, "validation_size"),
    ({"validation_size": 60_000}, ValueError, "validation_size"),
    ({"validation_size": 200}, ValueError, "validation_size must be from 0 to 199"),
    ({"validation_size": 1.5}, TypeError, "validation_size"),
    ({"validation_size": 150, "batch_size": 60}, ValueError, "batch_size"),
    ({"keep_params": 1}, TypeError, "keep_params"),
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


# ---------------------------------------------------------------------------- divergence in every form


@pytest.fixture(scope="module")
def mnist_3000(mnist):
    """The first 3,000 training and 1,000 test images: enough for each blow-up to show in a window."""
    return ex3lib.MNIST(mnist.x_train[:3000], mnist.y_train[:3000], mnist.x_test[:1000], mnist.y_test[:1000])


@pytest.mark.parametrize("kwargs, reason", [
    # The examples, each reported diverged=False before: NaN weights, or a loss of 1e4-1e14.
    ({"learning_rate": 1e308}, r"non-finite parameters: \d+ weight\(s\) are nan or infinite at epoch 0\.3333"),
    ({"optimiser": "adam", "learning_rate": 1.0, "batch_size": 1}, "training loss of the window .* exceeds"),
    ({"optimiser": "adagrad", "learning_rate": 100.0}, "training loss of the window .* exceeds"),
    ({"optimiser": "rmsprop", "learning_rate": 10.0, "batch_size": 1}, "training loss of the window .* exceeds"),
], ids=["sgd-1e308", "adam-1-m1", "adagrad-100", "rmsprop-10-m1"])
def test_blown_up_runs_are_flagged_with_a_reason(mnist_3000, kwargs, reason):
    hist = train(MLP(seed=0), mnist_3000, epochs=1, log_every=1000, progress=False, **kwargs)
    assert hist.diverged and re.search(reason, hist.reason), hist.reason
    assert len(hist.epoch) == 2  # stopped at the first window that blew up
    if "exceeds" in reason:
        assert hist.loss[-1] > ex3lib.training.LOSS_BOUND and "LOSS_BOUND" in hist.reason


def test_unscaled_float_pixels_warn_and_the_run_is_flagged(mnist_3000):
    data = ex3lib.MNIST(np.asarray(mnist_3000.x_train) * 255, mnist_3000.y_train, mnist_3000.x_test,
                        mnist_3000.y_test)
    with pytest.warns(UserWarning, match=r"data\.x_train has values from 0 to 255, outside \[0, 1\].*"
                                         r"divide them by 255"):
        hist = train(MLP(seed=0), data, epochs=1, log_every=1000, progress=False)
    assert hist.diverged and "exceeds the divergence bound" in hist.reason


def test_integer_pixels_are_refused_with_how_to_scale_them(small):
    pixels = (small.x_train * 255).astype(np.uint8)
    for x_train, name in ((pixels, "x_train"),):
        data = ex3lib.MNIST(x_train, small.y_train, small.x_test, small.y_test)
        with pytest.raises(ValueError, match=rf"data\.{name} holds integer pixels from 0 to \d+; .*"
                                             r"divide them by 255"):
            train(MLP((784, 8, 10)), data, progress=False)
    data = ex3lib.MNIST(small.x_train, small.y_train, (small.x_test * 255).astype(np.int64), small.y_test)
    with pytest.raises(ValueError, match=r"data\.x_test holds integer pixels"):
        train(MLP((784, 8, 10)), data, progress=False)
    # Binary integer images are pixels in [0, 1] already.
    binary = ex3lib.MNIST((small.x_train > 0.5).astype(np.uint8), small.y_train, small.x_test, small.y_test)
    assert not train(MLP((784, 8, 10)), binary, epochs=1, progress=False).diverged


def test_negative_inputs_warn(small):
    data = ex3lib.MNIST(small.x_train - 0.5, small.y_train, small.x_test, small.y_test)
    with pytest.warns(UserWarning, match=r"data\.x_train has values from -0\.5 .*scale them into \[0, 1\]"):
        train(MLP((784, 8, 10)), data, epochs=1, progress=False)


def test_divergence_bound_on_a_finite_loss(small):
    # Weights 300 times too large: the loss is huge (about 3e4 nats) but finite, and so is every weight.
    net = MLP((784, 16, 10), seed=0)
    net.params *= 300
    hist = train(net, small, progress=False, **TINY)
    assert np.isfinite(hist.loss).all() and np.isfinite(net.params).all()
    assert hist.diverged and "exceeds the divergence bound of 1000 nats" in hist.reason


@pytest.mark.parametrize("loss, test_loss, expected", [
    (ex3lib.training.LOSS_BOUND, 2.3, ""),
    (np.nextafter(ex3lib.training.LOSS_BOUND, np.inf), 2.3, "training loss of the window 1000 nats .* exceeds"),
    (2.3, 1e10, "test loss 1e\\+10 nats .* exceeds"),
    (2.3, np.inf, r"non-finite test loss \(inf\)"),
    (np.nan, 2.3, r"non-finite training loss of the window \(nan\)"),
])
def test_divergence_bound_is_the_documented_one(loss, test_loss, expected):
    reason = ex3lib.training._divergence(np.zeros(3), {"loss": [loss], "test_loss": [test_loss]},
                                         np.ones(1, np.uint8), 1.0, 10)
    assert (re.search(expected, reason) if expected else reason == ""), reason
    assert ex3lib.training.LOSS_BOUND == 1000.0
    params = np.array([0.0, np.nan, np.inf])
    assert "non-finite parameters: 2 weight(s)" in ex3lib.training._divergence(
        params, {"loss": [2.3], "test_loss": [2.3]}, np.ones(1, np.uint8), 1.0, 10)


def test_summaries_count_the_newly_flagged_runs(mnist_3000):
    from ex3lib.experiments import summarise

    runs = [train(MLP(seed=s), mnist_3000, optimiser="adagrad", learning_rate=100.0, epochs=1,
                  log_every=1000, seed=s, progress=False) for s in (0, 1)]
    assert summarise(runs)["diverged"].tolist() == [2]


# ---------------------------------------------------------------------------- no stale or misrecorded data


def test_a_read_only_view_whose_base_changes_trains_on_the_new_data(small):
    base_x, base_y = small.x_train.copy(), small.y_train.copy()
    view_x, view_y = base_x[:], base_y[:]
    view_x.flags.writeable = view_y.flags.writeable = False
    data = ex3lib.MNIST(view_x, view_y, small.x_test, small.y_test)
    train(MLP((784, 16, 10)), data, progress=False, **TINY)
    base_x[:] = base_x[::-1]
    base_y[:] = base_y[::-1]
    changed = train(MLP((784, 16, 10)), data, progress=False, **TINY)
    fresh = train(MLP((784, 16, 10)), ex3lib.MNIST(base_x.copy(), base_y.copy(), small.x_test, small.y_test),
                  progress=False, **TINY)
    _same(changed, fresh)


def test_a_read_only_array_made_writable_again_is_not_reused(small):
    x = small.x_train.copy()
    x.flags.writeable = False
    y = small.y_train.copy()
    y.flags.writeable = False
    data = ex3lib.MNIST(x, y, small.x_test, small.y_test)
    train(MLP((784, 16, 10)), data, progress=False, **TINY)
    x.flags.writeable = True
    x[:] = 0.0
    x.flags.writeable = False
    hist = train(MLP((784, 16, 10)), data, progress=False, **TINY)
    assert hist.loss[-1] == pytest.approx(math.log(10))  # all-zero images: nothing to learn


def test_only_immutable_arrays_have_their_sparse_form_reused(mnist, small):
    from ex3lib.data import is_immutable
    from ex3lib.training import _sparse_memo

    assert is_immutable(mnist.x_train) and is_immutable(mnist.y_train)
    assert _sparse_memo(mnist.x_test, mnist.y_test, np.float64) is _sparse_memo(mnist.x_test, mnist.y_test,
                                                                                 np.float64)
    x = small.x_train.copy()
    x.flags.writeable = False
    assert not is_immutable(x) and not is_immutable(x[:10])
    assert _sparse_memo(x, small.y_train, np.float64) is not _sparse_memo(x, small.y_train, np.float64)


def test_train_size_at_or_above_the_data_is_recorded_as_all_of_it(small, tmp_path):
    assert RunConfig(train_size=100_000) == RunConfig(train_size=60_000) == RunConfig()
    assert RunConfig(train_size=100_000).train_size is None
    store = ex3lib.ResultsStore(tmp_path)
    assert store.key(RunConfig(train_size=100_000)) == store.key(RunConfig(train_size=60_000)) == store.key(
        RunConfig())
    assert RunConfig(train_size=59_999).train_size == 59_999
    hist = train(MLP((784, 8, 10)), small, train_size=500, epochs=1, progress=False)
    assert hist.config["train_size"] is None and hist.extra["n_train"] == 200
    assert RunConfig.from_history(hist).train_size is None


@pytest.mark.parametrize("optimiser, ignored", [
    ("sgd", {"b1": 0.5, "b2": 0.5, "eps": 1e-3}),
    ("adagrad", {"b1": 0.5, "b2": 0.5}),
    ("rmsprop", {"b1": 0.5}),
])
def test_hyper_parameters_an_optimiser_ignores_do_not_change_the_run(optimiser, ignored, tmp_path):
    plain = RunConfig(optimiser=optimiser)
    given = RunConfig(optimiser=optimiser, **ignored)
    assert given == plain and given.to_dict() == plain.to_dict()
    store = ex3lib.ResultsStore(tmp_path)
    assert store.key(given) == store.key(plain)


def test_hyper_parameters_an_optimiser_uses_still_count():
    assert RunConfig(optimiser="adam", b1=0.5) != RunConfig(optimiser="adam")
    assert RunConfig(optimiser="adam", b2=0.9) != RunConfig(optimiser="adam")
    assert RunConfig(optimiser="rmsprop", b2=0.99) != RunConfig(optimiser="rmsprop")
    assert RunConfig(optimiser="adagrad", eps=1e-6) != RunConfig(optimiser="adagrad")
    assert RunConfig(momentum=0.9) != RunConfig()
    # A changed optimiser takes its own default b2, not the one the other recorded.
    assert RunConfig().replace(optimiser="rmsprop").b2 == 0.9
    assert RunConfig(optimiser="rmsprop").replace(optimiser="adam").b2 == 0.999


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"b1": 1.5}, ValueError, "b1 must be a finite number in"),  # ignored by SGD, still checked
    ({"optimiser": "adam", "momentum": 0.9}, ValueError, "momentum applies to optimiser 'sgd' only"),
    ({"optimiser": "sdg"}, ValueError, r"optimiser must be one of .*; got 'sdg' \(did you mean 'sgd'\?\)"),
    ({"schedule": "linear_dacay", "lr_final": 0.01}, ValueError, r"did you mean 'linear_decay'\?"),
    ({"order": "shufle"}, ValueError, r"order must be one of .* \(did you mean 'shuffle'\?\)"),
    ({"dtype": "float16"}, ValueError, "dtype must be one of 'float64', 'float32'"),
    ({"layers": 5}, TypeError, r"layers must be a sequence of layer widths .* got 5 \(int\)"),
    ({"layers": "784,10"}, TypeError, "layers must be a sequence of layer widths"),
    ({"layers": (784, 1)}, ValueError, "layers: the output layer needs at least 2 classes"),
])
def test_run_config_refusals_name_the_parameter(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        RunConfig(**kwargs)


def test_near_miss_names_get_a_did_you_mean(small):
    with pytest.raises(TypeError, match=r"'learning_rat' \(did you mean 'learning_rate'\?\)"):
        train(MLP((784, 8, 10)), small, learning_rat=0.1)
    with pytest.raises(ValueError, match=r"unknown RunConfig field\(s\) \['lr_finl'\] \(did you mean 'lr_final'\?\)"):
        RunConfig.from_dict({"lr_finl": 0.1})
    with pytest.raises(TypeError, match="d must be a dict of RunConfig fields"):
        RunConfig.from_dict([("epochs", 1)])


# ---------------------------------------------------------------------------- histories as stored


def test_history_round_trips_non_finite_numbers_exactly():
    hist = ex3lib.History(config={"seed": 0}, epoch=np.array([0.0, 0.5, 1.0]),
                          loss=np.array([2.3, np.inf, np.nan]), test_loss=np.array([2.3, -np.inf, 1.0]),
                          test_accuracy=np.array([0.1, 0.2, 0.3]), learning_rate=np.array([np.nan, 0.1, 0.1]),
                          time=np.array([0.0, 1.0, 2.0]), seconds=2.0, diverged=True, reason="r",
                          extra={"effective_step": [[[np.inf, 1.0, -np.inf]]], "n": np.int64(3)})
    text = json.dumps(hist.to_dict(), allow_nan=False)  # strict JSON
    back = ex3lib.History.from_dict(json.loads(text))
    assert back.loss[1] == np.inf and np.isnan(back.loss[2]) and back.test_loss[1] == -np.inf
    assert np.isnan(back.learning_rate[0])
    assert back.extra["effective_step"][0][0][0] == np.inf and back.extra["effective_step"][0][0][2] == -np.inf
    assert back.extra["n"] == 3 and type(back.extra["n"]) is int


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(diverged="false"), "history.diverged must be true or false, got 'false'"),
    (lambda d: d.update(loss=[]), "history.loss must be a non-empty list of numbers"),
    (lambda d: d.update(loss=d["loss"][:-1]), "history's arrays must have one point each"),
    (lambda d: d.update(loss=["abc"] * len(d["loss"])), r"history.loss\[0\] must be a number, got 'abc'"),
    (lambda d: d.update(seconds="1"), "history.seconds must be a number"),
    (lambda d: d.update(reason=3), "history.reason must be text"),
    (lambda d: d.update(extra=[]), "history.extra must be a dict"),
    (lambda d: d.pop("time"), "missing: time"),
    (lambda d: d.update(lost=1), "unknown: lost"),
])
def test_history_from_dict_refuses_the_wrong_shape_naming_the_field(small, edit, message):
    d = train(MLP((784, 8, 10)), small, progress=False, **TINY).to_dict()
    edit(d)
    with pytest.raises(ValueError, match=re.escape(message) if "\\" not in message else message):
        ex3lib.History.from_dict(d)
    with pytest.raises(ValueError, match="a history must be a dict, got list"):
        ex3lib.History.from_dict([d])


def test_a_validation_set_is_held_out_from_the_end_of_the_training_images(small):
    """Training on the first n - v images with the last v held out is training on the first n - v."""
    config = dict(TINY, train_size=None, epochs=1)
    held = train(MLP((784, 8, 10)), small, progress=False, validation_size=50, **config)
    first = ex3lib.data.MNIST(small.x_train[:150], small.y_train[:150], small.x_test, small.y_test)
    plain = train(MLP((784, 8, 10)), first, progress=False, **config)
    for key in ("epoch", "loss", "test_loss", "test_accuracy", "learning_rate"):
        np.testing.assert_array_equal(getattr(held, key), getattr(plain, key))
    assert {**held.config, "validation_size": 0} == plain.config
    assert held.extra["n_train"] == 150 and held.extra["n_validation"] == 50
    assert held.extra["updates_at"] == plain.extra["updates_at"] == [0, 6, 12, 15]
    # The validation curve is the network's loss and accuracy on the last 50 images at each point.
    assert held.validation_accuracy.shape == held.test_accuracy.shape
    validation = ex3lib.data.MNIST(small.x_train[:150], small.y_train[:150], small.x_train[150:],
                                   small.y_train[150:])
    as_test = train(MLP((784, 8, 10)), validation, progress=False, **config)
    assert np.array_equal(held.validation_accuracy, as_test.test_accuracy)
    assert np.array_equal(held.validation_loss, as_test.test_loss)
    with pytest.raises(ValueError, match="held out no validation set.*validation_size"):
        plain.validation_accuracy


def test_validation_size_is_part_of_the_config_and_train_size_counts_what_is_left():
    assert RunConfig(validation_size=10_000) != RunConfig()
    assert RunConfig(validation_size=10_000, train_size=50_000).train_size is None
    assert RunConfig(validation_size=10_000, train_size=49_999).train_size == 49_999
    assert RunConfig.from_dict(RunConfig(validation_size=10).to_dict()).validation_size == 10


def test_keep_params_keeps_the_final_parameters(small):
    net = MLP((784, 8, 10))
    hist = train(net, small, progress=False, keep_params=True, **TINY)
    assert np.array_equal(hist.params, net.params) and hist.params is not net.params
    assert train(MLP((784, 8, 10)), small, progress=False, **TINY).params is None
    assert "params" not in hist.to_dict()
