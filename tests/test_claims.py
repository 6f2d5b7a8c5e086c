import numpy as np
import pytest

from ex3lib import claims
from ex3lib.analysis import pixel_activity
from synthetic import dead, hist, overflow, seeds


def sgd_grid(acc, n=3):
    """SGD runs on the report's grid; ``acc[(lr, m)]`` is a setting's mean final accuracy, or "dead"."""
    runs = []
    for lr in (0.1, 0.01, 0.001):
        for m in (1, 10, 100):
            a = acc.get((lr, m), 0.97)
            if a == "dead":
                runs += [dead(learning_rate=lr, batch_size=m, seed=s) for s in range(n)]
            else:
                runs += seeds(a, n, learning_rate=lr, batch_size=m)
    return runs


def test_claim_record_and_table():
    c = claims.Claim("a claim", "§9", "holds", "because", {"x": 1})
    assert c.title == "§9: a claim"
    table = claims.table([c])
    assert table.columns.tolist() == ["claim (report section)", "verdict", "evidence (this book)"]
    assert table.iloc[0].tolist() == ["§9: a claim", "holds", "because"]


@pytest.mark.parametrize("fates, verdict", [("fff", "holds"), ("ffo", "partly"), ("ooo", "does not hold")])
def test_sgd_unstable_online(fates, verdict):
    runs = [dead(learning_rate=0.1, batch_size=1, seed=i) if f == "f" else hist(0.97, learning_rate=0.1, batch_size=1, seed=i)
            for i, f in enumerate(fates)]
    c = claims.sgd_unstable_online(runs)
    assert c.verdict == verdict and c.section == "§2.1"
    assert c.numbers["n_failed"] == fates.count("f")
    assert claims.sgd_unstable_online(runs[:0]).verdict == claims.UNTESTED


@pytest.mark.parametrize("a1, a2, verdict", [(0.97, 0.96, "holds"), (0.97, 0.9, "partly"), (0.9, 0.9, "does not hold")])
def test_sgd_remedy(a1, a2, verdict):
    c = claims.sgd_remedy(sgd_grid({(0.01, 1): a1, (0.1, 10): a2}))
    assert c.verdict == verdict
    assert c.numbers["min_acc_001_1"] == pytest.approx(a1 - 0.001)


@pytest.mark.parametrize("a10, a100, verdict", [(0.95, 0.87, "holds"), (0.975, 0.87, "partly"),
                                                (0.975, 0.97, "does not hold")])
def test_sgd_slow_large_batch(a10, a100, verdict):
    c = claims.sgd_slow_large_batch(sgd_grid({(0.1, 1): "dead", (0.001, 10): a10, (0.001, 100): a100, (0.1, 10): 0.98}))
    assert c.verdict == verdict
    assert c.numbers["updates_100"] == 1000 and "best SGD: 0.9800" in c.evidence


@pytest.mark.parametrize("accs, verdict", [((0.978, 0.978, 0.977), "holds"), ((0.978, 0.95, 0.95), "partly"),
                                           ((0.95, 0.95, 0.95), "does not hold")])
def test_sgd_balance(accs, verdict):
    acc = dict(zip(claims.BALANCED, accs))
    acc[(0.01, 1)] = 0.98
    c = claims.sgd_balance(sgd_grid(acc))
    assert c.verdict == verdict
    assert c.numbers["best_label"] == "η = 0.01, m = 1"
    assert c.numbers["balance_verdict"].startswith("Within two seed standard deviations")


def test_sgd_step_per_sample_reads_accuracy_as_a_function_of_eta_over_m():
    by_ratio = {lr / m: 0.9 + 0.01 * np.log10(lr / m) for lr in (0.1, 0.01, 0.001) for m in (1, 10, 100)}
    holds = claims.sgd_step_per_sample(sgd_grid({(lr, m): 0.95 + 0.005 * np.log10(lr / m) for lr in (0.1, 0.01, 0.001)
                                                 for m in (1, 10, 100)}))
    assert holds.verdict == "holds" and holds.numbers["within_spread"] < 1e-9 and by_ratio
    rng = np.random.default_rng(0)
    noisy = claims.sgd_step_per_sample(sgd_grid({(lr, m): 0.95 + 0.01 * rng.standard_normal()
                                                 for lr in (0.1, 0.01, 0.001) for m in (1, 10, 100)}))
    assert noisy.verdict in ("partly", "does not hold") and noisy.numbers["ratio_r2_pct"] < 80
    flat = {(lr, m): 0.95 + (0.01 if m == 10 else 0.0) for lr in (0.1, 0.01, 0.001) for m in (1, 10, 100)}
    assert claims.sgd_step_per_sample(sgd_grid(flat)).verdict == "does not hold"


