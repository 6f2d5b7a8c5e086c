import numpy as np
import pytest

from ex3lib import analysis
from synthetic import blown_up, dead, hist, overflow, seeds


def test_mean_curve_and_curve_shape():
    a = hist([0.1, 0.9, 0.95, 0.94, 0.96], loss=[2.3, 0.5, 0.3, 0.31, 0.2], test_loss=[2.3, 0.4, 0.3, 0.35, 0.36])
    b = hist([0.1, 0.9, 0.95], loss=[2.3, 0.5, 0.3], test_loss=[2.3, 0.4, 0.3], seed=1)
    epoch, acc = analysis.mean_curve([a, b])
    np.testing.assert_allclose(epoch, [0, 0.5, 1.0])
    s = analysis.curve_shape([a])
    assert (s["loss0"], s["loss_half"], s["acc_half"], s["n_steps"]) == (2.3, 0.5, 0.9, 4)
    assert (s["loss_ups"], s["acc_downs"]) == (1, 1)
    assert (s["test_loss_min"], s["test_loss_argmin"], s["test_loss"]) == (0.3, 1.0, 0.36)
    assert np.isnan(analysis.curve_shape([hist([0.1])])["acc_half"])


def test_second_half_gain():
    h = hist(np.linspace(0.5, 0.9, 21))  # 10 epochs, 0.5 -> 0.9
    assert analysis.second_half_gain(h) == pytest.approx(0.2)
    assert analysis.mean_second_half_gain([h, h]) == pytest.approx(0.2)
    assert np.isnan(analysis.mean_second_half_gain([]))


def test_epoch_rhythm_and_zigzag():
    e = np.arange(41) * 0.5
    acc = 0.97 + 0.002 * (e % 1 == 0.5)  # first half of every epoch 0.2 points higher
    acc[0] = 0.1
    z = analysis.zigzag([hist(acc), hist(acc, seed=1)], 10)
    assert analysis.epoch_rhythm(hist(acc)) == pytest.approx(0.002)
    np.testing.assert_allclose(z["rhythms"], 0.002)
    np.testing.assert_allclose(z["ranges"], 0.002)
    assert z["step_late"] == pytest.approx(0.002) and z["step_early"] == pytest.approx(0.002)
    assert z["range_pp"] == "0.20 ± 0.00" and z["gain"] == "0.0000 ± 0.0000"


def test_late_wiggle_and_wiggle_stats():
    h = hist([0.1, 0.9, 0.95, 0.93, 0.96, 0.97], loss=[2, 1, 0.5, 0.6, 0.4, 0.3])
    step, drop, drops, n = analysis.late_wiggle(h, 0.9)
    assert (drops, n) == (1, 3) and drop == pytest.approx(0.02) and step == pytest.approx(0.06 / 3 * 1.0 + 0.0, abs=0.01)
    w = analysis.wiggle_stats([h], 0.9)
    assert w["n_steps"] == 3 and w["drops"] == 1.0 and w["loss_rises"] == 1.0
    assert np.isnan(analysis.late_wiggle(h, 5)[0])


def test_lead_in_percentage_points():
    a, b = hist([0.1, 0.9, 0.95, 0.96]), hist([0.1, 0.8, 0.9, 0.94], seed=1)
    assert analysis.lead([a], [b], 0, 1.0) == pytest.approx(100 * (0.925 - 0.85))
    assert analysis.lead([a], [b], 1.0) == pytest.approx(2.0)


def test_collapse_sorts_the_fates():
    y_test = np.array([0] * 98 + [1] * 902)
    limp = hist([0.1, 0.098, 0.098], loss=np.log(10) + 1e-6, seed=2)
    c = analysis.collapse([dead(), overflow(seed=1), limp], y_test)
    assert (c["zeros"], c["n_test"], c["n_dead"], c["n_nan"], c["n_limp"]) == (98, 1000, 1, 1, 1)
    assert c["n_collapsed"] == 3 and c["limp_n_zero"] == 2 and c["limp_n_points"] == 2
    assert c["dead_loss_gap"] == 0.0 and c["limp_gap"] == pytest.approx(1e-6)


