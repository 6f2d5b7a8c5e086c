"""The scripts of benchmarks/: bench_epoch.py's NumPy baseline (ex3lib.reference) must compute what ex3lib
computes, and build_costs.py must put each stored run in its part of the book."""

import importlib.util
from pathlib import Path

import pytest

import ex3lib

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_epoch.py"


def _load_benchmark():
    # benchmarks/ is a folder of scripts, not a package, so load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_epoch", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numpy_reference_matches_ex3lib():
    """Loss, gradients (m = 1, 10, 100) and 20 SGD steps of the reference agree with ex3lib to 1e-10."""
    bench = _load_benchmark()
    data = ex3lib.load_mnist()
    worst = bench.check_against_ex3lib(data.x_train[:1000], data.y_train[:1000], train_samples=200)
    assert all(err <= 1e-10 for err in worst.values()), worst


BUILD_COSTS = BENCHMARK.with_name("build_costs.py")


def _load_build_costs():
    spec = importlib.util.spec_from_file_location("build_costs", BUILD_COSTS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _history(config, seconds_per_window, *, first_window=None, n_train=60_000):
    """A hand-made history of ``config``: two windows per epoch of ``seconds_per_window`` each."""
    import numpy as np

    windows = [seconds_per_window] * (2 * config.epochs)
    if first_window is not None:
        windows[0] = first_window
    time = np.concatenate([[0.0], np.cumsum(windows)])
    n = len(time)
    history = ex3lib.History(config={**config.to_dict(), "init_seed": config.seed},
                             epoch=np.arange(n) / 2.0, loss=np.full(n, 0.1), test_loss=np.full(n, 0.1),
                             test_accuracy=np.full(n, 0.97), learning_rate=np.full(n, config.learning_rate),
                             time=time, seconds=float(time[-1]), extra={"n_train": n_train, "updates": 1})
    if config.keep_params:
        history.params = np.zeros(3)
    return history


def test_build_costs_puts_each_run_in_its_part(tmp_path, capsys):
    """Each stored run counts in the part the library declares it in; compile time and other versions apart."""
    from ex3lib import RunConfig, protocol
    from ex3lib.pages import GRIDS
    from ex3lib.store import ResultsStore

    costs = _load_build_costs()
    store = ResultsStore(tmp_path / "results")
    grid_sgd = GRIDS["sgd"].cell(6, 3)                      # η = 0.1, m = 10: plain SGD, 0.35 s per window
    assert (grid_sgd.learning_rate, grid_sgd.batch_size) == (0.1, 10)
    store.put(grid_sgd, _history(grid_sgd, 0.35, first_window=50.0))  # the first compile: 49.65 s apart
    adam = RunConfig(optimiser="adam", learning_rate=1e-3, validation_size=10_000, seed=3)
    store.put(adam, _history(adam, 0.7, n_train=50_000))
    sgd_val = RunConfig(learning_rate=0.1, validation_size=10_000, seed=3)
    store.put(sgd_val, _history(sgd_val, 0.4, n_train=50_000))
    sharp = protocol.sharpness_runs()[-1]                  # η = 0.01, m = 100, seed 2: not a grid cell
    store.put(sharp, _history(sharp, 0.3))
    growing = protocol.schedule_runs()["growing batch"][0]
    store.put(growing, _history(growing, 0.4))
    own = RunConfig(momentum=0.9, learning_rate=0.01, batch_size=10, seed=1)
    store.put(own, _history(own, 0.5))

    table, compile_s, sgd = costs.costs(store)
    assert compile_s == pytest.approx(50.0 - 0.35)
    assert sgd == pytest.approx({(10, 60_000): 0.7, (10, 50_000): 0.8, (100, 60_000): 0.6})
    expected = {"explorer grids": (1, 7.0, 7.0), "protocol: validation split": (2, 14.0 + 8.0, 8.0 + 8.0),
                "sharpness runs": (1, 6.0, 6.0), "batch-size schedules": (1, 8.0, 8.0),
                "chapters' own runs": (1, 10.0, 7.0)}
    assert {part: tuple(round(x, 9) for x in row) for part, row in table.items()} == expected

    # A run of another ex3lib version is not counted.
    other = store.path(own)
    other.write_text(other.read_text().replace('"fingerprint": "', '"fingerprint": "0'))
    assert costs.costs(store)[0]["chapters' own runs"][0] == 0

    assert costs.main([str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "| explorer grids | 1 | 7 | 7 | 0.1 |" in out and "| all | 5 | 43 | 37 | 0.4 |" in out


def test_build_costs_refuses_a_missing_store_and_bad_options(tmp_path, capsys):
    costs = _load_build_costs()
    for argv, message in (([str(tmp_path / "none")], "no results store at"),
                          (["--workers", "0"], "--workers must be at least 1"),
                          (["--train-size", "0"], "--train-size must be at least 1")):
        try:
            costs.main(argv)
        except SystemExit as exit_:
            assert exit_.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
        assert message in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert costs.main([str(tmp_path / "empty")]) == 1
    assert "holds no run of this ex3lib version" in capsys.readouterr().err
