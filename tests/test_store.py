"""Tests for the source fingerprint (ex3lib.fingerprint), the on-disk results store (ex3lib.store) and
run_many (ex3lib.runner)."""

import ast
import hashlib
import json
import multiprocessing
import os
import pathlib
import subprocess
import sys

import numpy as np
import platformdirs
import pytest

import ex3lib
from ex3lib import History, RunConfig, run
from ex3lib import fingerprint as fingerprint_mod
from ex3lib import runner as runner_mod
from ex3lib import store as store_mod
from ex3lib.data import MNIST
from ex3lib.fingerprint import source_fingerprint
from ex3lib.runner import run_many
from ex3lib.store import ResultsStore
from ex3lib.sysutil import PINNED_THREADS

TINY = dict(train_size=600, epochs=1, batch_size=10, log_every=300, layers=(784, 32, 10))
ARRAYS = ("epoch", "loss", "test_loss", "test_accuracy", "learning_rate", "time")


def tiny(**changes):
    """A run that trains for well under a second once the kernels are compiled."""
    return RunConfig(**{**TINY, **changes})


def assert_same_history(a, b, *, timing=True):
    """Equal histories, NaN positions included; ``timing=False`` skips the wall-clock fields."""
    for name in ARRAYS:
        if name == "time" and not timing:
            continue
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert a.config == b.config
    assert (a.diverged, a.reason, a.extra) == (b.diverged, b.reason, b.extra)
    if timing:
        assert a.seconds == b.seconds


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in pathlib.Path(root).rglob("*") if p.is_file())


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results")


@pytest.fixture(scope="module")
def trained(mnist):
    """A real history of ``tiny()``."""
    return run(tiny(), mnist, progress=False)


@pytest.fixture
def diverged():
    """A hand-made history with NaNs where a diverged run has them."""
    nan = np.nan
    return History(config={**tiny().to_dict(), "init_seed": 0}, epoch=np.array([0.0, 0.5, 0.75]),
                   loss=np.array([2.3, 40.0, nan]), test_loss=np.array([2.3, nan, nan]),
                   test_accuracy=np.array([0.1, 0.098, 0.098]), learning_rate=np.array([nan, 5.0, 5.0]),
                   time=np.array([0.01, 0.02, 0.03]), seconds=0.03, diverged=True,
                   reason="non-finite training loss (nan) at epoch 0.7500, after 45 updates",
                   extra={"updates": 45, "n_train": 600})


@pytest.fixture
def small_mnist(mnist):
    """The first 600 training and 500 test images: data that run_many must send to its workers."""
    return MNIST(mnist.x_train[:600], mnist.y_train[:600], mnist.x_test[:500], mnist.y_test[:500])


def test_source_fingerprint_is_a_cached_sha256():
    fp = source_fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert source_fingerprint() is fp
    assert source_fingerprint.__wrapped__() == fp


def test_source_fingerprint_covers_source_and_versions(monkeypatch):
    fp = source_fingerprint()
    read_bytes = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes",
                        lambda p: read_bytes(p) + (b"\n_edited = 1\n" if p.name == "training.py" else b""))
    assert source_fingerprint.__wrapped__() != fp
    monkeypatch.undo()
    monkeypatch.setattr(fingerprint_mod.numba, "__version__", "0.0.0")
    assert source_fingerprint.__wrapped__() != fp


def test_docstrings_comments_and_layout_are_outside_the_run_fingerprint(monkeypatch):
    # Editing only the prose of a module training imports keeps the stored runs
    # (and every docstring of optimisers.py is rewritten here); a chapter may
    # print that prose, so the chapters' fingerprint changes.
    fp, whole = source_fingerprint(), fingerprint_mod.chapter_fingerprint()
    read_bytes = pathlib.Path.read_bytes
    original = (pathlib.Path(fingerprint_mod.__file__).parent / "optimisers.py").read_bytes()

    def prose_edited(text):
        tree = ast.parse(text)
        docstrings = [node.body[0].value for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
                      and isinstance(node.body[0].value.value, str)]
        assert len(docstrings) > 5
        lines = text.decode().splitlines()
        for doc in sorted(docstrings, key=lambda d: -d.lineno):  # from the end: line numbers stay valid
            first = lines[doc.lineno - 1]
            indent = first[:len(first) - len(first.lstrip())]
            lines[doc.lineno - 1:doc.end_lineno] = [f'{indent}"""Rewritten."""', f"{indent}# a comment", ""]
        return ("# edited\n\n" + "\n".join(lines) + "\n\n\n").encode()

    for edit, same in ((prose_edited, True), (lambda t: t.replace(b'{"rmsprop": 0.9,', b'{"rmsprop": 0.8,'), False),
                       (lambda t: t + b"\n_note = 'a string assigned is code'\n", False)):
        monkeypatch.setattr(pathlib.Path, "read_bytes",
                            lambda p, edit=edit: edit(read_bytes(p)) if p.name == "optimisers.py" else read_bytes(p))
        assert edit(original) != original
        assert (source_fingerprint.__wrapped__() == fp) is same
        assert fingerprint_mod.chapter_fingerprint.__wrapped__() != whole
        monkeypatch.undo()


