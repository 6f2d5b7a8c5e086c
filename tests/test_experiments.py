import numpy as np
import pytest

import ex3lib
from ex3lib import RunConfig
from ex3lib.experiments import best_setting, by_setting, grid, mean_std, setting, summarise
from ex3lib.explore import explorer


def test_grid_expands_list_axes_and_seeds():
    configs = grid(learning_rate=[0.1, 0.01], batch_size=[1, 10, 100], seeds=3, epochs=2)
    assert len(configs) == 18 and len(set(configs)) == 18
    assert {c.seed for c in configs} == {0, 1, 2}
    assert all(c.epochs == 2 for c in configs)
    assert configs[0] == RunConfig(learning_rate=0.1, batch_size=1, epochs=2, seed=0)


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"seeds": 0}, ValueError, "seeds"),
    ({"learning_rate": []}, ValueError, "learning_rate"),
    ({"seed": 3}, ValueError, "seeds=N"),
    ({"batch_size": [0]}, ValueError, "batch_size"),
])
def test_bad_grid(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        grid(**kwargs)


def test_summarise_groups_seeds(small):
    configs = grid(learning_rate=[0.1, 0.01], seeds=2, epochs=1, train_size=100, log_every=50,
                   layers=(784, 8, 10))
    hists = [ex3lib.run(c, small, progress=False) for c in configs]
    assert setting(configs[0]) == setting(configs[1]) != setting(configs[2])
    assert [len(g) for g in by_setting(hists).values()] == [2, 2]
    table = summarise(hists)
    assert list(table["learning_rate"]) == [0.1, 0.01]
    assert "lr_final" not in table.columns and "batch_size" not in table.columns
    assert "batch_final" not in table.columns and "batch_schedule" not in table.columns
    acc = [h.final_accuracy for h in hists[:2]]
    assert table["accuracy_mean"][0] == pytest.approx(np.mean(acc))
    assert table["accuracy_std"][0] == pytest.approx(np.std(acc, ddof=1))
    assert list(table["seeds"]) == [2, 2] and list(table["diverged"]) == [0, 0]


def test_mean_std_format():
    assert mean_std(0.97712, 0.0021) == "0.977 ± 0.002"
    assert mean_std(0.97712, float("nan")) == "0.977"
    assert mean_std(float("nan"), 0.1) == "nan"


def test_explorer_trains_only_when_a_control_moves(small):
    base = RunConfig(epochs=1, train_size=100, log_every=50, layers=(784, 8, 10))
    box = explorer(small, base, controls=("learning_rate", "batch_size", "epochs", "momentum"))
    status = box.children[2]
    assert "Move a control" in status.value
    box.children[0].children[0].value = 0.01
    assert "test accuracy" in status.value and "η=0.01" in status.value
    box.children[1].children[0].value = 0.5
    assert "momentum α=0.5" in status.value


def test_explorer_refuses_unknown_controls(small):
    with pytest.raises(ValueError, match="controls"):
        explorer(small, RunConfig(), controls=("dropout",))


def test_best_setting_picks_the_highest_mean_accuracy(small):
    runs = ex3lib.run_many(grid(learning_rate=[0.001, 0.1], batch_size=10, seeds=2, epochs=1,
                                log_every=200), small, store=False, workers=1, progress=False)
    best = best_setting(runs)
    assert [h.config["seed"] for h in best] == [0, 1]
    assert best[0].config["learning_rate"] == 0.1
    means = {lr: np.mean([h.final_accuracy for h in runs if h.config["learning_rate"] == lr])
             for lr in (0.001, 0.1)}
    assert means[0.1] > means[0.001]
    with pytest.raises(ValueError, match="at least one History"):
        best_setting([])


def test_failed_and_fate():
    from ex3lib.experiments import failed, fate
    from synthetic import blown_up, dead, hist, overflow

    limp, good = hist([0.1, 0.098], loss=np.log(10)), hist(0.97)
    assert [fate(h) for h in (dead(), overflow(), limp, good)] == ["dead", "overflow", "chance", "trained"]
    assert fate(blown_up()) == "overflow", "a finite loss beyond the bound blew up too; only a dead network is dead"
    assert [failed(h) for h in (dead(), overflow(), limp, good)] == [True, True, True, False]


def test_runs_at_seed_stats_and_texts():
    from ex3lib.experiments import finals, runs_at, seed_stats, seeds_or_each, seeds_text, setting_label
    from synthetic import hist, seeds

    runs = seeds(0.97, learning_rate=0.1, batch_size=10) + seeds(0.95, learning_rate=0.01, batch_size=10)
    assert [h.config["seed"] for h in runs_at(runs, learning_rate=0.1)] == [0, 1, 2]
    assert runs_at(runs, learning_rate=0.1, seed=1) == [runs[1]]
    np.testing.assert_allclose(finals(runs[:3]), [0.969, 0.97, 0.971])
    mean, std = seed_stats(finals(runs[:3]))
    assert mean == pytest.approx(0.97) and std == pytest.approx(0.001)
    assert np.isnan(seed_stats([0.9])[1]) and all(np.isnan(seed_stats([])))
    assert seeds_text(finals(runs[:3]), 4) == "0.9700 ± 0.0010" and seeds_text([0.9]) == "0.900"
    assert seeds_or_each([0.5, np.nan], 2) == "0.50, nan"
    assert setting_label(runs[0].config) == "η=0.1, m=10"
    assert setting_label(hist(0.9, schedule="linear_decay", learning_rate=0.1, lr_final=0.001).config) == \
        "η=0.1→0.001, m=10"
    assert setting_label(hist(0.9, batch_schedule="increase", learning_rate=0.1, batch_final=1000).config) == \
        "η=0.1, m=10→1000"


def test_run_groups_returns_histories_by_name(small):
    from ex3lib.experiments import run_groups

    base = dict(epochs=1, train_size=100, log_every=50, layers=(784, 8, 10))
    groups = {"a": grid(learning_rate=[0.1, 0.01], **base), "b": [], "c": grid(learning_rate=0.1, **base)}
    runs = run_groups(groups, small, store=False, workers=1)
    assert list(runs) == ["a", "b", "c"] and [len(v) for v in runs.values()] == [2, 0, 1]
    assert runs["a"][1].config["learning_rate"] == 0.01
    np.testing.assert_array_equal(runs["c"][0].test_accuracy, runs["a"][0].test_accuracy)


def test_gradcheck_explorer_computes_only_when_a_control_moves(small):
    from ex3lib import MLP
    from ex3lib.explore import gradcheck_explorer

    box = gradcheck_explorer(MLP((784, 8, 10), seed=0), small.x_train[0], int(small.y_train[0]), h=1e-8)
    (slider, menu), status = box.children[0].children, box.children[1]
    assert "Move the slider" in status.value and [o[1] for o in menu.options] == [None, 0, 1]
    slider.value = 1e-6
    assert "informative weights" in status.value and "1.0e-06" in status.value
    menu.value = 1
    assert status.value.endswith("informative weights")