def test_overflow_probe():
    h = overflow()
    ks = analysis.overflow_probe_updates(h)
    assert ks[-1] == 999 and ks[0] == 1000 - 64 and ks == sorted(set(ks))
    probes = [hist([0.1, 0.5], test_loss=[2.3, v]) for v in (1.0, 5.0, np.inf)]
    p = analysis.overflow_probe(h, probes, [10, 20, 30])
    assert (p["tloss_first"], p["tloss_last"], p["window"]) == (1.0, 5.0, 10)


def _grid(acc):
    return [h for (lr, m), a in acc.items() for h in (seeds(a, learning_rate=lr, batch_size=m) if a != "dead"
                                                      else [dead(learning_rate=lr, batch_size=m)])]


def test_ratio_groups_and_ok_settings():
    runs = _grid({(0.1, 1): "dead", (0.1, 10): 0.98, (0.01, 1): 0.98, (0.01, 10): 0.97, (0.001, 1): 0.97,
                  (0.001, 10): 0.9})
    assert set(analysis.ok_settings(runs)) == {(0.1, 10), (0.01, 1), (0.01, 10), (0.001, 1), (0.001, 10)}
    r = analysis.ratio_groups(runs)
    assert r["n_ok_settings"] == 5 and r["within_spread"] == pytest.approx(0.0)
    assert r["ratio_r2_pct"] == pytest.approx(100.0)
    assert r["typical_std"] == pytest.approx(0.001)


def test_within_noise_and_compare_seeds():
    best, close, far = seeds(0.98), seeds(0.979), seeds(0.97)
    assert analysis.within_noise(best, close) and not analysis.within_noise(best, far)
    assert analysis.compare_seeds(best, far) and not analysis.compare_seeds(best, close)


def test_paired_difference():
    d = analysis.paired_difference(seeds(0.98), seeds(0.97))
    assert d["diff_mean"] == pytest.approx(0.01) and d["n_seeds_better"] == 3 and d["verdict"] == "larger than"
    one = analysis.paired_difference(seeds(0.98, n=1), seeds(0.97, n=1))
    assert np.isnan(one["diff_std"]) and np.isnan(one["noise"]) and one["verdict"] == "within"


def _adaptive(steps, lr=0.01, eps=1e-8, optimiser="adagrad"):
    return hist([0.1] + [0.9] * (len(steps) - 1), optimiser=optimiser, learning_rate=lr, eps=eps,
                extra={"effective_step": steps})


def test_step_decay_and_ceiling():
    shrinking = [[[4.0 / (t + 1)] * 3] * 4 for t in range(5)]
    s = analysis.step_decay(_adaptive(shrinking))
    assert s["monotone"] and s["shrink_min"] == pytest.approx(2.5) and s["half_epoch"] == 1.5
    poised = [[[1.0] * 3] * 4, [[5.0] * 3] * 4, [[100.0] * 3] * 4]
    c = analysis.step_ceiling(_adaptive(poised, lr=0.001, eps=1e-8, optimiser="rmsprop"), factor=0.5)
    assert c["ceiling"] == pytest.approx(10.0) and c["at_ceiling"] == 4 and not c["monotone"]


def test_pixel_steps():
    activity = np.array([0.0, 0.0] + list(np.linspace(0.01, 1, 20)))
    step = np.array([9.0, 9.0] + list(np.linspace(2, 0.1, 20)))
    p = analysis.pixel_steps(hist(0.9, extra={"first_layer_step_by_input": step.tolist()}), activity)
    assert p["pixel_rho"] == pytest.approx(-1.0) and p["n_never_active"] == 2 and p["never_step"] == 9.0
    assert p["rare_over_common"] > 1


def test_accuracy_range_over_lr():
    runs = _grid({(0.1, 10): 0.98, (0.01, 10): 0.96, (0.1, 100): 0.9, (0.01, 100): 0.95})
    r = analysis.accuracy_range_over_lr(runs, [10, 100])
    assert r[10] == (pytest.approx(0.02), 0.1) and r[100] == (pytest.approx(0.05), 0.01)