def test_modules_training_does_not_import_are_outside_the_fingerprint(monkeypatch):
    fp, whole = source_fingerprint(), fingerprint_mod.chapter_fingerprint()
    read_bytes = pathlib.Path.read_bytes
    for name in ("plots.py", "store.py", "experiments.py", "explore.py", "report.py", "gradcheck.py",
                 "fingerprint.py", "runner.py"):
        monkeypatch.setattr(pathlib.Path, "read_bytes",
                            lambda p, name=name: read_bytes(p) + (b"\n_edited = 1\n" if p.name == name else b""))
        assert source_fingerprint.__wrapped__() == fp, name
        assert fingerprint_mod.chapter_fingerprint.__wrapped__() != whole, name
        monkeypatch.undo()


def test_run_sources_follow_the_import_statements(tmp_path, monkeypatch):
    sources = fingerprint_mod.run_sources()
    assert {"training.py", "data.py", "network.py", "optimisers.py", "schedules.py"} <= set(sources)
    assert not {"__init__.py", "store.py", "plots.py", "explore.py", "sweep.py", "sweep/__init__.py",
                "fingerprint.py", "runner.py"} & set(sources)
    # Relative, parent-relative, absolute and function-level imports, and submodules of a package.
    pkg = tmp_path / "ex3lib"
    (pkg / "sub").mkdir(parents=True)
    for rel, text in {"__init__.py": "from . import unused\n", "unused.py": "",
                      "root.py": "from . import a\nfrom .sub import b\nimport ex3lib.c\n",
                      "a.py": "def f():\n    from ex3lib.sub.d import g\n", "c.py": "", "never.py": "",
                      "sub/__init__.py": "", "sub/b.py": "from ..e import x\n", "sub/d.py": "", "e.py": ""}.items():
        (pkg / rel).write_text(text)
    monkeypatch.setattr(fingerprint_mod, "__file__", str(pkg / "fingerprint.py"))
    assert fingerprint_mod.run_sources(("root.py",)) == ["a.py", "c.py", "e.py", "root.py", "sub/__init__.py",
                                                   "sub/b.py", "sub/d.py"]


def test_a_run_loads_only_the_fingerprinted_modules():
    # What makes leaving the other modules out of the fingerprint safe: a run
    # cannot depend on them.  The package's __init__ (which re-exports
    # everything) is replaced by an empty package, so that only the modules a
    # run really imports are loaded.
    package = pathlib.Path(fingerprint_mod.__file__).parent
    code = ("import sys, types, numpy as np\n"
            f"pkg = types.ModuleType('ex3lib'); pkg.__path__ = [{str(package)!r}]\n"
            "sys.modules['ex3lib'] = pkg\n"
            "import ex3lib.training, ex3lib.data\n"
            "rng = np.random.default_rng(0)\n"
            "data = type('D', (), dict(x_train=rng.random((40, 784)), y_train=np.arange(40) % 10,\n"
            "                          x_test=rng.random((20, 784)), y_test=np.arange(20) % 10))\n"
            "ex3lib.training.run(ex3lib.training.RunConfig(epochs=1, log_every=20), data, progress=False)\n"
            "print(sorted(m for m in sys.modules if m.startswith('ex3lib.')))\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, timeout=300, capture_output=True,
                         text=True).stdout
    loaded = {m.removeprefix("ex3lib.").replace(".", "/") for m in eval(out)}
    covered = {rel.removesuffix(".py").removesuffix("/__init__") for rel in fingerprint_mod.run_sources()}
    assert loaded and loaded <= covered, loaded - covered


def test_put_get_round_trip(store, trained, diverged):
    store.put(tiny(), trained)
    store.put(tiny(seed=1), diverged)
    assert_same_history(store.get(tiny()), trained)
    back = store.get(tiny(seed=1))
    assert_same_history(back, diverged)
    assert np.isnan(back.loss[2]) and back.diverged and back.reason.startswith("non-finite")