def test_sgd_steady_convergence():
    rising = np.concatenate([[0.1], np.linspace(0.95, 0.98, 20)])
    wobbly = rising.copy()
    wobbly[10] = 0.9
    assert claims.sgd_steady_convergence([hist(rising, learning_rate=0.1, batch_size=10, seed=s)
                                          for s in range(2)]).verdict == "holds"
    assert claims.sgd_steady_convergence([hist(wobbly, learning_rate=0.1, batch_size=10)]).verdict == "partly"
    assert claims.sgd_steady_convergence([hist(rising - 0.05, learning_rate=0.1, batch_size=10)]).verdict == "does not hold"


def _long(late_amplitude, drift=0.0, n=2):
    e = np.arange(41) * 0.5
    runs = []
    for s in range(n):
        acc = 0.97 + 0.002 * (-1) ** np.arange(41) + drift * (e >= 10) * (e - 10) / 10
        acc[e > 10] += late_amplitude * (-1) ** np.arange(41)[e > 10]
        acc[0] = 0.1
        runs.append(hist(acc, seed=s))
    return runs


def test_sgd_zigzag_grows():
    assert claims.sgd_zigzag_grows(_long(0.003), 10).verdict == "holds"
    assert claims.sgd_zigzag_grows(_long(-0.0015), 10).verdict == "does not hold"
    assert claims.sgd_zigzag_grows([hist([0.1, 0.9, 0.95], seed=0)], 10).verdict == claims.UNTESTED


def test_sgd_plateau():
    climbing = [hist(np.concatenate([[0.1], np.linspace(0.95, 0.99, 40)]), seed=s) for s in range(2)]
    assert claims.sgd_plateau(climbing, 10).verdict == "does not hold"  # every late step goes up
    assert claims.sgd_plateau(_long(0.0, drift=0.0005), 10).verdict == "partly"
    flat = _long(0.0)
    flat[0].test_accuracy[-1] -= 0.0005
    assert claims.sgd_plateau(flat, 10).verdict == "holds"


def test_sgd_table2():
    from ex3lib.report import TABLE2
    exact = {k: v[1] for k, v in TABLE2.items() if k != (0.1, 1)}
    exact[(0.1, 1)] = "dead"
    assert claims.sgd_table2(sgd_grid(exact)).verdict == "holds"
    one_off = dict(exact)
    one_off[(0.001, 100)] = 0.95
    c = claims.sgd_table2(sgd_grid(one_off))
    assert c.verdict == "partly" and "η = 0.001, m = 100" in c.evidence
    assert claims.sgd_table2(sgd_grid({k: 0.5 if v == "dead" else v - 0.02 for k, v in exact.items()})).verdict == \
        "does not hold"


def _decay(acc_decay, acc_const, loss_decay, loss_const, m=10):
    decay = [hist(acc_decay + 0.0005 * s, loss=loss_decay, schedule="linear_decay", learning_rate=0.1,
                  lr_final=0.001, batch_size=m, seed=s) for s in range(3)]
    const = [hist(acc_const + 0.0005 * s, loss=loss_const, learning_rate=0.1, batch_size=m, seed=s) for s in range(3)]
    return decay, const


@pytest.mark.parametrize("args, verdict", [((0.983, 0.977, 0.002, 0.02), "holds"), ((0.9772, 0.977, 0.002, 0.02), "partly"),
                                           ((0.97, 0.977, 0.03, 0.02), "does not hold")])
def test_decay_improves(args, verdict):
    decay, const = _decay(*args)
    c = claims.decay_improves(decay, const)
    assert c.verdict == verdict
    assert c.numbers["acc_d10"] == pytest.approx(args[0] + 0.0005)
    assert c.numbers["loss_ratio10"] == pytest.approx(args[3] / args[2])