def test_versus_grid_versus_and_stats():
    mom = _grid({(0.1, 1): "dead", (0.1, 10): 0.975, (0.01, 10): 0.98})
    sgd = _grid({(0.1, 1): "dead", (0.1, 10): 0.977, (0.01, 10): 0.97})
    rows = analysis.versus(mom, sgd)
    assert [(r["learning_rate"], r["batch_size"], r["alive"]) for r in rows] == [(0.1, 1, False), (0.1, 10, True),
                                                                                 (0.01, 10, True)]
    g = analysis.grid_versus(mom, sgd)
    assert (g["best_lr"], g["best_m"], g["n_collapsed"], g["collapsed_list"]) == (0.01, 10, 1, "η = 0.1, m = 1")
    assert (g["n_sgd_collapsed"], g["n_survivors"], g["n_mom_better"], g["time_ratio"]) == (1, 2, 1, 1.0)
    s = analysis.versus_stats(rows)
    assert (s["n"], s["same_fate"], s["n_alive"], s["n_better"]) == (3, 3, 2, 1)
    assert s["max_abs_diff"] == pytest.approx(0.01) and (s["max_lr"], s["max_m"]) == (0.01, 10)
    shifted = analysis.versus(mom, sgd, lambda lr, m: (lr * 10, m) if lr < 0.1 else None)
    assert [(r["learning_rate"], r["base_learning_rate"]) for r in shifted] == [(0.01, 0.1)]
    assert np.isnan(analysis.versus_stats([])["max_gain"])


def test_best_batch_size_and_combined():
    kw = dict(schedule="linear_decay", learning_rate=0.1, lr_final=0.001)
    comb = [dead(batch_size=10, momentum=0.9, **kw)] + seeds(0.98, batch_size=100, momentum=0.9, **kw)
    decay = seeds(0.983, batch_size=10, **kw) + seeds(0.977, batch_size=100, **kw)
    assert analysis.best_batch_size(comb, [10, 100]) == 100 and analysis.best_batch_size(comb[:1], [10]) is None
    c = analysis.combined(comb, decay, [10, 100], 0.9)
    assert c["comb_failed_ms"] == "m = 10 (1 of 1)" and c["comb_best_m"] == 100 and c["decay_best_m"] == 10
    assert c["comb_best_acc_mean"] == pytest.approx(0.98) and c["decay_same_m_acc_mean"] == pytest.approx(0.977)
    assert c["comb_equiv_m"] == pytest.approx(10.0)


def test_rank_methods_setting_range_and_speedups():
    best = {"SGD": seeds(0.977, spread=0.003, learning_rate=0.1), "Adam": seeds(0.978, optimiser="adam", learning_rate=0.001),
            "RMSProp": seeds(0.96, optimiser="rmsprop", learning_rate=0.001)}
    r = analysis.rank_methods(best)
    assert (r["winner"], r["loser"], r["tied"], r["winner_setting"]) == ("Adam", "RMSProp", "SGD", "η=0.001, m=10")
    assert r["acc_range"] == pytest.approx(0.018)
    assert analysis.setting_range(_grid({(0.1, 1): "dead", (0.1, 10): 0.98, (0.01, 10): 0.96})) == pytest.approx(0.02)
    s = analysis.speedups([10.0, 20.0], (3000, 4000))
    assert (s["speedup_min"], s["speedup_max"]) == (150.0, 400.0)


def test_final_stats_count_every_form_of_divergence():
    # What the sweep's CSV column "diverged" holds: a dead network, an overflow and a finite blow-up
    # past the divergence bound all count; a run that trained, even to a poor accuracy, does not.
    runs = [hist(0.97, seed=0), dead(seed=1), overflow(seed=2), blown_up(seed=3), hist(0.5, seed=4)]
    stats = analysis.final_stats(runs)
    assert stats["diverged"] == 3 and stats["n_seeds"] == 5
    assert analysis.final_stats([hist(0.97, seed=0)])["diverged"] == 0
