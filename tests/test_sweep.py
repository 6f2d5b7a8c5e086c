"""The papermill sweep command: grids, validation, failures, resuming after a kill, Dask."""

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from ex3lib import sweep as sw
from ex3lib.sweep import point as sweep_point
from ex3lib.sweep import runner as sweep_runner
from localcluster import local_cluster, require_distributed

ROOT = Path(__file__).resolve().parents[1]
TOY_PARAMETERS = '''x: float = 1.0  # a number
n: int = 2  # a count
fail: bool = False  # raise in the second cell
sleep: float = 0.0  # seconds to wait before gluing
label: str = "a"  # some text
values: list = [1, 2]  # a list'''
TOY_BODY = '''import time
from myst_nb import glue
time.sleep(sleep)
if fail:
    raise ValueError(f"asked to fail at x {x}")
glue("y", float(x * n), display=False)
glue("label_out", label + "!", display=False)
glue("total", sum(values), display=False)'''


def make_toy(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(TOY_PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(TOY_BODY)]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module", autouse=True)
def _no_book_parameters():
    # A sweep refuses EX3_BOOK_PARAMETERS, which CI sets for the chapters (.ci/run); these tests run sweeps.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("EX3_BOOK_PARAMETERS", raising=False)
        yield


@pytest.fixture
def toy(tmp_path):
    return make_toy(tmp_path / "toy.ipynb")


def cli(*args, cwd, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "ex3lib.sweep", *map(str, args), "--no-progress"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600, **kw)


def read_csv(path):
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- parsing and validation


@pytest.mark.parametrize("text, kind, expected", [
    ("0.1,0.01", None, [0.1, 0.01]),
    ("1e-3", "float", [0.001]),
    ("[0.1, 0.01]", "list", [[0.1, 0.01]]),
    ("[0.1],[0.01]", "list", [[0.1], [0.01]]),
    ("[]", "list", [[]]),
    ("true,False", "bool", [True, False]),
    ("sequential,shuffle", "str", ["sequential", "shuffle"]),
    ("3,'a,b'", "str", ["3", "a,b"]),
    ("{'a': 1, 'b': 2}", "dict", [{"a": 1, "b": 2}]),
])
def test_parse_values(text, kind, expected):
    assert sw.parse_values(text, kind) == expected


def test_grid_expands_in_order_with_fixed_parameters(toy):
    sweep = sw.make_sweep(toy, {"x": [0.5, 2], "n": [1, 3]}, {"label": "b"})
    assert [p.swept for p in sweep.points] == [{"x": 0.5, "n": 1}, {"x": 0.5, "n": 3},
                                              {"x": 2.0, "n": 1}, {"x": 2.0, "n": 3}]
    assert all(p.parameters["label"] == "b" for p in sweep.points)
    assert [p.name for p in sweep.points][0] == "x=0.5,n=1"
    assert len({p.name for p in sweep.points}) == 4
    # An int where the notebook declares a float is converted, so 2 and 2.0 are one point.
    assert isinstance(sweep.points[2].swept["x"], float)


def test_unknown_parameter_refused_before_anything_runs(toy, tmp_path):
    with pytest.raises(sw.SweepError, match=r"no parameter 'lerning_rate'.*declares: x, n, fail"):
        sw.make_sweep(toy, {"lerning_rate": [0.1, 0.2]}, {})
    with pytest.raises(sw.SweepError, match=r"no parameter 'xx' \(did you mean x\?\)"):
        sw.make_sweep(toy, {}, {"xx": 1.0})
    result = cli(toy, "-p", "xx", "1,2", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert "no parameter 'xx'" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("grid, fixed, message", [
    ({"n": [1, 2.5]}, {}, r"n: 2\.5 \(float\) is not an int"),
    ({}, {"fail": 1}, r"fail: 1 \(int\) is not a bool"),
    ({}, {"label": 3}, r"label: 3 \(int\) is not a str"),
    ({}, {"values": 3}, r"values: 3 \(int\) is not a list"),
    ({"x": ["abc"]}, {}, r"x: 'abc' \(str\) is not a float"),
    ({"x": [1.0, 1]}, {}, r"x: the value 1\.0 is listed twice"),
    ({"x": []}, {}, r"x: the values to sweep must be a non-empty list"),
])
def test_wrong_types_refused(toy, grid, fixed, message):
    with pytest.raises(sw.SweepError, match=message):
        sw.make_sweep(toy, grid, fixed)


def test_cli_wrong_type_names_parameter(toy, tmp_path):
    result = cli(toy, "-p", "n", "1,2.5", "-p", "x", "abc", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert "n: 2.5 (float) is not an int" in result.stderr
    assert "x: 'abc' (text) is not a float" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_notebook_problems(tmp_path):
    with pytest.raises(sw.SweepError, match="does not exist"):
        sw.make_sweep(tmp_path / "missing.ipynb", {}, {})
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(sw.SweepError, match="declares no parameters"):
        sw.make_sweep(tmp_path / "plain.ipynb", {}, {})


def test_grid_file(toy, tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("grid:\n  x: [0.5, 1e-3]\n  n: [1, 2]\nparameters:\n  label: b\n")
    grid, fixed = sw.read_grid_file(grid_file)
    sweep = sw.make_sweep(toy, grid, fixed)
    assert [p.swept["x"] for p in sweep.points] == [0.5, 0.5, 0.001, 0.001]  # YAML's "1e-3" text
    for text, message in [("grid: [1, 2]\n", "must map parameter names"),
                          ("grid:\n  x: 1\n", r"grid\.x .* must be a non-empty list"),
                          ("grids:\n  x: [1]\n", "unknown key.*'grids'"),
                          ("grid:\n  x: [1]\nparameters:\n  x: 2\n", "both swept"),
                          ("grid: {x: [1\n", "not valid YAML")]:
        grid_file.write_text(text)
        with pytest.raises(sw.SweepError, match=message):
            sw.read_grid_file(grid_file)


def test_bad_options(toy, tmp_path):
    sweep = sw.make_sweep(toy, {}, {})
    for kwargs, message in [({"workers": 0}, "workers must be a positive integer"),
                            ({"retries": -1}, "retries must be an integer >= 0"),
                            ({"start_timeout": 0}, "start_timeout must be a positive")]:
        with pytest.raises(sw.SweepError, match=message):
            sw.run_sweep(sweep, out=tmp_path / "runs", progress=False, log=lambda s: None, **kwargs)



def test_a_sweep_refuses_the_book_parameters_variable(toy, tmp_path, monkeypatch):
    # A sweep's points run with their own parameters; EX3_BOOK_PARAMETERS would replace them.
    monkeypatch.setenv("EX3_BOOK_PARAMETERS", '{"train_size": 10000}')
    with pytest.raises(sw.SweepError, match="EX3_BOOK_PARAMETERS is set .* unset it first"):
        sw.run_sweep(sw.make_sweep(toy, {}, {}), out=tmp_path / "runs", progress=False, log=lambda s: None)
    assert not (tmp_path / "runs").exists(), "nothing is written"


# ---------------------------------------------------------------------------- running


def test_failing_point_recorded_while_others_finish(toy, tmp_path):
    result = cli(toy, "-p", "x", "0.5,2", "-p", "fail", "False,True", "--out", tmp_path / "runs",
                 cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    out = tmp_path / "runs" / "toy"
    rows = {r["point"]: r for r in read_csv(out / "results.csv")}
    assert list(rows) == ["x=0.5,fail=False", "x=0.5,fail=True", "x=2.0,fail=False", "x=2.0,fail=True"]
    assert rows["x=2.0,fail=False"]["status"] == "ok"
    assert float(rows["x=2.0,fail=False"]["y"]) == 4.0
    assert rows["x=2.0,fail=False"]["label_out"] == "a!"
    assert int(rows["x=2.0,fail=False"]["total"]) == 3
    failed = rows["x=0.5,fail=True"]
    assert failed["status"] == "failed" and failed["y"] == ""
    assert "ValueError: asked to fail at x 0.5" in failed["error"]
    record = json.loads((out / "x=0.5,fail=True.json").read_text())
    assert record["status"] == "failed" and "asked to fail" in record["error"]
    # The failed point's executed notebook is kept, with the error in it.
    nb = nbformat.read(out / "x=0.5,fail=True.ipynb", 4)
    assert any(o.get("ename") == "ValueError" for c in nb.cells for o in c.get("outputs", []))
    assert (out / "summary.png").stat().st_size > 0
    assert "2 ok, 2 failed, 0 pending" in result.stdout


def test_rerun_skips_complete_points_and_reruns_stale_ones(toy, tmp_path):
    runs = tmp_path / "runs"
    first = cli(toy, "-p", "x", "1,2", "--out", runs, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    records = sorted((runs / "toy").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in records}
    second = cli(toy, "-p", "x", "1,2", "--out", runs, cwd=tmp_path)
    assert second.returncode == 0
    assert "2 point(s), 2 complete, 0 to run" in second.stdout
    assert {p: p.stat().st_mtime_ns for p in records} == stamps
    # A changed fixed parameter is another configuration, whose results are only replaced with --force.
    refused = cli(toy, "-p", "x", "1,2", "-p", "n", "5", "--out", runs, cwd=tmp_path)
    assert refused.returncode == 2
    assert "holds the results of other parameters for 2 point(s)" in refused.stderr
    assert "x=1.0: ran with n = the notebook's default; this sweep has n = 5" in refused.stderr
    assert "--force" in refused.stderr and "nothing was run or changed" in refused.stderr
    assert {p: p.stat().st_mtime_ns for p in records} == stamps
    third = cli(toy, "-p", "x", "1,2", "-p", "n", "5", "--force", "--out", runs, cwd=tmp_path)
    assert "0 complete, 2 to run" in third.stdout and "its parameters changed" in third.stdout
    assert [float(r["y"]) for r in read_csv(runs / "toy" / "results.csv")] == [5.0, 10.0]
    # So is an edited notebook.
    nb = nbformat.read(toy, 4)
    nb.cells[1].source += "\nglue('extra', 1, display=False)"
    nbformat.write(nb, toy)
    fourth = cli(toy, "-p", "x", "1,2", "-p", "n", "5", "--out", runs, cwd=tmp_path)
    assert "0 complete, 2 to run" in fourth.stdout and "the notebook changed" in fourth.stdout
    assert [r["extra"] for r in read_csv(runs / "toy" / "results.csv")] == ["1", "1"]
    # A record that cannot be read is never trusted.
    (runs / "toy" / "x=1.0.json").write_text("{truncated")
    fifth = cli(toy, "-p", "x", "1,2", "-p", "n", "5", "--out", runs, cwd=tmp_path)
    assert "1 complete, 1 to run" in fifth.stdout and "could not be read" in fifth.stdout


def test_second_sweep_into_same_folder_refused(toy, tmp_path):
    sweep = sw.make_sweep(toy, {}, {})
    root = tmp_path / "runs" / "toy"
    root.mkdir(parents=True)
    with sweep_runner._lock(root):
        with pytest.raises(sw.SweepError, match="another sweep is writing"):
            sw.run_sweep(sweep, out=tmp_path / "runs", progress=False, log=lambda s: None)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=lambda how: how.name)
def test_kill_and_resume(toy, tmp_path, how):
    runs = tmp_path / "runs"
    out = runs / "toy"
    args = [sys.executable, "-m", "ex3lib.sweep", str(toy), "-p", "x", "1,2,3,4,5,6", "-p", "sleep", "1.5",
            "--workers", "2", "--out", str(runs), "--no-progress"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(how)
    stdout, _ = proc.communicate(timeout=60)
    if how in (signal.SIGINT, signal.SIGTERM):  # both stop the sweep as Ctrl-C does
        assert proc.returncode == 130
        assert "interrupted" in stdout and "run the same command again" in stdout
        # The CSV lists every point, the unfinished ones as pending.
        statuses = [r["status"] for r in read_csv(out / "results.csv")]
        assert len(statuses) == 6 and "pending" in statuses
    else:
        assert proc.returncode == -signal.SIGKILL
    done = sorted(out.glob("*.json"))
    assert 1 <= len(done) < 6
    for record in done:  # every result that exists is whole
        assert json.loads(record.read_text())["status"] == "ok"
        nbformat.read(record.with_suffix(".ipynb"), 4)
    kept = {p.name: p.stat().st_mtime_ns for p in done}

    rerun = cli(toy, "-p", "x", "1,2,3,4,5,6", "-p", "sleep", "1.5", "--workers", "2", "--out", runs,
                cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"6 point(s), {len(done)} complete, {6 - len(done)} to run" in rerun.stdout
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept  # completed points not rerun
    rows = read_csv(out / "results.csv")
    assert [r["status"] for r in rows] == ["ok"] * 6
    assert [float(r["y"]) for r in rows] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    assert not list(out.glob(".*.tmp")), "no temporary file is left behind"


def test_transient_kernel_errors_are_recognised():
    assert sweep_point._TRANSIENT.search("RuntimeError: Kernel didn't respond in 60 seconds")
    assert sweep_point._TRANSIENT.search("DeadKernelError: Kernel died")
    assert not sweep_point._TRANSIENT.search("ValueError: asked to fail")


# ---------------------------------------------------------------------------- Dask and the real chapter



TIMING = re.compile(r"seconds|wall|speedup")


@pytest.fixture(scope="module")
def chapter_sweeps(tmp_path_factory):
    """The SGD chapter over a 2×2 grid (one epoch on 2,000 images), locally and on a LocalCluster.

    Each sweep starts from its own empty results store, so both really train.
    """
    require_distributed()
    base = tmp_path_factory.mktemp("chapter")
    args = ["-p", "learning_rate", "0.1,0.01", "-p", "batch_size", "10,100", "-p", "epochs", "1",
            "-p", "train_size", "2000", "-p", "n_seeds", "1", "-p", "long_epochs", "0",
            "-p", "learning_rates", "[]"]
    results = {}
    for where in ("local", "dask"):
        env = {**os.environ, "EX3_RESULTS_DIR": str(base / f"store-{where}"), "MPLBACKEND": "Agg"}
        runs = base / f"runs-{where}"
        if where == "local":
            proc = cli(ROOT / "book" / "sgd.ipynb", *args, "--out", runs, cwd=base, env=env)
        else:
            saved = dict(os.environ)
            os.environ.update(env)  # the cluster's workers inherit this environment
            try:
                with local_cluster() as cluster:
                    proc = cli(ROOT / "book" / "sgd.ipynb", *args, "--out", runs, "--scheduler",
                               cluster.scheduler_address, cwd=base, env=env)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results[where] = read_csv(runs / "sgd" / "results.csv"), runs / "sgd"
    return results


def test_chapter_grid_locally_and_on_dask_gives_identical_results(chapter_sweeps):
    (local, local_dir), (dask, dask_dir) = chapter_sweeps["local"], chapter_sweeps["dask"]
    assert [r["point"] for r in local] == [r["point"] for r in dask] == [
        "learning_rate=0.1,batch_size=10", "learning_rate=0.1,batch_size=100",
        "learning_rate=0.01,batch_size=10", "learning_rate=0.01,batch_size=100"]
    assert all(r["status"] == "ok" for r in local + dask)
    hosts = {json.loads(p.read_text())["host"] for p in dask_dir.glob("*.json")}
    assert hosts, "the Dask records name the worker's host"
    compared = 0
    for a, b in zip(local, dask):
        for key in a:
            if key in ("seconds", "attempts") or TIMING.search(key):
                continue
            assert a[key] == b[key], (a["point"], key, a[key], b[key])
            compared += 1
    assert compared > 4 * 10
    accuracy = [float(r["sgd_ref_final_accuracy"]) for r in local]
    assert all(0.12 < a < 1 for a in accuracy), accuracy  # all above the untrained 0.1
    assert len(set(accuracy)) == 4, "each point trains its own setting"
    assert (local_dir / "summary.png").stat().st_size > 0
    assert (dask_dir / "summary.png").stat().st_size > 0


def test_csv_columns_follow_the_notebooks_sweep_results(toy, tmp_path):
    nb = nbformat.read(toy, 4)
    nb.metadata["ex3"] = {"sweep_results": ["total", "y"], "sweep_metrics": ["y"]}
    nbformat.write(nb, toy)
    result = cli(toy, "-p", "x", "1,2", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "toy"
    with open(out / "results.csv", encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    assert header == ["point", "status", "x", "total", "y", "seconds", "attempts", "error"]
    # The record keeps everything the notebook glued; --all-results puts it all in the CSV.
    assert json.loads((out / "x=1.0.json").read_text())["results"]["label_out"] == "a!"
    again = cli(toy, "-p", "x", "1,2", "--all-results", "--out", tmp_path / "runs", cwd=tmp_path)
    assert "2 complete, 0 to run" in again.stdout
    assert "label_out" in read_csv(out / "results.csv")[0]


def test_kernel_start_timeouts_are_retried_and_cell_errors_are_not(monkeypatch, toy):
    import papermill

    monkeypatch.setenv("MPLBACKEND", "Agg")  # execute_point sets it for the kernels it starts
    calls = []
    executed = nbformat.read(toy, 4)

    def flaky(nb, out, **kwargs):
        calls.append(kwargs["parameters"])
        if len(calls) < 3:
            raise RuntimeError("Kernel didn't respond in 60 seconds")
        return executed

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    text = toy.read_text()
    outcome = sw.execute_point(text, {"x": 2.0}, retries=2)
    assert outcome["status"] == "ok" and outcome["attempts"] == 3 and len(calls) == 3

    calls.clear()
    outcome = sw.execute_point(text, {"x": 2.0}, retries=1)
    assert outcome["status"] == "failed" and outcome["attempts"] == 2
    assert "Kernel didn't respond" in outcome["error"]

    def broken(nb, out, **kwargs):
        calls.append(1)
        raise OSError("disk full")

    calls.clear()
    monkeypatch.setattr(papermill, "execute_notebook", broken)
    outcome = sw.execute_point(text, {"x": 2.0}, retries=2)
    assert outcome["status"] == "failed" and len(calls) == 1 and "OSError: disk full" in outcome["error"]


# ---------------------------------------------------------------------------- records validated, nothing destroyed


def _recorded_point(toy, tmp_path):
    """A toy point with a valid record (as run_sweep writes it) and its notebook, in a SweepFolder."""
    sweep = sw.make_sweep(toy, {"x": [1.0, 2.0]}, {})
    point = sweep.points[0]
    folder = sw.SweepFolder(tmp_path / "runs" / "toy")
    folder.root.mkdir(parents=True)
    identity = sw.point_identity(toy.read_bytes())
    record = {**identity, "point": point.name, "notebook": str(toy), "parameters": point.parameters,
              "swept": point.swept, "finished": "2026-12-01T00:00:00+00:00", "status": "ok", "error": None,
              "results": {"y": 2.0, "label_out": "a!", "total": 3, "nan": float("nan"), "inf": float("inf")},
              "seconds": 1.5, "attempts": 1, "host": "here"}
    folder.write_point(point, record, toy.read_text())
    return folder, point, identity


def test_a_valid_record_is_complete_and_keeps_non_finite_results(toy, tmp_path):
    folder, point, identity = _recorded_point(toy, tmp_path)
    record = folder.read_record(point)
    assert sw.point_status(record, point, identity, folder) == ("done", None)
    assert record["results"]["inf"] == float("inf") and math.isnan(record["results"]["nan"])
    assert record["sha256"] == sw.record_checksum(record)


def _edit_json(edit):
    def damage(path):
        record = json.loads(path.read_text())
        record = edit(record) or record
        path.write_text(json.dumps(record))
    return damage


def _edit_json_rechecksummed(edit):
    """A record of the wrong shape that carries a valid checksum, as a buggy writer would leave it."""
    def damage(path):
        record = json.loads(path.read_text())
        record = edit(record) or record
        if isinstance(record, dict):
            record["sha256"] = sw.record_checksum(record)
        path.write_text(json.dumps(record))
    return damage


@pytest.mark.parametrize("damage, problem", [
    # corrupt
    (lambda p: p.write_text(p.read_text()[:40]), "not valid JSON"),
    (lambda p: p.write_bytes(b""), "not valid JSON"),
    # non-UTF-8
    (lambda p: p.write_bytes(p.read_bytes().replace(b'"a!"', b'"\xff!"')), "not UTF-8 text"),
    # wrong shape (each gave a traceback)
    (_edit_json_rechecksummed(lambda r: [r]), "is not a record (a JSON object), but a list"),
    (_edit_json_rechecksummed(lambda r: r.update(results=[1, 2])), "has a results of the wrong type (list"),
    (_edit_json_rechecksummed(lambda r: r.update(status="done")), "has the status 'done', not one of ok, failed"),
    (_edit_json_rechecksummed(lambda r: r.update(seconds="1.5")), "has a seconds of the wrong type"),
    (_edit_json_rechecksummed(lambda r: r["results"].update(y=[1])), "has a result 'y' that is not a number"),
    (_edit_json_rechecksummed(lambda r: r.pop("parameters") and None), "has no parameters"),
    (_edit_json_rechecksummed(lambda r: r.update(version=1)), "was written in record format 1, not 2"),
    # edited by hand, or bit rot
    (_edit_json(lambda r: r["results"].update(y=3.0)), "does not match its checksum"),
    (_edit_json(lambda r: r.update(status="ok", error=None, attempts=2)), "does not match its checksum"),
], ids=["truncated", "empty", "non-utf8", "list", "results-list", "bad-status", "seconds-text",
        "result-list", "no-parameters", "old-format", "edited-result", "edited-attempts"])
def test_a_damaged_record_is_never_trusted(toy, tmp_path, damage, problem):
    folder, point, identity = _recorded_point(toy, tmp_path)
    damage(folder.record_path(point))
    record = folder.read_record(point)
    assert record["status"] == "unreadable" and problem in record["problem"], record
    state, why = sw.point_status(record, point, identity, folder)
    assert state == "todo" and why.startswith("its record could not be read (") and problem in why


def test_a_damaged_record_reruns_from_the_command_line(toy, tmp_path):
    runs = tmp_path / "runs"
    assert cli(toy, "-p", "x", "1,2,3", "--out", runs, cwd=tmp_path).returncode == 0
    out = runs / "toy"
    _edit_json_rechecksummed(lambda r: [r])(out / "x=1.0.json")                 # wrong shape
    (out / "x=2.0.json").write_bytes(b"\xff\xfe{}")                                # non-UTF-8
    _edit_json(lambda r: r["results"].update(y=-1.0))(out / "x=3.0.json")       # edited
    again = cli(toy, "-p", "x", "1,2,3", "--out", runs, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 point(s), 0 complete, 3 to run" in again.stdout
    assert "x=1.0: running again (its record could not be read (is not a record" in again.stdout
    assert "x=2.0: running again (its record could not be read (is not UTF-8 text))" in again.stdout
    assert "x=3.0: running again (its record could not be read (does not match its checksum" in again.stdout
    assert [float(r["y"]) for r in read_csv(out / "results.csv")] == [2.0, 4.0, 6.0]
    assert all(sw.record_problem(json.loads(p.read_text())) is None for p in out.glob("*.json"))


def test_non_utf8_grid_file_is_refused_with_status_2(toy, tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_bytes(b"grid:\n  x: [1, \xe9]\n")
    with pytest.raises(sw.SweepError, match=r"grid file .*grid\.yaml is not UTF-8 text \(byte 0xe9"):
        sw.read_grid_file(grid_file)
    result = cli(toy, "--grid", grid_file, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2 and "is not UTF-8 text" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text", ["[1,", "[1, 2", "1]", "'a"])
def test_unbalanced_brackets_are_refused_naming_the_parameter(toy, tmp_path, text):
    result = cli(toy, "-p", "values", text, "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "values:" in result.stderr and "is not a list" in result.stderr
    assert "brackets or quotes do not pair up" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_misspelt_metric_is_refused_before_anything_is_touched(toy, tmp_path):
    out = tmp_path / "runs" / "toy"
    out.mkdir(parents=True)
    (out / "summary.png").write_bytes(b"an earlier figure")
    result = cli(toy, "-p", "x", "1,2", "--metric", "yy", "--out", tmp_path / "runs", cwd=tmp_path)
    assert result.returncode == 2
    assert "--metric 'yy' (did you mean 'y'?)" in result.stderr and "Nothing was run or changed" in result.stderr
    assert (out / "summary.png").read_bytes() == b"an earlier figure"
    assert sorted(p.name for p in out.iterdir()) == ["summary.png"]
    dry = cli(toy, "-p", "x", "1,2", "--metric", "yy", "--dry-run", "--out", tmp_path / "runs", cwd=tmp_path)
    assert dry.returncode == 2 and "--metric 'yy'" in dry.stderr
    with pytest.raises(sw.SweepError, match="metrics must be a non-empty list"):
        sw.check_metrics(sw.make_sweep(toy, {}, {}), "y")


def test_glued_names_are_read_from_the_notebook(toy, tmp_path):
    names, dynamic = sw.glued_names(sw.make_sweep(toy, {}, {}))
    assert names == {"y", "label_out", "total"} and not dynamic
    nb = nbformat.read(toy, 4)
    nb.cells[1].source += "\nfor m in (1, 2):\n    glue(f'acc_{m}', m, display=False)\n%matplotlib inline"
    nbformat.write(nb, toy)
    names, dynamic = sw.glued_names(sw.make_sweep(toy, {}, {}))
    assert "y" in names and dynamic
    sw.check_metrics(sw.make_sweep(toy, {}, {}), ["acc_3"])  # may be glued at run time: checked later


def test_a_metric_no_point_glued_keeps_the_old_figure(toy, tmp_path):
    sweep = sw.make_sweep(toy, {"x": [1.0, 2.0]}, {})
    records = {p.name: {"status": "ok", "results": {"y": p.swept["x"] * 2}} for p in sweep.points}
    figure = tmp_path / "summary.png"
    figure.write_bytes(b"an earlier figure")
    with pytest.raises(sw.SweepError, match=r"no point glued 'acc_3' as a number, so .* was not drawn "
                                            r"\(an old one is kept\); numeric glued values: y"):
        sw.write_summary_figure(sweep, records, figure, ["y", "acc_3"])
    assert figure.read_bytes() == b"an earlier figure"
    assert sw.write_summary_figure(sweep, records, figure, ["y"]) == figure
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_summary_html_selects_each_setting_of_the_other_parameters(toy, tmp_path):
    sweep = sw.make_sweep(toy, {"x": [1.0, 2.0, 4.0], "n": [1, 2]}, {})
    records = {p.name: {"status": "ok", "results": {"y": p.swept["x"] * p.swept["n"], "y_std": 0.5}}
               for p in sweep.points if p.swept != {"x": 2.0, "n": 2}}
    page = tmp_path / "summary.html"
    assert sw.write_summary_html(sweep, records, page, ["y"]) == page
    text = page.read_text()
    assert (tmp_path / "plotly.min.js").stat().st_size > 1_000_000, "the page's script is beside it"
    assert '<script defer src="plotly.min.js">' in text and "http" not in text.split("<body")[0]
    data = json.loads(re.search(r'class="ex3-explorer-data">(.*?)</script>', text, re.S).group(1))
    assert data["kind"] == "curves" and data["axes"] == [
        {"label": "n", "choices": ["1", "2"], "control": "buttons", "value": 0}]
    assert data["groups"]["0"]["y"] == {"y": [1.0, 2.0, 4.0], "err": [0.5, 0.5, 0.5]}
    assert data["groups"]["1"]["y"]["y"] == [2.0, None, 8.0], "a point that did not finish is a gap"
    none_ok = {name: {"status": "failed", "error": "boom"} for name in records}
    assert sw.write_summary_html(sweep, none_ok, page, ["y"]) is None and not page.exists()


def test_records_of_other_parameters_are_listed_by_dry_run(toy, tmp_path):
    folder, point, _ = _recorded_point(toy, tmp_path)
    dry = cli(toy, "-p", "x", "1,2", "-p", "n", "3", "--dry-run", "--out", tmp_path / "runs", cwd=tmp_path)
    assert dry.returncode == 0
    assert ("x=1.0: to run (its parameters changed since it ran; the sweep refuses to replace it without "
            "--force)") in dry.stdout
    sweep = sw.make_sweep(toy, {"x": [1.0, 2.0]}, {"n": 3})
    before = folder.record_path(point).read_bytes()
    with pytest.raises(sw.SweepError, match=r"holds the results of other parameters for 1 point\(s\)"):
        sw.run_sweep(sweep, out=tmp_path / "runs", progress=False, log=lambda s: None)
    assert folder.record_path(point).read_bytes() == before
    assert not (folder.root / "results.csv").exists()


def test_sigint_stops_a_sweep_that_started_with_sigint_ignored(toy, tmp_path):
    # As in a sweep started by a script in the background (`cmd &`), or by nohup: whatever
    # pytest itself was started with, the sweep starts with SIGINT ignored here.
    runs = tmp_path / "runs"
    out = runs / "toy"
    args = [sys.executable, "-m", "ex3lib.sweep", str(toy), "-p", "x", "1,2,3,4,5,6", "-p", "sleep", "1.5",
            "--workers", "2", "--out", str(runs), "--no-progress"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 240
    while not list(out.glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in stdout
    assert "pending" in [r["status"] for r in read_csv(out / "results.csv")]
