import numpy as np
import pytest

from ex3lib import analysis, claims, tables
from synthetic import blown_up, dead, hist, overflow, seeds


def _sgd(acc):
    return [h for (lr, m), a in acc.items()
            for h in (seeds(a, learning_rate=lr, batch_size=m) if a else [dead(learning_rate=lr, batch_size=m, seed=s)
                                                                          for s in range(3)])]


def test_sgd_table2_sets_the_report_beside_ours():
    t = tables.sgd_table2(_sgd({(0.1, 1): None, (0.1, 10): 0.977})).data
    assert t["η"].tolist() == ["0.1", "0.1"] and t["m"].tolist() == [1, 10]
    assert t["test accuracy (report)"].tolist() == ["0.098", "0.977"]
    assert t["loss (report)"].tolist() == ["nan", "0.025"] and t["diverged"].tolist() == ["3 of 3", "0 of 3"]
    assert t["test accuracy (ours)"].iloc[1] == "0.977 ± 0.001"


def test_collapse_table():
    t = tables.collapse([dead(), overflow(seed=1), hist([0.1, 0.098], loss=np.log(10), seed=2),
                         blown_up(seed=3)]).data
    assert t["fate"].tolist() == ["dead network", "overflow (nan)", "ran to the end", "blew up (loss 4.97e+188)"]
    assert t["final loss"].iloc[1] == "nan" and t["what the library recorded"].iloc[2] == "not flagged"


def test_decay_and_schedules_tables():
    kw = dict(schedule="linear_decay", learning_rate=0.1, lr_final=0.001)
    decay = [dead(batch_size=1, seed=s, **kw) for s in range(3)] + seeds(0.983, batch_size=10, **kw)
    const = [dead(learning_rate=0.1, batch_size=1, seed=s) for s in range(3)] + seeds(0.977, learning_rate=0.1)
    t = tables.decay_table1(decay, const)
    assert t.index.tolist() == [(0.1, 0.001, 1), (0.1, 0.001, 10)]
    assert t.loc[(0.1, 0.001, 1), "failed"] == "3/3" and t.loc[(0.1, 0.001, 10), "report test acc"] == "0.983"
    assert t.loc[(0.1, 0.001, 10), "constant η=0.1 test acc"] == "0.9770 ± 0.0010"
    s = tables.schedules_table([decay[3:], const[3:]], 5)
    assert s.index.tolist() == ["decay η = 0.1 → 0.001", "constant η = 0.1"]


def test_momentum_tables():
    mom = _sgd({(0.1, 1): None, (0.01, 10): 0.98})
    sgd = _sgd({(0.1, 1): None, (0.01, 10): 0.976})
    rows = analysis.versus(mom, sgd)
    g = tables.momentum_grid(rows, 0.9).data
    assert g["momentum run"].tolist() == ["dead at epoch 1.0", ""] and g["report SGD accuracy"].tolist() == ["0.098", "0.976"]
    assert tables.momentum_pairs(rows).data["difference"].tolist()[1] == pytest.approx(0.004)
    n = tables.nesterov(rows).data
    assert n.columns.tolist()[-1] == "difference"
    kw = dict(schedule="linear_decay", learning_rate=0.1, lr_final=0.001)
    c = tables.combined([dead(batch_size=10, momentum=0.9, **kw)], seeds(0.983, batch_size=10, **kw), [10]).data
    assert c.iloc[0].tolist() == [10, "2.303", "0.0980", "1/1", "0.9830 ± 0.0010", "0/3", "0.983"]


def test_adaptive_and_conclusion_tables():
    ada = _sgd({(0.1, 10): 0.97, (0.01, 10): 0.978})
    for h in ada:
        h.config["optimiser"] = "adagrad"
    rows = analysis.versus(ada, _sgd({(0.1, 10): 0.977, (0.01, 10): 0.976}))
    assert tables.adagrad_grid(rows).data["SGD accuracy (report)"].tolist() == ["0.977", "0.976"]
    best = {"SGD": seeds(0.977, learning_rate=0.1), "Adam": seeds(0.978, optimiser="adam", learning_rate=0.001)}
    m = tables.methods(best).data
    assert m["seeds"].tolist() == [3, 3]
    c = claims.Claim("x", "§1", "holds", "e")
    assert tables.verdicts([c]).data.iloc[0].tolist() == ["§1: x", "holds", "e"]
    ranges = claims.Claim("x", "§4", "holds", "e", {"ranges": {1: (0.01, 0.5), 10: (0.002, 0.1)}})
    assert tables.lr_sensitivity(ranges).data["m"].tolist() == [1, 10]