@pytest.mark.parametrize("n_diverged, verdict", [(3, "holds"), (1, "partly"), (0, "does not hold")])
def test_decay_fails_online(n_diverged, verdict):
    kw = dict(schedule="linear_decay", learning_rate=0.1, lr_final=0.001, batch_size=1)
    runs = [dead(seed=0, **kw) if n_diverged > 0 else hist(0.9, seed=0, **kw),
            overflow(seed=1, **kw) if n_diverged > 2 else hist(0.9, seed=1, **kw),
            dead(seed=2, **kw) if n_diverged > 2 else hist(0.098, seed=2, **kw)]
    c = claims.decay_fails_online(runs, [dead(learning_rate=0.1, batch_size=1)])
    assert c.verdict == verdict
    assert c.numbers["d1_diverged"] == n_diverged and c.numbers["c1_failed"] == 1
    if n_diverged == 3:
        assert (c.numbers["d1_dead"], c.numbers["d1_nan"], c.numbers["d1_failed"]) == (2, 1, 3)


@pytest.mark.parametrize("sign, noise, verdict", [(-1, 0.0, "holds"), (-1, 5.0, "partly"), (1, 0.0, "does not hold")])
def test_adagrad_rare_features(sign, noise, verdict):
    rng = np.random.default_rng(1)
    activity = np.concatenate([np.zeros(5), rng.random(95)])
    step = np.exp(sign * activity * 3 + noise * rng.standard_normal(100))
    step[:5] = step.max() * 10
    run = hist(0.98, optimiser="adagrad", learning_rate=0.01, extra={"first_layer_step_by_input": step.tolist()})
    c = claims.adagrad_rare_features([run], activity)
    assert c.verdict == verdict
    assert c.numbers["n_never_active"] == 5


def test_pixel_activity():
    x = np.array([[0.0, 0.5, 0.0], [0.0, 0.2, 0.1]])
    np.testing.assert_allclose(pixel_activity(x), [0.0, 1.0, 0.5])


def _adagrad_grid(acc, optimiser="adagrad"):
    return [hist(acc[(lr, m)], optimiser=optimiser, learning_rate=lr, batch_size=m)
            for lr in (0.1, 0.01, 0.001) for m in (1, 10, 100)]


def test_adagrad_no_tuning():
    sgd = _adagrad_grid({(lr, m): 0.97 - 0.02 * abs(np.log10(lr / m) + 3) for lr in (0.1, 0.01, 0.001)
                         for m in (1, 10, 100)}, "sgd")
    calm = _adagrad_grid({(lr, m): 0.975 + (0.002 if lr == 0.01 else 0.0) for lr in (0.1, 0.01, 0.001)
                          for m in (1, 10, 100)})
    c = claims.adagrad_no_tuning(calm, sgd + [hist(0.5, learning_rate=0.1, batch_size=1, seed=1)])
    assert c.verdict == "holds" and "(seed 0)" in c.evidence  # the seed-1 SGD run is not compared
    assert c.numbers["ada_one_lr_text"] == "the same η is best for every batch size"
    mixed = _adagrad_grid({(lr, m): 0.975 + (0.03 if (lr, m) in ((0.1, 1), (0.001, 100)) else 0.0)
                           for lr in (0.1, 0.01, 0.001) for m in (1, 10, 100)})
    assert claims.adagrad_no_tuning(mixed, sgd).verdict == "partly"
    wild = _adagrad_grid({(lr, m): 0.9 if lr == 0.1 else 0.98 for lr in (0.1, 0.01, 0.001) for m in (1, 10, 100)})
    assert claims.adagrad_no_tuning(wild, sgd).verdict == "does not hold"
    assert claims.adagrad_no_tuning([], sgd).verdict == claims.UNTESTED


def _steps(rising):
    # (points, layers, percentiles) effective steps that shrink, or rise once.
    s = np.array([[[1.0 / (t + 1) * q for q in (0.5, 1.0, 2.0)] for _ in range(4)] for t in range(5)])
    if rising:
        s[3, 2, 1] = 1.0
    return s.tolist()


@pytest.mark.parametrize("rising, verdict", [(False, "holds"), (True, "does not hold")])
def test_adagrad_monotone_decay(rising, verdict):
    run = hist([0.1, 0.9, 0.95, 0.96, 0.97], optimiser="adagrad", learning_rate=0.01,
               extra={"effective_step": _steps(rising)})
    c = claims.adagrad_monotone_decay([run])
    assert c.verdict == verdict
    assert c.numbers["shrink_min"] == pytest.approx(2.5) or rising


# Under the fair protocol: ten seeds, the decision rule of ex3lib.protocol.decide.

def ten(acc, shift=0.0, **config):
    """Ten seeds whose final test accuracies are ``acc`` + a seed effect (shared by every setting) + ``shift``."""
    effect = np.linspace(-0.002, 0.002, 10)
    return [hist(acc + e + shift + 1e-5 * (i % 3), seed=i, **config) for i, e in enumerate(effect)]


