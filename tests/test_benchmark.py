"""The scripts of benchmarks/: bench_epoch.py's NumPy baseline (ex3lib.reference) must compute what ex3lib
computes, build_costs.py must put each stored run in its part of the book, and cold_build.py must build a clone
from nothing and read each chapter's time from the build's log."""

import importlib.util
import os
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


COLD_BUILD = BENCHMARK.with_name("cold_build.py")


def _load_cold_build():
    import sys

    spec = importlib.util.spec_from_file_location("cold_build", COLD_BUILD)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while the module runs
    spec.loader.exec_module(module)
    return module


#: Lines as a cold build prints them (myst-nb's, Sphinx's coloured ones, and ex3lib.runner's progress lines).
BUILD_LOG = """\
\x1b[01mreading sources... \x1b[39;49;00m[ 25%] \x1b[35mbook/intro\x1b[39;49;00m
/tmp/x/main/book/intro.ipynb: Executing notebook using local CWD [mystnb]
/tmp/x/main/book/intro.ipynb: Executed notebook in 20.90 seconds [mystnb]
/tmp/x/main/book/sgd.ipynb: Executing notebook using local CWD [mystnb]
sgd: 30 runs, 0 stored, 30 to train on 2 workers
sgd: 1/30 SGD η=0.1 m=10 (epochs=20): 70.5 s
sgd: 30 trained in 200 s (391 s of training)
sgd: 12 runs, all stored
sgd: 63 runs, 9 stored, 54 to train on 2 workers
sgd: 3/54 SGD η=1 m=1 failed in training: ValueError: boom
sgd: 53 trained in 237 s (468 s of training), 1 failed
/tmp/x/main/book/sgd.ipynb: Executed notebook in 447.50 seconds [mystnb]
adaptive: 1 run, 1 to train in this process
adaptive: 1 trained in 12 s (11 s of training)
"""


def test_cold_build_reads_each_chapters_time_from_the_log():
    """Executed seconds, run_many calls (trained, stored or failed) and the rest, chapter by chapter."""
    cold = _load_cold_build()
    chapters = cold.parse_log(BUILD_LOG)
    assert list(chapters) == ["intro", "sgd", "adaptive"]
    intro, sgd, adaptive = chapters.values()
    assert (intro.executed, intro.calls, intro.runs, intro.trained, intro.rest) == (20.9, 0, 0, 0, 20.9)
    assert (sgd.executed, sgd.calls, sgd.runs, sgd.trained) == (447.5, 3, 105, 83)
    assert (sgd.in_run_many, sgd.training) == (437.0, 859.0)
    assert sgd.rest == pytest.approx(10.5)
    assert (adaptive.executed, adaptive.rest, adaptive.calls, adaptive.trained) == (None, None, 1, 1)
    text = cold.table(chapters, wall=500.0)
    assert "| sgd | 448 | 3 | 105 / 83 | 437 | 859 | 10 |" in text  # 447.5 and 10.5 round to even
    assert "| all | 468 | 4 | 106 / 84 | 449 | 870 | 31 |" in text
    assert "Build: 500 s (8.3 min) of wall time, 468 s of it executing chapters, 32 s Sphinx's own" in text


def test_cold_build_leaves_out_chapters_and_refuses_unknown_ones(capsys):
    cold = _load_cold_build()
    toc = {"format": "jb-book", "root": "book/index",
           "chapters": [{"file": "book/intro"}, {"file": "book/protocol"}, {"file": "book/conclusion"}]}
    assert cold.toc_chapters(cold.leave_out(toc, ["protocol", "conclusion"])) == ["intro"]
    assert cold.toc_chapters(toc) == ["intro", "protocol", "conclusion"]  # the toc given is left as it was
    with pytest.raises(ValueError, match=r"no chapter 'protocols' in _toc.yml; its chapters are intro, protocol"):
        cold.leave_out(toc, ["protocols"])
    assert cold.main(["--leave-out", "nosuchchapter"]) == 2
    assert "--leave-out: no chapter 'nosuchchapter' in _toc.yml; its chapters are intro, sgd" \
        in capsys.readouterr().err