def test_report_accuracy_and_layers():
    from ex3lib import MLP

    assert tables.report_accuracy(hist(0.9, learning_rate=0.001, batch_size=100).config) == "0.872"
    assert tables.report_accuracy(hist(0.9, momentum=0.9).config) == "–"
    t = tables.layers(MLP()).data
    assert t["parameters"].tolist() == [235200, 30000, 10000, 1000, 276200]
    assert t["from → to"].tolist()[0] == "input → hidden 1"


def _validated(acc, n=3, **config):
    """``n`` seeds with validation curves (as runs with a validation set log them)."""
    runs = seeds(acc, n, validation_size=10_000, **config)
    for h in runs:
        h.extra.update(validation_accuracy=(h.test_accuracy - 0.001).tolist(),
                       validation_loss=h.test_loss.tolist(), updates_at=list(range(0, 1000 * len(h.epoch), 1000)))
    return runs


def test_protocol_tables():
    runs = {"SGD": _validated(0.975), "Adam": _validated(0.978, optimiser="adam", learning_rate=1e-4)}
    frame = tables.protocol_methods({name: hs[:1] for name, hs in runs.items()}, runs).data
    assert frame["selected setting"].tolist() == ["η=0.1, m=10", "η=0.0001, m=10"]
    assert frame["validation accuracy (selection)"].tolist() == ["0.9730", "0.9760"]
    low, high = 0.978 - 4.3027 * 0.001 / np.sqrt(3), 0.978 + 4.3027 * 0.001 / np.sqrt(3)
    assert frame["test accuracy, mean [95 % CI]"][1] == f"0.9780 [{low:.4f}, {high:.4f}]"
    assert frame["failed"].tolist() == ["0/3", "0/3"]
    ttt = tables.time_to_target(runs, [0.97, 0.99]).data
    assert ttt["97 %: reached"].tolist() == ["3/3", "3/3"] and ttt["99 %: epochs"].tolist() == ["never", "never"]
    # SGD's seeds reach 0.97 at the point whose accuracy is first >= 0.97 (the curve rises by 0.02/19 per point).
    first = [int(np.argmax(h.test_accuracy >= 0.97)) for h in runs["SGD"]]
    assert ttt["97 %: updates"][0] == f"{np.mean([1000 * i for i in first]):,.0f}"


def test_sharpness_and_batch_schedule_tables():
    rows = [{"group": g, "learning_rate": lr, "batch_size": m, "seed": s, "top_eigenvalue": 2.0 * m ** 0.5 + s,
             "epsilon_sharpness": 1.0, "loss": 0.02, "test_accuracy": 0.97}
            for g, settings in (("equal η/m", ((0.1, 100), (0.001, 1))), ("equal η", ((0.01, 10), (0.01, 1))))
            for lr, m in settings for s in range(2)]
    frame = tables.sharpness(rows).data
    assert list(zip(frame["comparison"], frame["m"])) == [("equal η/m", 1), ("equal η/m", 100), ("equal η", 1),
                                                         ("equal η", 10)]
    assert frame["λ_max"][1] == "20.5 ± 0.7"
    growing = [hist(0.98, seed=i, batch_schedule="increase", batch_final=1000,
                    extra={"updates": 33393, "batch_size": [10, 11, 12]}) for i in range(2)]
    decay = [hist(0.98, seed=i, schedule="linear_decay", lr_final=0.001, extra={"updates": 60000}) for i in range(2)]
    table = tables.batch_schedule({"decay": decay, "growing": growing}).data
    assert table["m by epoch"].tolist() == ["10", "10, 11, 12"] and table["updates"].tolist() == ["60,000", "33,393"]