@pytest.mark.parametrize("gain, verdict", [(0.002, "holds"), (0.0, "partly"), (-0.002, "does not hold")])
def test_fair_decay_and_momentum_improve(gain, verdict):
    sgd = ten(0.978)
    decay = ten(0.978, gain, schedule="linear_decay", lr_final=0.001)
    momentum = ten(0.978, gain, momentum=0.9)
    c = claims.fair_decay_improves(decay, sgd)
    assert c.verdict == verdict and c.section == "§3.1" and "→ " + verdict in c.evidence
    assert claims.fair_momentum_improves(momentum, sgd).verdict == verdict
    assert claims.fair_decay_improves([], sgd).verdict == claims.UNTESTED


def test_fair_balance_is_non_inferiority_within_the_margin():
    tuned = ten(0.980, learning_rate=0.05)
    close = {(0.1, 100): ten(0.979, learning_rate=0.1, batch_size=100),
             (0.01, 10): ten(0.9795, learning_rate=0.01), (0.001, 1): ten(0.9785, learning_rate=0.001, batch_size=1)}
    assert claims.fair_balance(close, tuned).verdict == "holds"
    far = {**close, (0.001, 1): ten(0.970, learning_rate=0.001, batch_size=1)}
    c = claims.fair_balance(far, tuned)
    assert c.verdict == "partly" and c.numbers["part_verdicts"] == ["holds", "holds", "does not hold"]
    assert claims.fair_balance({k: ten(0.95, **dict(zip(("learning_rate", "batch_size"), k)))
                                for k in close}, tuned).verdict == "does not hold"


def test_fair_adagrad_premature_needs_both():
    ada = ten(0.975, optimiser="adagrad")
    better, same = ten(0.978, optimiser="rmsprop"), ten(0.975, optimiser="adam")
    assert claims.fair_adagrad_premature(ada, better, ten(0.979, optimiser="adam")).verdict == "holds"
    assert claims.fair_adagrad_premature(ada, better, same).verdict == "partly"


def _sharpness(ratio):
    """Measurements where λ_max at m=100 is ``ratio`` times that at m=1, three seeds, two groups."""
    rows = []
    for group in ("equal η/m", "equal η"):
        for m, scale in ((1, 1.0), (10, 1.0), (100, ratio)):
            for seed, wobble in enumerate((0.9, 1.0, 1.1)):
                rows.append({"group": group, "batch_size": m, "learning_rate": 0.01 * m, "seed": seed,
                             "top_eigenvalue": 20.0 * scale * wobble * (1 + 0.01 * seed * (m == 100))})
    return rows


@pytest.mark.parametrize("ratio, verdict", [(3.0, "holds"), (0.3, "does not hold")])
def test_sharp_minima(ratio, verdict):
    c = claims.sharp_minima(_sharpness(ratio))
    assert c.verdict == verdict and "equal η/m" in c.evidence and "equal η:" in c.evidence
    mixed = [r for r in _sharpness(3.0) if r["group"] == "equal η/m"] + [
        r for r in _sharpness(0.3) if r["group"] == "equal η"]
    assert claims.sharp_minima(mixed).verdict == "partly"
    assert claims.sharp_minima([]).verdict == claims.UNTESTED


def test_batch_increase_equivalent():
    decay = [hist(0.983 + 0.0002 * i, seed=i, extra={"updates": 60000}) for i in range(3)]
    growing = [hist(0.9831 + 0.0002 * i, seed=i, extra={"updates": 33393}) for i in range(3)]
    c = claims.batch_increase_equivalent(growing, decay)
    assert c.verdict == "holds" and c.numbers["updates_ratio"] == pytest.approx(33393 / 60000)
    worse = [hist(0.970 + 0.0002 * i, seed=i, extra={"updates": 33393}) for i in range(3)]
    assert claims.batch_increase_equivalent(worse, decay).verdict == "does not hold"
    more = [hist(0.9831 + 0.0002 * i, seed=i, extra={"updates": 90000}) for i in range(3)]
    assert claims.batch_increase_equivalent(more, decay).verdict == "partly"


def test_sharp_minima_reports_the_ratios():
    rows = [dict(r, loss=0.02 * (5 if r["batch_size"] == 100 else 1)) for r in _sharpness(3.0)]
    c = claims.sharp_minima(rows)
    assert "equal η/m, m = 100 against m = 1: λ_max × 3" in c.numbers["ratios"]
    assert "training loss × 5" in c.numbers["ratios"]
