import math

import numpy as np
import pytest
from scipy import stats

import ex3lib
from ex3lib import RunConfig, protocol
from ex3lib.experiments import failed
from synthetic import dead, hist, overflow, seeds

# Student-t quantiles from a printed table (df 2 and 4), not from the code under test.
T975_DF2, T975_DF4, T95_DF4 = 4.3027, 2.7764, 2.1318


def vhist(test_acc, val_acc, **config):
    """A history whose validation curve (in ``extra``, as runs with a validation set log it) is ``val_acc``."""
    h = hist(test_acc, **config)
    val = np.asarray(val_acc, float)
    if val.ndim == 0:
        val = h.test_accuracy - h.test_accuracy[-1] + float(val)
    h.extra.update(validation_accuracy=val.tolist(), validation_loss=(h.test_loss * 0.9).tolist())
    return h


def vseeds(test_acc, val_acc, n=3, spread=0.001, **config):
    return [vhist(test_acc + spread * (i - 1), val_acc + spread * (i - 1), seed=i, **config) for i in range(n)]


# mean_ci and seed_summary --------------------------------------------------------------------

def test_mean_ci_is_the_student_t_interval():
    mean, low, high = protocol.mean_ci([1, 2, 3, 4, 5])
    half = T975_DF4 * math.sqrt(2.5) / math.sqrt(5)  # s² = 10/4
    assert mean == 3.0
    assert low == pytest.approx(3 - half, abs=1e-4) and high == pytest.approx(3 + half, abs=1e-4)
    _, low90, high90 = protocol.mean_ci([1, 2, 3, 4, 5], level=0.90)
    assert (3 - low90, high90 - 3) == pytest.approx((T95_DF4 * math.sqrt(0.5),) * 2, abs=1e-4)


def test_mean_ci_of_one_seed_has_no_interval_and_equal_values_a_zero_width():
    mean, low, high = protocol.mean_ci([0.97])
    assert mean == 0.97 and np.isnan(low) and np.isnan(high)
    assert protocol.mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_seed_summary_keeps_every_seed():
    s = protocol.seed_summary([0.976, 0.977, 0.978])
    assert s.n == 3 and s.values == (0.976, 0.977, 0.978) and s.level == 0.95
    assert s.std == pytest.approx(0.001)
    assert s.ci[1] - s.mean == pytest.approx(T975_DF2 * 0.001 / math.sqrt(3), abs=1e-6)
    assert s.text(3) == "0.977 (95 % CI 0.975 to 0.979; n=3: 0.976, 0.977, 0.978)"
    one = protocol.seed_summary([0.9])
    assert np.isnan(one.std) and one.text(2) == "0.90 (one seed: 0.90)"


# compare ---------------------------------------------------------------------------------------

BASE = np.array([0.960, 0.975, 0.985])  # large seed-to-seed differences ...
GAIN = np.array([0.002, 0.0025, 0.003])  # ... and a small, consistent gain on each seed


def test_paired_t_separates_where_welch_does_not():
    a = [hist(float(v), seed=i) for i, v in enumerate(BASE + GAIN)]
    b = [hist(float(v), seed=i) for i, v in enumerate(BASE)]
    paired = protocol.compare(a, b)
    welch = protocol.compare(a, b, paired=False)
    assert paired.paired and not welch.paired and paired.n_a == paired.n_b == 3
    assert paired.difference == pytest.approx(0.0025) and welch.difference == pytest.approx(0.0025)
    half = T975_DF2 * 0.0005 / math.sqrt(3)  # the differences' std is 0.0005
    assert (paired.low, paired.high) == pytest.approx((0.0025 - half, 0.0025 + half), abs=1e-6)
    assert paired.low > 0 and welch.low < 0 < welch.high
    assert protocol.decide(paired) == "holds" and protocol.decide(welch) == "partly"
    # scipy's own tests give the same intervals
    rel = stats.ttest_rel(BASE + GAIN, BASE).confidence_interval(0.95)
    ind = stats.ttest_ind(BASE + GAIN, BASE, equal_var=False)
    assert (paired.low, paired.high) == pytest.approx((rel.low, rel.high), rel=1e-9)
    assert (welch.low, welch.high) == pytest.approx(tuple(ind.confidence_interval(0.95)), rel=1e-9)
    assert welch.df == pytest.approx(ind.df) and "Welch" in welch.method and "paired" in paired.method