def test_file_layout_and_contents(store, trained):
    config = tiny()
    key = store.key(config)
    assert len(key) == 64 and key == store.key(tiny()) != store.key(tiny(seed=1))
    store.put(config, trained)
    path = store.root / key[:2] / f"{key}.json"
    assert store.path(config) == path and path.is_file()
    stored = json.loads(path.read_text(encoding="utf-8"))
    content = {"format": store_mod.FORMAT, "fingerprint": source_fingerprint(),
               "config": json.loads(json.dumps(config.to_dict())),
               "history": json.loads(json.dumps(trained.to_dict()))}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    assert stored == {**content, "sha256": hashlib.sha256(canonical).hexdigest()}


def test_other_config_is_a_miss(store, trained):
    store.put(tiny(), trained)
    assert store.get(tiny(seed=1)) is None
    assert tiny() in store and tiny(seed=1) not in store and "x" not in store
    assert len(store) == 1


def test_result_of_other_source_is_never_reused(store, trained, monkeypatch):
    store.put(tiny(), trained)
    monkeypatch.setattr(store_mod, "source_fingerprint", lambda: "0" * 64)
    assert store.get(tiny()) is None and tiny() not in store
    # Files of other versions still count: they are on disk until cleared.
    assert len(store) == 1


def test_file_with_wrong_fingerprint_is_ignored(store, trained):
    store.put(tiny(), trained)
    path = store.path(tiny())
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "fingerprint": "0" * 64}))
    with pytest.warns(UserWarning, match="another version of ex3lib"):
        assert store.get(tiny()) is None


FORMAT = store_mod.FORMAT


