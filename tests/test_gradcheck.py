import numpy as np
import pytest

from ex3lib import MLP
from ex3lib import kernels
from ex3lib.gradcheck import METHODS, gradcheck, h_sweep

from ex3lib.reference import forward


def _sample(small, i=0):
    return small.x_train[i], int(small.y_train[i])


def _loss(net, x, y):
    logits = forward(net.weights, x[None, :], net.biases or None)[-1][0]
    z = logits - logits.max()
    return float(np.log(np.exp(z).sum()) - z[y])


@pytest.mark.parametrize("bias", [False, True])
def test_perturbed_losses_match_a_full_forward_pass(small, bias):
    """The incremental re-evaluation equals recomputing the whole network with the moved weight."""
    net = MLP((784, 12, 9, 10), seed=2, bias=bias)
    if bias:
        for b in net.biases:
            b[:] = 0.05
    x, y = _sample(small)
    Z, H = net.forward_trace(x)
    a = net.arrays()
    rng = np.random.default_rng(0)
    for layer in range(3):
        out = np.empty(net.weights[layer].shape + (1,))
        x_in = x if layer == 0 else H[layer - 1]
        kernels.perturbed_losses(a.weights, a.biases, a.has_bias, tuple(Z), tuple(H), y, layer,
                                  np.ascontiguousarray(x_in), np.array([1e-3]), out)
        w = net.weights[layer]
        for _ in range(10):
            i = rng.integers(w.shape[0]) if layer else int(np.nonzero(x)[0][rng.integers(np.count_nonzero(x))])
            j = rng.integers(w.shape[1])
            old = w[i, j]
            w[i, j] = old + 1e-3
            assert out[i, j, 0] == pytest.approx(_loss(net, x, y), rel=1e-12, abs=1e-14)
            w[i, j] = old


def test_all_weights_central_beats_one_sided(small):
    net = MLP((784, 30, 20, 10), seed=1)
    x, y = _sample(small, 3)
    check = gradcheck(net, x, y, h=1e-5)
    assert check.n_weights == 784 * 30 + 30 * 20 + 20 * 10
    for method in METHODS:
        rel = check.rel_error(method)
        assert rel.size == check.informative(method).sum() > 0
        assert check.abs_error(method).shape == (check.n_weights,)
    central = check.rel_error("central")
    assert np.median(central) < 1e-8 and central.mean() < 1e-5
    for one_sided in ("forward", "backward"):
        assert np.median(central) < np.median(check.rel_error(one_sided)) / 10


def test_pixels_that_are_zero_give_exactly_zero_gradients(small):
    net = MLP((784, 8, 10), seed=0)
    x, y = _sample(small)
    check = gradcheck(net, x, y, layers=0)
    zero_rows = x == 0
    for method in METHODS:
        assert not check.numeric[method][0][zero_rows].any()
    assert not check.analytic[0][zero_rows].any()


def test_h_sweep_shows_truncation_and_round_off(small):
    net = MLP((784, 16, 10), seed=0)
    x, y = _sample(small, 1)
    sweep = h_sweep(net, x, y, hs=[1e-3, 1e-6, 1e-12])
    np.testing.assert_array_equal(sweep.hs, [1e-3, 1e-6, 1e-12])
    for method in METHODS:
        e = sweep.mean[method]
        assert e[1] < e[0] and e[1] < e[2]
        assert sweep.median[method][1] < sweep.median[method][2]  # round-off grows as h shrinks
    assert sweep.mean["central"][0] < sweep.mean["forward"][0]
    assert sweep.median["central"][0] < sweep.median["forward"][0]


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"h": 0.0}, ValueError, "h must"),
    ({"layers": [5]}, ValueError, "layers"),
    ({"layers": [0, 0]}, ValueError, "distinct"),
    ({"y": 10}, ValueError, "y must"),
    ({"x": np.zeros(783)}, ValueError, "x must be one sample"),
])
def test_bad_gradcheck_arguments(small, kwargs, exc, word):
    x, y = _sample(small)
    args = {"x": x, "y": y, **kwargs}
    with pytest.raises(exc, match=word):
        gradcheck(MLP((784, 8, 10)), args.pop("x"), args.pop("y"), **args)


def test_float32_network_is_refused(small):
    with pytest.raises(ValueError, match="float64"):
        gradcheck(MLP((784, 8, 10), dtype=np.float32), *_sample(small))


def test_h_sweep_medians_are_gradcheck_medians(small):
    """Each step of the sweep gives bit for bit the mean and median of a gradcheck with that step."""
    net = MLP((784, 12, 9, 10), seed=3)
    x, y = _sample(small, 2)
    sweep = h_sweep(net, x, y, hs=[1e-2, 1e-5, 1e-9])
    for i, step in enumerate(sweep.hs):
        check = gradcheck(net, x, y, h=step)
        for method in METHODS:
            assert sweep.mean[method][i] == check.mean_rel_error(method)
            assert sweep.median[method][i] == check.median_rel_error(method)