def test_pairs_by_seed_not_by_position():
    a = [hist(float(v), seed=i) for i, v in enumerate(BASE + GAIN)]
    b = [hist(float(v), seed=i) for i, v in enumerate(BASE)]
    shuffled = protocol.compare(a, b[::-1])
    assert shuffled.paired and (shuffled.low, shuffled.high) == pytest.approx((protocol.compare(a, b).low,
                                                                                protocol.compare(a, b).high))
    by_position = protocol.compare(BASE + GAIN, BASE[::-1], paired=True)
    assert by_position.low < 0  # pairing the wrong seeds loses the separation


def test_different_seeds_fall_back_to_welch():
    a = [hist(float(v), seed=i) for i, v in enumerate(BASE + GAIN)]
    b = [hist(float(v), seed=i + 3) for i, v in enumerate(BASE)]
    assert not protocol.compare(a, b).paired
    assert not protocol.compare(BASE + GAIN, BASE).paired  # numbers: Welch unless paired=True


def test_a_failed_run_counts_at_chance_level():
    good = seeds(0.97)
    unstable = seeds(0.975, n=2) + [dead(seed=2)]
    c = protocol.compare(unstable, good)
    assert c.paired and c.difference == pytest.approx(((0.9745 + 0.9755 + 0.098) - (0.969 + 0.970 + 0.971)) / 3)
    assert protocol.decide(c, claimed="a > b") == "partly"  # one dead seed in three: not shown better


def test_compare_reads_validation_curves():
    a = vseeds(0.97, 0.98)
    b = vseeds(0.97, 0.975)
    assert protocol.compare(a, b, metric="validation_accuracy").difference == pytest.approx(0.005)
    assert protocol.compare(a, b).difference == pytest.approx(0.0)


# decide ----------------------------------------------------------------------------------------

def comparison(low, high, metric="test_accuracy"):
    return protocol.Comparison(difference=(low + high) / 2, low=low, high=high, n_a=3, n_b=3, paired=True, df=2.0,
                               method="paired t over 3 seeds", metric=metric)


@pytest.mark.parametrize("low, high, claimed, verdict", [
    (0.001, 0.004, "a > b", "holds"),
    (-0.001, 0.004, "a > b", "partly"),
    (-0.004, -0.001, "a > b", "does not hold"),
    (-0.004, -0.001, "a < b", "holds"),
    (0.0, 0.004, "a > b", "partly"),  # touching 0 is not on the claimed side
    (-0.002, 0.002, "a == b", "holds"),  # inside ±0.003
    (-0.002, 0.004, "a == b", "partly"),  # crosses +δ
    (0.004, 0.006, "a == b", "does not hold"),
    (-0.002, 0.010, "a >= b", "holds"),  # no worse than b by more than δ
    (-0.005, 0.001, "a >= b", "partly"),
    (-0.008, -0.004, "a >= b", "does not hold"),
    (-0.010, 0.002, "a <= b", "holds"),
    (0.004, 0.008, "a <= b", "does not hold"),
])
def test_decision_rule(low, high, claimed, verdict):
    assert protocol.decide(comparison(low, high), claimed=claimed) == verdict


def test_equivalence_margin_can_be_given():
    c = comparison(-0.002, 0.002)
    assert protocol.decide(c, claimed="a == b", margin=0.001) == "partly"
    assert protocol.decide(comparison(-0.02, 0.02, metric="test_loss"), claimed="a == b", margin=0.05) == "holds"


def test_decide_on_the_compared_runs():
    a, b = BASE + GAIN, BASE
    assert protocol.decide(protocol.compare(a, b, paired=True)) == "holds"
    assert protocol.decide(protocol.compare(b, a, paired=True)) == "does not hold"
    assert protocol.decide(protocol.compare(a, b, paired=True), claimed="a == b", margin=0.01) == "holds"


def test_one_seed_is_untested():
    c = protocol.compare([0.98], [0.97])
    assert np.isnan(c.low) and protocol.decide(c) == "untested"
    assert "no interval" in c.text()


# select ----------------------------------------------------------------------------------------