@pytest.mark.parametrize("damage, problem", [
    (lambda text: text[: len(text) // 2], "not valid JSON"),
    (lambda text: "{corrupt", "not valid JSON"),
    (lambda text: "", "not valid JSON"),
    (lambda text: "[1, 2]", f"not a format-{FORMAT}"),
    (lambda text: text.replace(f'"format": {FORMAT}', f'"format": {FORMAT + 1}'), f"not a format-{FORMAT}"),
    (lambda text: text.replace('"loss"', '"lost"'), "does not match its checksum"),  # edited: the checksum tells first
])
def test_damaged_file_is_a_miss_with_one_warning(store, trained, damage, problem):
    store.put(tiny(), trained)
    path = store.path(tiny())
    path.write_text(damage(path.read_text()))
    with pytest.warns(UserWarning, match=problem) as record:
        assert store.get(tiny()) is None
        assert store.get(tiny()) is None
    assert len(record) == 1
    store.put(tiny(), trained)
    assert_same_history(store.get(tiny()), trained)


def test_file_of_another_config_is_a_miss(store, trained):
    store.put(tiny(seed=1), trained)
    store.path(tiny()).parent.mkdir(parents=True, exist_ok=True)
    store.path(tiny(seed=1)).replace(store.path(tiny()))
    with pytest.warns(UserWarning, match="another config"):
        assert store.get(tiny()) is None


def test_histories_lists_the_runs_of_this_version(store, trained, diverged):
    store.put(tiny(), trained)
    store.put(tiny(seed=1), diverged)
    kept = History.from_dict(trained.to_dict())
    kept.params = np.arange(3.0)
    store.put(tiny(keep_params=True), kept)
    listed = {store.key(config): history for config, history in store.histories()}
    assert set(listed) == {store.key(tiny()), store.key(tiny(seed=1)), store.key(tiny(keep_params=True))}
    assert_same_history(listed[store.key(tiny())], trained)
    assert_same_history(listed[store.key(tiny(seed=1))], diverged)
    assert listed[store.key(tiny(keep_params=True))].params is None
    assert "params_sha256" not in listed[store.key(tiny(keep_params=True))].extra


def test_histories_skips_other_versions_quietly_and_bad_files_with_a_warning(store, trained, recwarn):
    for seed in range(4):
        store.put(tiny(seed=seed), trained)
    other = store.path(tiny(seed=0))
    other.write_text(json.dumps({**json.loads(other.read_text()), "fingerprint": "0" * 64}))
    store.path(tiny(seed=1)).write_text("{corrupt")
    misnamed = store.path(tiny(seed=2))
    misnamed.replace(misnamed.with_name("f" * 64 + ".json"))
    (store.root / "ff").mkdir(exist_ok=True)
    misnamed.with_name("f" * 64 + ".json").replace(store.root / "ff" / ("f" * 64 + ".json"))
    assert [config for config, _ in store.histories()] == [tiny(seed=3)]
    problems = sorted(str(w.message) for w in recwarn.list)
    assert len(problems) == 2, problems
    assert "cannot be read as a result file" in " ".join(problems)
    assert "is not named after the config it holds" in " ".join(problems)


def test_put_leaves_no_temporary_file(store, trained):
    store.put(tiny(), trained)
    store.put(tiny(), trained)
    assert files_under(store.root) == [store.path(tiny()).relative_to(store.root).as_posix()]


def test_failed_put_keeps_the_old_file(store, trained, diverged, monkeypatch):
    store.put(tiny(), trained)
    before = store.path(tiny()).read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(json, "dump", fail)
    with pytest.raises(OSError, match="disk full"):
        store.put(tiny(), diverged)
    monkeypatch.undo()
    assert store.path(tiny()).read_bytes() == before
    assert len(files_under(store.root)) == 1
    assert_same_history(store.get(tiny()), trained)


def test_clear_removes_only_results(store, trained, diverged):
    store.put(tiny(), trained)
    store.put(tiny(seed=1), diverged)
    (store.root / "notes.txt").write_text("keep me")
    stray = store.path(tiny()).parent / f".{store.path(tiny()).name}.abc.tmp"
    stray.write_text("{")
    assert len(store) == 2
    assert store.clear() == 2
    assert len(store) == 0 and tiny() not in store
    assert files_under(store.root) == ["notes.txt"]


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("EX3_RESULTS_DIR", str(tmp_path))
    assert ResultsStore().root == tmp_path
    monkeypatch.delenv("EX3_RESULTS_DIR")
    assert ResultsStore().root == pathlib.Path(platformdirs.user_cache_dir("ex3")) / "results"
    assert ResultsStore(str(tmp_path)).root == tmp_path
    with pytest.raises(TypeError, match="root"):
        ResultsStore(3)


def test_store_argument_checks(store, trained):
    with pytest.raises(TypeError, match="config must be an ex3lib.RunConfig"):
        store.get({"seed": 0})
    with pytest.raises(TypeError, match="history must be an ex3lib.History"):
        store.put(tiny(), trained.to_dict())


def counting_run(monkeypatch):
    """Replace the in-process ``run`` of run_many by one that counts its calls."""
    calls = []

    def counted(config, data, progress=True):
        calls.append(config)
        return run(config, data, progress=progress)

    monkeypatch.setattr(runner_mod, "run", counted)
    return calls


def test_run_many_in_process_orders_merges_and_reuses(store, mnist, monkeypatch):
    a, b, c = tiny(), tiny(seed=1), tiny(learning_rate=0.05)
    calls = counting_run(monkeypatch)
    first = run_many([a, b, a, c, a], mnist, store=store, workers=1, progress=False)
    assert calls == [a, b, c]
    assert [h.config["seed"] for h in first] == [0, 1, 0, 0, 0]
    assert [h.config["learning_rate"] for h in first] == [0.1, 0.1, 0.1, 0.05, 0.1]
    assert first[0] is not first[2]
    assert_same_history(first[0], first[2])
    assert len(store) == 3

    mtimes = {p: os.stat(store.root / p).st_mtime_ns for p in files_under(store.root)}

    def no_training(*args, **kwargs):
        raise AssertionError("run_many trained a stored run")

    monkeypatch.setattr(runner_mod, "run", no_training)
    again = run_many(iter([c, a, b]), store=store, workers=1, progress=False)
    for got, want in zip(again, [first[3], first[0], first[1]]):
        assert_same_history(got, want)
    assert {p: os.stat(store.root / p).st_mtime_ns for p in files_under(store.root)} == mtimes


def test_run_many_without_store_writes_nothing(mnist, monkeypatch, tmp_path):
    monkeypatch.setenv("EX3_RESULTS_DIR", str(tmp_path))
    calls = counting_run(monkeypatch)
    hs = run_many([tiny(), tiny()], mnist, store=False, progress=False)
    assert len(calls) == 1 and len(hs) == 2
    assert files_under(tmp_path) == []
    assert run_many([], store=False) == []


def stray_children():
    """This process's child processes other than the workers run_many keeps for its next call."""
    kept = set(runner_mod._warm.pids())
    return [child for child in multiprocessing.active_children() if child.pid not in kept]


def test_run_many_in_parallel_matches_run_in_process(store, mnist, monkeypatch):
    for name in PINNED_THREADS:
        monkeypatch.delenv(name, raising=False)
    configs = [tiny(), tiny(seed=1, order="shuffle")]
    hs = run_many(configs, store=store, workers=2, progress=False)
    for config, got in zip(configs, hs):
        assert_same_history(got, run(config, mnist, progress=False), timing=False)
        assert_same_history(store.get(config), got)
    assert not any(name in os.environ for name in PINNED_THREADS)
    # Its two workers are kept for the next call, and nothing else is left running.
    assert len(runner_mod._warm.pids()) == 2 and stray_children() == []
    runner_mod._warm.close()
    assert multiprocessing.active_children() == []


def test_failed_runs_are_named(store, small_mnist):
    bad = MNIST(small_mnist.x_train, small_mnist.y_train, small_mnist.x_test[:, :783], small_mnist.y_test)
    configs = [tiny(), tiny(learning_rate=0.05)]
    with pytest.raises(RuntimeError, match="2 of 2 runs failed") as info:
        run_many(configs, bad, store=store, workers=2, progress=False)
    message = str(info.value)
    assert message.startswith("2 of 2 runs failed:\n")
    assert f"configs[0] {configs[0].label} (" in message and f"configs[1] {configs[1].label} (" in message
    assert "failed in training: ValueError: data.x_test" in message
    assert isinstance(info.value.__cause__, ValueError)
    assert len(store) == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_other_runs_are_stored_when_one_fails(store, small_mnist, workers):
    # Five output units cannot take MNIST's labels 5..9, so this config alone fails.
    good, bad, other = tiny(), tiny(layers=(784, 32, 5)), tiny(seed=1)
    with pytest.raises(RuntimeError, match=r"1 of 3 runs failed") as info:
        run_many([good, bad, other, bad], small_mnist, store=store, workers=workers, progress=False)
    assert "configs[1]" in str(info.value) and "configs[3]" not in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert good in store and other in store and bad not in store
    assert_same_history(store.get(good), run(good, small_mnist, progress=False), timing=False)


def test_interrupt_keeps_finished_runs_and_stops_workers(store, small_mnist, monkeypatch):
    put = ResultsStore.put

    def put_then_interrupt(self, config, history):
        put(self, config, history)
        raise KeyboardInterrupt

    monkeypatch.setattr(ResultsStore, "put", put_then_interrupt)
    configs = [tiny(seed=s) for s in range(4)]
    with pytest.raises(KeyboardInterrupt):
        run_many(configs, small_mnist, store=store, workers=2, progress=False)
    assert len(store) == 1
    assert stray_children() == []


def test_unwritable_store_warns_and_still_returns(store, mnist, monkeypatch):
    def fail(self, config, history):
        raise PermissionError("read-only")

    monkeypatch.setattr(ResultsStore, "put", fail)
    with pytest.warns(UserWarning, match="could not store the result"):
        hs = run_many([tiny()], mnist, store=store, progress=False)
    assert hs[0].config["seed"] == 0


def test_result_of_a_worker_with_other_source_is_not_stored(store, trained):
    with pytest.warns(UserWarning, match="trained by a process with other ex3lib source"):
        assert runner_mod._store(store, tiny(), trained, "0" * 64) is None
    assert len(store) == 0
    assert runner_mod._store(store, tiny(), trained, source_fingerprint()) is None
    assert tiny() in store


def test_default_mnist_is_loaded_by_workers_not_sent(mnist, small_mnist):
    assert runner_mod._is_default_mnist(mnist)
    assert not runner_mod._is_default_mnist(small_mnist)
    assert not runner_mod._is_default_mnist(MNIST(*(np.array(a) for a in (mnist.x_train, mnist.y_train,
                                                                            mnist.x_test, mnist.y_test))))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(configs=tiny()), TypeError, r"configs must be an iterable of RunConfig; for one run pass \[config\]"),
    (dict(configs=3), TypeError, "configs must be an iterable of RunConfig, got int"),
    (dict(configs=[tiny(), tiny().to_dict()]), TypeError, r"configs\[1\] must be an ex3lib.RunConfig, got dict"),
    (dict(workers=0), ValueError, "workers must be an integer >= 1, got 0"),
    (dict(workers=2.0), TypeError, "workers must be an integer"),
    (dict(store="results"), TypeError, "store must be a ResultsStore, None .* or False"),
    (dict(store=True), TypeError, "store must be a ResultsStore"),
    (dict(progress="yes"), TypeError, "progress must be True or False"),
    (dict(data=object()), TypeError, "data must have x_train, y_train, x_test and y_test"),
])
def test_run_many_argument_checks(kwargs, error, match, tmp_path):
    kwargs = {"configs": [tiny()], "store": ResultsStore(tmp_path), **kwargs}
    with pytest.raises(error, match=match):
        run_many(**kwargs)
    assert files_under(tmp_path) == []