def test_layer_summary_and_tables(small):
    from ex3lib.gradcheck import layer_table, sample_table, samples_summary, summary

    net = MLP((784, 12, 10), seed=0)
    x, y = _sample(small)
    check = gradcheck(net, x, y, h=1e-6)
    for layer in (0, 1):
        alone = gradcheck(net, x, y, h=1e-6, layers=layer)
        np.testing.assert_array_equal(check.layer(layer).rel_error("central"), alone.rel_error("central"))
    s = summary(check, x)
    zero_pixels = int((x == 0).sum())
    assert s["n_zero_pixels"] == zero_pixels and s["n_zero_pixel"] == f"{zero_pixels * 12:,}"
    assert s["n_weights"] == f"{784 * 12 + 12 * 10:,}" and s["median_central"] == check.median_rel_error("central")
    per_layer = layer_table(net, check)
    assert per_layer.index.tolist() == ["0 (784→12)", "1 (12→10)"]
    assert per_layer["weights"].tolist() == [784 * 12, 120]
    per_sample = sample_table(net, small.x_train[:3], small.y_train[:3], h=1e-6)
    assert per_sample.index.tolist() == [0, 1, 2] and per_sample["label"].tolist() == small.y_train[:3].tolist()
    spread = samples_summary(per_sample)
    assert spread["samples_min_median"] <= spread["samples_max_median"]
    wins = [all(per_sample.loc[i, f"central {s}"] < per_sample.loc[i, f"{m} {s}"]
                for m in ("forward", "backward") for s in ("mean", "median")) for i in per_sample.index]
    assert spread["central_best"] == sum(wins)
    assert spread["central_best_text"] == ("every sample" if all(wins) else f"{sum(wins)} of the 3 samples")
    # One sample where the forward difference's median is the smallest: the count and the words follow.
    edited = per_sample.copy()
    edited.loc[1, "forward median"] = edited.loc[1, "central median"] / 2
    assert samples_summary(edited)["central_best"] == sum(wins) - wins[1]
    assert samples_summary(edited)["central_best_text"] == f"{sum(wins) - wins[1]} of the 3 samples"


def test_slope_and_sweep_summary():
    from ex3lib.gradcheck import HSweep, slope, sweep_summary

    hs = np.logspace(-1, -12, 45)
    assert slope(hs, 3 * hs ** 2, 1e-4, 1e-2) == pytest.approx(2.0)
    # A V-shaped error: truncation h (one-sided) or h² (central) above the optimum, round-off 1e-16/h below.
    one_sided = hs + 1e-10 / hs
    central = hs ** 2 + 1e-10 / hs
    sweep = HSweep(hs, {m: central if m == "central" else one_sided for m in METHODS},
                   {m: central if m == "central" else one_sided for m in METHODS})
    s = sweep_summary(sweep, 1e-8)
    assert s["best_h_central"] > s["best_h_forward"] and s["slope_round_forward"] == pytest.approx(-1.0, abs=0.01)
    assert s["slope_trunc_central"] == pytest.approx(2.0, abs=0.05) and s["at_h"]["central"] == pytest.approx(1e-2, rel=0.01)
    assert s["decades"] == pytest.approx(np.log10(s["best_h_central"] / 1e-8))


@pytest.mark.parametrize("hs, exc, message", [
    ("abc", TypeError, r"hs must be a sequence of finite steps > 0 .* got 'abc' \(str\)"),
    (1e-3, TypeError, r"hs must be a sequence of finite steps > 0"),
    ([1e-3, "x"], TypeError, r"hs\[1\] must be a real number, got 'x'"),
    ([1e-3, 0.0], ValueError, r"hs\[1\] must be a finite number in \(0, inf\), got 0\.0"),
    ([1e-3, float("nan")], ValueError, r"hs\[1\] must be a finite number"),
    ([], ValueError, "hs must be a non-empty list"),
])
def test_h_sweep_refuses_bad_steps_naming_them(hs, exc, message):
    net = MLP((784, 8, 10), seed=0)
    x = np.zeros(784)
    x[300:320] = 0.5
    with pytest.raises(exc, match=message):
        h_sweep(net, x, 3, hs=hs)


@pytest.mark.parametrize("x", ["abc", [None] * 784, {"a": 1}])
def test_gradcheck_refuses_a_sample_that_is_no_numbers(x):
    with pytest.raises(TypeError, match="x must be one sample: an array of 784 real numbers"):
        gradcheck(MLP((784, 8, 10)), x, 3)