def test_select_on_validation_where_validation_and_test_disagree():
    runs = vseeds(0.975, 0.981, learning_rate=0.1) + vseeds(0.978, 0.979, learning_rate=0.01)
    assert {h.config["learning_rate"] for h in protocol.select(runs)} == {0.1}
    assert len(protocol.select(runs)) == 3
    on_test = protocol.select(runs, "test_accuracy", allow_test=True)
    assert {h.config["learning_rate"] for h in on_test} == {0.01}


def test_select_refuses_the_test_set_and_says_why():
    runs = vseeds(0.975, 0.981)
    with pytest.raises(ValueError, match=r"metric='test_accuracy' selects on the test set.*biased.*allow_test=True"):
        protocol.select(runs, "test_accuracy")
    with pytest.raises(ValueError, match="metric='test_loss'"):
        protocol.select(runs, "test_loss")


def test_select_minimises_a_loss():
    a = [vhist(0.97, 0.98, learning_rate=0.1)]
    b = [vhist(0.97, 0.98, learning_rate=0.01)]
    b[0].extra["validation_loss"] = (np.asarray(b[0].extra["validation_loss"]) - 0.01).tolist()
    assert protocol.select(a + b, "validation_loss")[0].config["learning_rate"] == 0.01
    assert protocol.select(a + b, "validation_accuracy")[0].config["learning_rate"] == 0.1  # a tie: first seen


def test_select_counts_failed_runs_at_their_value():
    val = {"validation_accuracy": [0.1, 0.098, 0.098], "validation_loss": [2.3, 2.3, 2.3]}
    risky = vseeds(0.99, 0.99, n=2, learning_rate=0.1) + [dead(learning_rate=0.1, seed=2, extra=val)]
    steady = vseeds(0.97, 0.97, learning_rate=0.01)
    assert protocol.select(risky + steady)[0].config["learning_rate"] == 0.01
    nan_loss = [overflow(learning_rate=0.5, extra={"validation_accuracy": [0.1, 0.098],
                                                   "validation_loss": [2.3, np.nan]})]
    assert protocol.select(nan_loss + steady, "validation_loss")[0].config["learning_rate"] == 0.01


def test_select_needs_validation_curves():
    with pytest.raises(ValueError, match=r"metric 'validation_accuracy': SGD η=0.1, m=10, seed 0: .*held out no "
                                         r"validation set"):
        protocol.select([hist(0.97)])


# metric_curve ----------------------------------------------------------------------------------

def test_metric_curve_reads_attributes_then_extra():
    h = vhist([0.1, 0.8, 0.9], [0.1, 0.85, 0.95])
    np.testing.assert_array_equal(protocol.metric_curve(h, "test_accuracy"), [0.1, 0.8, 0.9])
    np.testing.assert_array_equal(protocol.metric_curve(h, "validation_accuracy"), [0.1, 0.85, 0.95])
    np.testing.assert_array_equal(protocol.metric_curve(h, "validation_accuracy"), h.validation_accuracy)


def test_metric_curve_names_the_run_when_the_curve_is_missing():
    with pytest.raises(ValueError, match=r"metric 'validation_accuracy': momentum α=0.9 η=0.05, m=100, seed 4: "
                                         r".*held out no validation set"):
        protocol.metric_curve(hist(0.9, optimiser="sgd", momentum=0.9, learning_rate=0.05, batch_size=100,
                                   seed=4), "validation_accuracy")
    with pytest.raises(ValueError, match=r"metric 'gradient_norm': SGD η=0.1, m=10, seed 0 has no such curve"):
        protocol.metric_curve(hist(0.9), "gradient_norm")


def test_metric_curve_refuses_what_is_not_a_curve():
    with pytest.raises(ValueError, match="metric 'seconds' must name a curve with one value per logged point"):
        protocol.metric_curve(hist(0.9), "seconds")


# time_to_target --------------------------------------------------------------------------------

def curve(**extra):
    # epochs 0, 0.5, 1, 1.5, 2; time 0, 1, 2, 3, 4 s
    return hist([0.1, 0.5, 0.8, 0.9, 0.95], batch_size=30, extra=extra)