def test_default_workers_from_the_environment(monkeypatch):
    monkeypatch.delenv("EX3_WORKERS", raising=False)
    assert runner_mod.default_workers() == (os.cpu_count() or 1)
    monkeypatch.setenv("EX3_WORKERS", "3")
    assert runner_mod.default_workers() == 3
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv("EX3_WORKERS", bad)
        with pytest.raises(ValueError, match=f"EX3_WORKERS must be a positive integer.*{bad!r}"):
            runner_mod.default_workers()
    with pytest.raises(ValueError, match="EX3_WORKERS"):
        run_many([RunConfig(epochs=1)], progress=False)


# ---------------------------------------------------------------------------- stored files validated


def rewrite(store, config, edit):
    """Edit a stored result's JSON with ``edit`` and give it a valid checksum: a file of the wrong
    shape that no checksum can catch, as an older or buggy writer would leave it."""
    path = store.path(config)
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored = edit(stored) or stored
    if isinstance(stored, dict) and "sha256" in stored:
        stored["sha256"] = store_mod._checksum(stored)
    path.write_text(json.dumps(stored), encoding="utf-8")


def assert_miss_then_replaced(store, config, history, problem):
    with pytest.warns(UserWarning, match=problem) as record:
        assert store.get(config) is None
        assert config not in store
    assert len(record) == 1
    store.put(config, history)
    assert_same_history(store.get(config), history)