@pytest.mark.parametrize("bad, why", [("{explorer: false}", "--parameters: not JSON"),
                                      ("[1, 2]", "--parameters: must be a JSON object of chapter parameters")])
def test_cold_build_refuses_parameters_that_are_not_a_json_object(bad, why, capsys):
    cold = _load_cold_build()
    assert cold.parameters_json('{"explorer": false}') == '{"explorer": false}'
    with pytest.raises(SystemExit):
        cold.parse_args(["--parameters", bad])
    assert why in capsys.readouterr().err


def test_cold_build_refuses_a_folder_that_exists(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _load_cold_build().parse_args(["--dir", str(tmp_path)])
    assert f"--dir {tmp_path} exists already" in capsys.readouterr().err


def test_cold_build_says_when_jupyter_book_is_missing(tmp_path, monkeypatch):
    cold = _load_cold_build()
    monkeypatch.setattr(cold.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"no jupyter-book beside .* or on PATH: install the project's requirements"):
        cold.jupyter_book()


def test_cold_build_environment_starts_from_nothing(tmp_path, monkeypatch):
    """The build sees an empty home, Numba cache and results store, the clone first on the path, and only the
    parameters it was given, whatever this environment holds."""
    cold = _load_cold_build()
    for name, value in (("EX3_RESULTS_DIR", "/warm/store"), ("EX3_CACHE_DIR", "/warm/mnist"),
                        ("EX3_BOOK_PARAMETERS", '{"train_size": 10}'), ("EX3_PROGRESS", "0"),
                        ("PYTHONPATH", "/elsewhere"), ("NUMBA_CACHE_DIR", "/warm/numba")):
        monkeypatch.setenv(name, value)
    env = cold.build_environment(tmp_path, tmp_path / "clone", None)
    assert env["HOME"] == str(tmp_path / "home") and env["NUMBA_CACHE_DIR"] == str(tmp_path / "numba")
    assert env["EX3_RESULTS_DIR"] == str(tmp_path / "results") and "EX3_CACHE_DIR" not in env
    assert "EX3_BOOK_PARAMETERS" not in env and env["EX3_PROGRESS"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / "clone"), "/elsewhere"]
    assert cold.build_environment(tmp_path, tmp_path, '{"explorer": false}')["EX3_BOOK_PARAMETERS"] \
        == '{"explorer": false}'


def test_cold_build_of_the_intro_alone(tmp_path):
    """The whole script on a book cut down to its first chapter: a clone of HEAD built from nothing (its own
    Numba cache filled, the chapter's time in the table), the folder kept with --keep."""
    import subprocess
    import sys

    import yaml

    if not (COLD_BUILD.parents[1] / ".git").exists():
        pytest.skip("cold_build.py clones the repository: this test needs a git checkout")
    toc = yaml.safe_load((COLD_BUILD.parents[1] / "_toc.yml").read_text())
    others = [name for name in _load_cold_build().toc_chapters(toc) if name != "intro"]
    folder = tmp_path / "cold"
    done = subprocess.run([sys.executable, str(COLD_BUILD), "--dir", str(folder), "--keep", "--leave-out", *others],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    clone = folder / COLD_BUILD.parents[1].name
    assert _load_cold_build().toc_chapters(yaml.safe_load((clone / "_toc.yml").read_text())) == ["intro"]
    assert (clone / "_build" / "html" / "book" / "intro.html").is_file()
    assert not (clone / "_build" / "html" / "book" / "sgd.html").exists()
    assert any((folder / "numba").rglob("*.nbi")), "the build compiled into its own, empty Numba cache"
    assert (folder / "build.log").is_file() and "-W" not in done.stdout.split("exited with")[0].split("\n")[-1]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| intro |"))
    assert float(row.split("|")[2].replace(",", "")) > 0, row
    assert "holds no run of this ex3lib version" in done.stdout  # the intro trains nothing