def test_time_to_target_at_the_first_point_at_or_above():
    t = protocol.time_to_target(curve(updates_at=[0, 17, 34, 51, 68]), 0.9)
    assert (t.reached, t.epochs, t.updates, t.seconds) == (True, 1.5, 51, 3.0)
    t = protocol.time_to_target(curve(updates_at=[0, 17, 34, 51, 68]), 0.85)
    assert (t.epochs, t.updates, t.seconds) == (1.5, 51, 3.0)
    assert protocol.time_to_target(curve(updates_at=[0, 17, 34, 51, 68]), 0.1).epochs == 0.0


def test_time_to_target_counts_updates_from_the_config_without_updates_at():
    # 1000 samples in batches of 30: 34 updates per epoch (the last batch has 10); half an epoch is 17
    t = protocol.time_to_target(curve(n_train=1000, updates=68), 0.9)
    assert t.updates == 34 + 17
    t = protocol.time_to_target(curve(n_train=1000, updates=68), 0.8)
    assert t.updates == 34


def test_time_to_target_never_reached():
    t = protocol.time_to_target(curve(n_train=1000), 0.96)
    assert not t.reached and np.isnan(t.epochs) and np.isnan(t.updates) and np.isnan(t.seconds)
    assert (t.target, t.metric) == (0.96, "test_accuracy")


def test_time_to_target_of_a_diverged_run():
    assert not protocol.time_to_target(dead(), 0.5).reached
    late = hist([0.1, 0.9, 0.098], diverged=True, reason="dead network: ...", extra={"updates_at": [0, 5, 9]})
    t = protocol.time_to_target(late, 0.9)
    assert t.reached and t.updates == 5  # reached before it died


def test_time_to_target_on_a_loss_goes_down():
    h = hist([0.1, 0.5, 0.8], test_loss=[2.3, 0.5, 0.2], extra={"updates_at": [0, 3, 6]})
    t = protocol.time_to_target(h, 0.5, metric="test_loss")
    assert (t.epochs, t.updates) == (0.5, 3)


# lr_sensitivity --------------------------------------------------------------------------------

def test_lr_sensitivity_table():
    runs = (vseeds(0.97, 0.975, learning_rate=0.01) + vseeds(0.96, 0.965, learning_rate=0.1, n=2)
            + [dead(learning_rate=0.1, seed=2, extra={"validation_accuracy": [0.1, 0.098, 0.098]})]
            + vseeds(0.98, 0.982, learning_rate=0.01, momentum=0.9)
            + [vhist(0.975, 0.978, learning_rate=0.001, momentum=0.9)])
    t = protocol.lr_sensitivity(runs)
    assert t.columns.tolist() == ["optimiser", "learning_rate", "mean", "ci_low", "ci_high", "std", "n",
                                  "n_failed", "failed"]
    assert t["optimiser"].tolist() == ["SGD", "SGD", "momentum α=0.9", "momentum α=0.9"]
    assert t["learning_rate"].tolist() == [0.01, 0.1, 0.001, 0.01]
    np.testing.assert_allclose(t["mean"], [0.975, (0.964 + 0.965 + 0.098) / 3, 0.978, 0.982])
    assert t["n"].tolist() == [3, 3, 1, 3] and t["n_failed"].tolist() == [0, 1, 0, 0]
    assert t["failed"].tolist() == [False, True, False, False]
    assert np.isnan(t["ci_low"][2]) and t["ci_low"][0] < 0.975 < t["ci_high"][0]
    assert t.attrs["metric"] == "validation_accuracy"


def test_lr_sensitivity_tells_nesterov_from_momentum():
    runs = vseeds(0.98, 0.98, n=1, momentum=0.9) + vseeds(0.98, 0.98, n=1, momentum=0.9, nesterov=True)
    assert protocol.lr_sensitivity(runs)["optimiser"].tolist() == ["momentum α=0.9", "Nesterov α=0.9"]


def test_lr_sensitivity_refuses_mixed_batch_sizes():
    runs = vseeds(0.97, 0.97, batch_size=10) + vseeds(0.97, 0.97, batch_size=100)
    with pytest.raises(ValueError, match=r"histories: two settings of SGD at η=0.1 differ in batch_size"):
        protocol.lr_sensitivity(runs)