def test_non_utf8_file_is_a_miss(store, trained):
    store.put(tiny(), trained)
    store.path(tiny()).write_bytes(b'{"format": 2, "history": "\xff\xfe"}')
    assert_miss_then_replaced(store, tiny(), trained, "is not UTF-8 text")


@pytest.mark.parametrize("edit, problem", [
    (lambda s: s["history"].update(diverged="false"), r"malformed history \(history.diverged must be true or false"),
    (lambda s: s["history"].update(loss=[]), r"malformed history \(history.loss must be a non-empty list"),
    (lambda s: s["history"].update(test_accuracy=[0.5]), "history's arrays must have one point each"),
    (lambda s: s["history"].update(extra=[1, 2]), "history.extra must be a dict"),
    (lambda s: s.update(history=[s["history"]]), "a history must be a dict, got list"),
    (lambda s: [s], f"not a format-{FORMAT} result file"),
    (lambda s: s.update(extra_field=1), f"not a format-{FORMAT} result file"),
    (lambda s: s.pop("sha256") and None, f"not a format-{FORMAT} result file"),
    (lambda s: s["history"].update(seconds=10 ** 400), r"malformed history \(int too large"),
], ids=["diverged-as-text", "empty-loss", "short-array", "extra-list", "history-list", "list-not-object",
        "unknown-field", "no-checksum", "huge-integer"])
def test_file_of_the_wrong_shape_is_a_miss(store, trained, edit, problem):
    store.put(tiny(), trained)
    rewrite(store, tiny(), edit)
    assert_miss_then_replaced(store, tiny(), trained, problem)


@pytest.mark.parametrize("edit", [
    lambda s: s["history"]["loss"].__setitem__(-1, s["history"]["loss"][-1] / 2),   # a better result, by hand
    lambda s: s["history"].update(diverged=not s["history"]["diverged"]),
    lambda s: s["history"]["extra"].update(updates=1),
    lambda s: s["history"].update(seconds=10 ** 400),   # an edit that would also break the history
], ids=["loss", "diverged", "extra", "huge-integer"])
def test_hand_edited_file_is_a_miss(store, trained, edit):
    store.put(tiny(), trained)
    path = store.path(tiny())
    stored = json.loads(path.read_text())
    edit(stored)
    path.write_text(json.dumps(stored))
    assert_miss_then_replaced(store, tiny(), trained, "does not match its checksum")


def test_bit_rot_is_a_miss(store, trained):
    store.put(tiny(), trained)
    path = store.path(tiny())
    text = path.read_text()
    i = text.index('"test_accuracy": [') + len('"test_accuracy": [') + 3  # a digit of the first value
    digit = text[i]
    assert digit.isdigit()
    path.write_text(text[:i] + str((int(digit) + 1) % 10) + text[i + 1:])
    assert_miss_then_replaced(store, tiny(), trained, "does not match its checksum")


def test_nan_and_infinity_literals_are_not_json(store, trained):
    store.put(tiny(), trained)
    rewrite(store, tiny(), lambda s: s["history"].update(seconds="nan"))
    path = store.path(tiny())
    path.write_text(path.read_text().replace('"seconds": "nan"', '"seconds": NaN'))
    assert_miss_then_replaced(store, tiny(), trained, "NaN is not JSON")


def test_run_many_reruns_and_rewrites_a_damaged_result(store, small_mnist, monkeypatch):
    # What used to raise out of every later run_many until the file was deleted by hand.
    run_many([tiny()], small_mnist, store=store, workers=1, progress=False)
    rewrite(store, tiny(), lambda s: s["history"].update(diverged="false"))
    calls = counting_run(monkeypatch)
    with pytest.warns(UserWarning, match="malformed history"):
        (again,) = run_many([tiny()], small_mnist, store=store, workers=1, progress=False)
    assert calls == [tiny()] and again.diverged is False
    assert_same_history(store.get(tiny()), again)