# bad inputs: one each, the message names the parameter -----------------------------------------

H = seeds(0.97)


@pytest.mark.parametrize("call, error, match", [
    (lambda: protocol.mean_ci([]), ValueError, r"^values must be a non-empty"),
    (lambda: protocol.mean_ci([[1, 2], [3, 4]]), ValueError, r"^values must be a non-empty 1-D"),
    (lambda: protocol.mean_ci([0.9, np.nan]), ValueError, r"^values must be finite"),
    (lambda: protocol.mean_ci("0.9"), TypeError, r"^values must be a sequence of numbers"),
    (lambda: protocol.mean_ci([1, 2], level=1.0), ValueError, r"^level must be a finite number in \(0, 1\)"),
    (lambda: protocol.seed_summary([1, 2], level=0), ValueError, r"^level must be"),
    (lambda: protocol.compare(H, H, paired="yes"), TypeError, r"^paired must be True, False or None"),
    (lambda: protocol.compare(H, seeds(0.97, n=2), paired=True), ValueError,
     r"^paired=True needs a and b to hold the same seeds"),
    (lambda: protocol.compare([1, 2, 3], [1, 2], paired=True), ValueError, r"^paired=True needs as many values"),
    (lambda: protocol.compare(H[0], H), TypeError, r"^a must be a list of History objects"),
    (lambda: protocol.compare(H, [H[0], 0.9]), TypeError, r"^b must hold History objects or numbers, not both"),
    (lambda: protocol.compare(H, []), ValueError, r"^b must be a non-empty"),
    (lambda: protocol.compare(H, H, level=2), ValueError, r"^level must be"),
    (lambda: protocol.compare(H, H, metric=3), TypeError, r"^metric must be the name"),
    (lambda: protocol.compare([overflow()], H, metric="loss"), ValueError, r"^a must be finite"),
    (lambda: protocol.decide((0.0, 1.0)), TypeError, r"^comparison must be a Comparison"),
    (lambda: protocol.decide(comparison(0, 1), claimed="a >> b"), ValueError, r"^claimed must be one of 'a > b'"),
    (lambda: protocol.decide(comparison(0, 1), claimed="a == b", margin=-0.1), ValueError, r"^margin must be"),
    (lambda: protocol.decide(comparison(0, 1), margin=0.1), ValueError, r"^margin applies to the claims"),
    (lambda: protocol.decide(comparison(0, 1, metric=None), claimed="a == b"), ValueError, r"^margin: give δ"),
    (lambda: protocol.select([]), ValueError, r"^histories must hold at least one"),
    (lambda: protocol.select(H, metric="epoch"), ValueError, r"^metric must be an accuracy or a loss"),
    (lambda: protocol.select(H, metric=None), TypeError, r"^metric must be the name"),
    (lambda: protocol.select([0.9]), TypeError, r"^histories must hold History objects"),
    (lambda: protocol.time_to_target(H[0], float("nan")), ValueError, r"^target must be a finite number"),
    (lambda: protocol.time_to_target(H[0], "0.9"), TypeError, r"^target must be a real number"),
    (lambda: protocol.time_to_target(H, 0.9), TypeError, r"^history must be a History"),
    (lambda: protocol.time_to_target(H[0], 0.9, metric="seconds"), ValueError, r"^metric must be an accuracy"),
    (lambda: protocol.time_to_target(H[0], 0.5), ValueError,
     r"^history: SGD η=0.1, m=10, seed 0 has neither extra\['updates_at'\] nor extra\['n_train'\]"),
    (lambda: protocol.lr_sensitivity([]), ValueError, r"^histories must hold at least one"),
    (lambda: protocol.lr_sensitivity(H, level=-1), ValueError, r"^level must be"),
    (lambda: protocol.metric_curve(H[0], 3), TypeError, r"^metric must be the name"),
    (lambda: protocol.metric_curve("run", "loss"), TypeError, r"^history must be a History"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# The protocol's runs ------------------------------------------------------------------------------

def test_tuning_runs_are_the_methods_explorers_cells_plus_the_decay():
    from ex3lib import pages

    runs = protocol.tuning_runs()
    assert list(runs) == list(protocol.METHODS)
    cells = set(pages.GRIDS["adaptive"].cells())
    for name in protocol.METHODS:
        assert len(runs[name]) == len(pages.LEARNING_RATES[:7])
        assert all(c.validation_size == 10_000 and c.batch_size == 10 and c.seed == 0 for c in runs[name])
        assert (set(runs[name]) <= cells) == (name != "SGD + decay"), name
    decay = runs["SGD + decay"]
    assert all(c.schedule == "linear_decay" and c.lr_final == pytest.approx(c.learning_rate / 100) for c in decay)
    small = protocol.tuning_runs(epochs=1, train_size=500)
    assert {c.epochs for cs in small.values() for c in cs} == {1} and small["Adam"][0].train_size == 500


@pytest.mark.parametrize("lr, side, expected", [(0.1, 1, 0.3), (0.3, 1, 1.0), (1.0, 1, 3.0), (0.03, 1, 0.1),
                                                 (1e-4, -1, 3e-5), (3e-5, -1, 1e-5), (0.01, -1, 0.003)])
def test_next_rate_walks_the_explorers_half_decade_ladder(lr, side, expected):
    assert protocol.next_rate(lr, side) == expected
    assert protocol.next_rate(expected, -side) == lr


def test_next_rate_refuses_what_is_not_a_rate_or_a_side():
    with pytest.raises(ValueError, match=r"lr must be a finite number in \(0"):
        protocol.next_rate(0.0, 1)
    with pytest.raises(ValueError, match=r"side must be \+1 .* or -1 .*got 2"):
        protocol.next_rate(0.1, 2)


def tuned(scores, **config):
    """One seed-0 tuning run per η, its final validation accuracy the score given for that η."""
    return [vhist(0.97, score, learning_rate=lr, seed=0, **config) for lr, score in scores.items()]


GRID = (1e-3, 0.01, 0.1)


@pytest.mark.parametrize("scores, step", [
    ({1e-3: 0.95, 0.01: 0.97, 0.1: 0.96}, None),     # inside: no step
    ({1e-3: 0.95, 0.01: 0.96, 0.1: 0.97}, 0.3),      # at the top edge: one step up
    ({1e-3: 0.97, 0.01: 0.96, 0.1: 0.95}, 3e-4),     # at the bottom edge: one step down
    ({1e-3: 0.95, 0.01: 0.96, 0.1: 0.97, 0.3: 0.975}, 1.0),          # one step taken, still at the edge
    ({1e-3: 0.95, 0.01: 0.96, 0.1: 0.97, 0.3: 0.975, 1.0: 0.98}, None),  # max_steps = 2 taken
    ({1e-3: 0.95, 0.01: 0.96, 0.1: 0.97, 0.3: 0.098}, None),         # past the edge it failed: inside now
])
def test_edge_step(scores, step):
    assert protocol.edge_step(tuned(scores), GRID, max_steps=2) == step


def test_edge_step_with_no_steps_allowed_and_bad_input():
    at_top = tuned({1e-3: 0.95, 0.01: 0.96, 0.1: 0.97})
    assert protocol.edge_step(at_top, GRID, max_steps=0) is None
    with pytest.raises(ValueError, match="max_steps must be"):
        protocol.edge_step(at_top, GRID, max_steps=-1)
    with pytest.raises(ValueError, match="declared must hold"):
        protocol.edge_step(at_top, [])


def fake_trainer(curves, calls):
    """A stand-in for run_groups: each run's validation accuracy is curves[method](η); records each call."""
    def run_groups(groups, data=None, **kwargs):
        calls.append({name: [c.learning_rate for c in configs] for name, configs in groups.items()})
        return {name: [vhist(0.97, curves[name](c.learning_rate), **c.to_dict()) for c in configs]
                for name, configs in groups.items()}
    return run_groups


def test_extend_tuning_steps_past_edges_round_by_round(monkeypatch):
    import ex3lib.experiments

    curves = {"inside": lambda lr: 0.97 - abs(math.log10(lr) + 2) / 100,      # best at 0.01
              "up": lambda lr: 0.97 - abs(math.log10(lr) - math.log10(0.3)) / 100,  # best at 0.3
              "far down": lambda lr: 0.9 - math.log10(lr) / 100,               # better and better downwards
              "SGD + decay": lambda lr: 0.97 if lr < 0.2 else 0.098}           # fails past the grid
    calls = []
    monkeypatch.setattr(ex3lib.experiments, "run_groups", fake_trainer(curves, calls))
    base = ex3lib.RunConfig(validation_size=10_000)
    decay = base.replace(schedule="linear_decay", lr_final=0.001)
    tuning = {name: [vhist(0.97, curves[name](lr), **(decay if name == "SGD + decay" else base)
                           .replace(learning_rate=lr, lr_final=lr / 100 if name == "SGD + decay" else None).to_dict())
                     for lr in GRID] for name in curves}
    tuning["SGD + decay"][-1].extra["validation_accuracy"][-1] = 0.98  # best at the top edge
    out = protocol.extend_tuning(tuning, max_steps=2)
    # one call per round, every method at an edge in it
    assert calls == [{"up": [0.3], "far down": [3e-4], "SGD + decay": [0.3]}, {"up": [1.0], "far down": [1e-4]}]
    assert [h.config["learning_rate"] for h in out["inside"]] == list(GRID)
    assert [h.config["learning_rate"] for h in out["up"]] == [1e-3, 0.01, 0.1, 0.3, 1.0]  # 0.3, inside now
    assert [h.config["learning_rate"] for h in out["far down"]] == [1e-4, 3e-4, 1e-3, 0.01, 0.1]
    step = out["SGD + decay"][-1].config
    assert step["learning_rate"] == 0.3 and step["lr_final"] == 0.3 * protocol.DECAY_RATIO  # the decay keeps η_N/η₀
    assert all(h.config["validation_size"] == 10_000 for hs in out.values() for h in hs)
    assert tuning["up"][-1].config["learning_rate"] == 0.1, "the input was changed"
    declared = {name: list(GRID) for name in curves}
    assert protocol.extensions(out, declared) == {"up": [0.3, 1.0], "far down": [1e-4, 3e-4],
                                                    "SGD + decay": [0.3]}
    selected = {name: protocol.select(runs) for name, runs in out.items()}
    note = protocol.grid_note(out, selected, declared)
    assert "extended" in note and "up (η = 0.3, 1)" in note and "far down (η = 0.0001, 0.0003)" in note
    assert "even so: far down (η = 0.0001); a better setting may lie beyond, so this method is" in note
    inside = {"inside": out["inside"]}
    assert protocol.grid_note(inside, {"inside": selected["inside"]}, declared) == (
        "Every method's selected setting lies inside the learning rates it was tuned on.")


def test_seeds_of_and_growing_batch():
    config = ex3lib.RunConfig(learning_rate=0.01, validation_size=10_000)
    assert [c.seed for c in protocol.seeds_of(config, 3)] == [0, 1, 2]
    assert protocol.seeds_of(config, 3)[0] == config
    with pytest.raises(ValueError, match="n_seeds"):
        protocol.seeds_of(config, 0)
    decay = ex3lib.RunConfig(schedule="linear_decay", learning_rate=0.1, lr_final=0.001, batch_size=10)
    grow = protocol.growing_batch(decay)
    assert (grow.schedule, grow.learning_rate, grow.batch_schedule, grow.batch_size, grow.batch_final) == (
        "constant", 0.1, "increase", 10, 1000)
    with pytest.raises(ValueError, match="schedule='linear_decay'"):
        protocol.growing_batch(config)
    runs = protocol.schedule_runs(n_seeds=2)
    assert runs["decay"][1] == decay.replace(seed=1) and runs["growing batch"][0] == grow


def test_sharpness_runs_cover_both_comparisons_once_each():
    runs = protocol.sharpness_runs(n_seeds=2)
    settings = {(c.learning_rate, c.batch_size) for c in runs}
    assert settings == {s for group in protocol.SHARPNESS_SETTINGS.values() for s in group}
    assert len(runs) == 2 * len(settings) and all(c.keep_params and c.validation_size == 0 for c in runs)


def test_keep_sharpness_params_marks_exactly_the_runs_the_chapter_measures():
    """The SGD chapter's grid keeps the parameters of the sharpness runs, of any seed, epochs and size, only."""
    for kwargs in ({}, {"n_seeds": 3, "epochs": 2, "train_size": 4000}):
        wanted = protocol.sharpness_runs(**kwargs)
        plain = [c.replace(keep_params=False) for c in wanted]
        assert protocol.keep_sharpness_params(plain) == wanted
        assert protocol.keep_sharpness_params(wanted) == wanted
    others = [RunConfig(learning_rate=0.1, batch_size=10),  # not a setting of SHARPNESS_SETTINGS
              RunConfig(learning_rate=0.01, batch_size=10, order="shuffle"),
              RunConfig(learning_rate=0.01, batch_size=10, validation_size=10_000),
              RunConfig(learning_rate=0.01, batch_size=10, momentum=0.9),
              RunConfig(learning_rate=0.01, batch_size=10, schedule="linear_decay", lr_final=0.001)]
    assert protocol.keep_sharpness_params(others) == others
    with pytest.raises(TypeError, match="configs must hold RunConfig objects, got dict"):
        protocol.keep_sharpness_params([{"learning_rate": 0.01}])


@pytest.fixture(scope="module")
def kept(mnist, tmp_path_factory):
    store = ex3lib.ResultsStore(tmp_path_factory.mktemp("kept"))
    configs = protocol.sharpness_runs(n_seeds=2, epochs=1, train_size=2000)
    return store, ex3lib.run_many(configs, store=store, progress=False, workers=2)


def test_network_of_a_kept_run(kept):
    _, runs = kept
    net = protocol.network_of(runs[0])
    assert np.array_equal(net.params, runs[0].params) and net.layers == ex3lib.REPORT_LAYERS
    with pytest.raises(ValueError, match="kept no parameters.*keep_params=True"):
        protocol.network_of(hist(0.9))


def test_sharpness_measurements_leave_out_failed_runs_and_are_kept_in_the_store(kept, mnist, monkeypatch):
    from ex3lib import hessian

    store, runs = kept
    x, y = mnist.x_train[:300], mnist.y_train[:300]
    rows = protocol.sharpness_measurements(runs, x, y, epsilon=1e-3, store=store)
    measured = {(r["learning_rate"], r["batch_size"], r["seed"]) for r in rows}
    failed_runs = {(h.config["learning_rate"], h.config["batch_size"], h.config["seed"]) for h in runs if failed(h)}
    assert measured and not measured & failed_runs
    assert {r["group"] for r in rows} <= set(protocol.SHARPNESS_SETTINGS)
    assert all(r["converged"] and r["top_eigenvalue"] > 0 and r["epsilon_sharpness"] >= 0 for r in rows)
    # η = 0.01, m = 10 is in both groups: measured once, listed twice.
    both = [r for r in rows if (r["learning_rate"], r["batch_size"], r["seed"]) == (0.01, 10, 0)]
    assert len(both) == 2 and both[0]["top_eigenvalue"] == both[1]["top_eigenvalue"]
    # A second call reads every measurement back from the store, bit for bit.
    monkeypatch.setattr(hessian, "top_eigenvalue", lambda *a, **k: pytest.fail("measured again"))
    assert protocol.sharpness_measurements(runs, x, y, epsilon=1e-3, store=store) == rows
    # Other samples or another ε are other measurements.
    monkeypatch.undo()
    other = protocol.sharpness_measurements(runs[:1], x[:200], y[:200], epsilon=1e-3, store=store)
    assert other[0]["top_eigenvalue"] != rows[0]["top_eigenvalue"] or failed(runs[0])


def test_interpolations_start_and_end_at_the_two_solutions(kept, mnist):

    _, runs = kept
    x, y = mnist.x_train[:300], mnist.y_train[:300]
    lines = protocol.interpolations(runs, x, y, alphas=np.array([0.0, 0.5, 1.0]))
    at = {(h.config["learning_rate"], h.config["batch_size"]): h for h in runs if h.config["seed"] == 0}
    for label, line in lines.items():
        group = label.split(":")[0]
        settings = protocol.SHARPNESS_SETTINGS[group]
        small, large = at[min(settings, key=lambda s: s[1])], at[max(settings, key=lambda s: s[1])]
        assert line.loss[0] == protocol.network_of(small).evaluate(x, y)[0]
        assert line.loss[-1] == protocol.network_of(large).evaluate(x, y)[0]