def test_non_finite_numbers_round_trip(store, diverged):
    diverged.loss[1] = np.inf
    diverged.test_loss[1] = -np.inf
    diverged.extra["effective_step"] = [[[np.inf, np.nan, -np.inf]]]
    store.put(tiny(seed=1), diverged)
    json.loads(store.path(tiny(seed=1)).read_text(), parse_constant=pytest.fail)  # strict JSON on disk
    back = store.get(tiny(seed=1))
    assert back.loss[1] == np.inf and back.test_loss[1] == -np.inf and np.isnan(back.loss[2])
    steps = back.extra["effective_step"][0][0]
    assert steps[0] == np.inf and np.isnan(steps[1]) and steps[2] == -np.inf
    assert json.dumps(back.extra) == json.dumps(diverged.extra)  # NaN != NaN, but prints alike
    back.extra = diverged.extra
    assert_same_history(back, diverged)


def test_an_infinite_effective_step_is_stored(store, small_mnist):
    # The example: an eps that validation accepts gives an infinite step in History.extra,
    # which json refused, so the store raised out of run_many.
    config = tiny(optimiser="adam", eps=5e-324, learning_rate=0.001)
    with np.errstate(over="ignore", invalid="ignore"):
        hist = run(config, small_mnist, progress=False)
    by_input = np.array(hist.extra["first_layer_step_by_input"])
    assert np.isinf(by_input).any() and np.isnan(hist.extra["effective_step"][0]).all()
    store.put(config, hist)
    back = store.get(config)
    assert np.array_equal(back.extra["first_layer_step_by_input"], by_input)
    assert json.dumps(back.extra) == json.dumps(hist.extra)


@pytest.mark.parametrize("damage, message", [
    (lambda h: h.extra.update(steps=np.zeros(3)), r"history.extra\['steps'\] holds a ndarray"),
    (lambda h: h.extra.update({3: 1}), r"history.extra has a key 3 that is not text"),
    (lambda h: h.extra.update(note="inf"), r"history.extra\['note'\] is the text 'inf'"),
    (lambda h: setattr(h, "loss", h.loss[:-1]), "history's arrays must have one point each"),
    (lambda h: setattr(h, "loss", np.array([])), "history.loss must be a non-empty 1-D array"),
    (lambda h: setattr(h, "diverged", "no"), "history.diverged must be True or False"),
    (lambda h: setattr(h, "seconds", None), "history.seconds must be a number"),
    (lambda h: setattr(h, "config", [1]), "history.config must be a dict"),
])
def test_put_refuses_what_it_cannot_store_faithfully(store, trained, damage, message):
    import copy

    bad = copy.deepcopy(trained)
    damage(bad)
    with pytest.raises(ValueError, match=message):
        store.put(tiny(), bad)
    assert files_under(store.root) == []


def test_put_raises_only_the_documented_exceptions(store, trained):
    with pytest.raises(TypeError, match="config must be an ex3lib.RunConfig"):
        store.put({"seed": 0}, trained)
    store.path(tiny()).parent.parent.mkdir(parents=True)
    store.path(tiny()).parent.write_text("a file where the store's folder goes")
    with pytest.raises(OSError):
        store.put(tiny(), trained)


def test_store_root_that_is_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"root .*file.* cannot hold a results store: .* is a file"):
        ResultsStore(tmp_path / "file")
    with pytest.raises(ValueError, match=r"is a file, not a folder"):
        ResultsStore(tmp_path / "file" / "below")
    monkeypatch.setenv("EX3_RESULTS_DIR", str(tmp_path / "file"))
    with pytest.raises(ValueError, match=r"\$EX3_RESULTS_DIR .* cannot hold a results store"):
        ResultsStore()


def test_kept_parameters_round_trip_through_the_store_and_the_workers(store, small_mnist):
    configs = [tiny(keep_params=True), tiny(keep_params=True, seed=1)]
    hs = run_many(configs, small_mnist, store=store, workers=2, progress=False)
    for config, got in zip(configs, hs):
        net = ex3lib.MLP(config.layers, seed=config.seed)
        alone = ex3lib.train(net, small_mnist, config, progress=False)
        assert np.array_equal(got.params, net.params) and np.array_equal(alone.params, net.params)
        back = store.get(config)
        assert np.array_equal(back.params, got.params) and back.extra == got.extra
    # A plain run of a third seed keeps nothing, under its own key.
    plain = run_many([tiny(seed=2)], small_mnist, store=store, progress=False)[0]
    assert plain.params is None and store.path(tiny(seed=2)) != store.path(tiny(seed=2, keep_params=True))
    assert sorted(p.name.split(".", 1)[1] for p in store.root.rglob("*.*")) == [
        "json", "json", "json", "params.npy", "params.npy"]


def test_a_kept_run_answers_for_the_same_run_without_keep_params(store, small_mnist, monkeypatch):
    """keep_params changes what is kept, not the run: the kept run is returned without its parameters."""
    kept = run_many([tiny(keep_params=True)], small_mnist, store=store, progress=False)[0]

    def no_training(*args, **kwargs):
        raise AssertionError("run_many trained a run the store holds with its parameters")

    monkeypatch.setattr(runner_mod, "run", no_training)
    plain = run_many([tiny()], small_mnist, store=store, workers=1, progress=False)[0]
    assert tiny() in store and plain.params is None
    assert plain.config == {**kept.config, "keep_params": False} and "params_sha256" not in plain.extra
    kept.config["keep_params"] = False
    assert_same_history(plain, kept)
    assert len(store) == 1  # nothing was written
    # Trained on its own, the plain run is the same bits (but for the wall-clock fields).
    monkeypatch.undo()
    assert_same_history(run(tiny(), small_mnist, progress=False), plain, timing=False)


def test_a_plain_run_does_not_answer_for_a_kept_one(store, small_mnist):
    run_many([tiny()], small_mnist, store=store, progress=False)
    assert tiny(keep_params=True) not in store and store.get(tiny(keep_params=True)) is None


def test_a_damaged_kept_run_does_not_answer_for_a_plain_one(store, small_mnist):
    config = tiny(keep_params=True)
    store.put(config, run(config, small_mnist, progress=False))
    path = store.path(config)
    path.write_text(path.read_text().replace('"n_train": 600', '"n_train": 601'))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        assert store.get(tiny()) is None


@pytest.mark.parametrize("damage, problem", [
    ("delete", "has lost its parameters file"),
    ("edit", "does not match its checksum"),
    ("truncate", "unreadable parameters file"),
    ("pickle", "unreadable parameters file"),
])
def test_damaged_parameters_file_is_a_miss(store, mnist, damage, problem):
    config = tiny(keep_params=True)
    store.put(config, run(config, mnist, progress=False))
    params_file = store.path(config).with_name(store.path(config).stem + ".params.npy")
    if damage == "delete":
        params_file.unlink()
    elif damage == "edit":
        values = np.load(params_file)
        values[7] = np.nextafter(values[7], 1.0)
        np.save(params_file, values)
    elif damage == "truncate":
        params_file.write_bytes(params_file.read_bytes()[:100])
    else:
        np.save(params_file, np.array([{"not": "an array"}], dtype=object), allow_pickle=True)
    with pytest.warns(UserWarning, match=problem):
        assert store.get(config) is None


def test_put_refuses_a_kept_run_without_its_parameters(store, trained):
    with pytest.raises(ValueError, match="keep_params=True.*history.params"):
        store.put(tiny(keep_params=True), trained)
    assert files_under(store.root) == [] if store.root.exists() else True


def test_clear_removes_parameters_files(store, mnist):
    config = tiny(keep_params=True)
    store.put(config, run(config, mnist, progress=False))
    assert store.clear() == 1
    assert files_under(store.root) == []


def test_measurements_round_trip_and_damage_is_a_miss(store):
    key = {"run": "ab" * 32, "epsilon": 1e-3}
    assert store.get_measurement("sharpness", key) is None
    store.put_measurement("sharpness", key, {"top_eigenvalue": 12.5, "residual": float("inf")})
    assert store.get_measurement("sharpness", key) == {"top_eigenvalue": 12.5, "residual": float("inf")}
    assert store.get_measurement("sharpness", {**key, "epsilon": 5e-4}) is None
    path, = (store.root / "measurements" / "sharpness").glob("*.json")
    path.write_text(path.read_text().replace("12.5", "13.5"))
    with pytest.warns(UserWarning, match="does not match its checksum"):
        assert store.get_measurement("sharpness", key) is None
    path.write_bytes(b"\xff")
    with pytest.warns(UserWarning, match="cannot be read as JSON"):
        assert ResultsStore(store.root).get_measurement("sharpness", key) is None
    with pytest.raises(ValueError, match="kind must be a lower-case name"):
        store.put_measurement("../x", key, {})
    store.put_measurement("sharpness", key, {"top_eigenvalue": 1.0})
    store.clear()
    assert not (store.root / "measurements").exists()
