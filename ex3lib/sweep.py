"""Hyperparameter sweeps over a chapter notebook, executed with papermill.

A sweep expands a grid of notebook parameters into points, executes the
notebook once per point with papermill and collects each point's glued values
(``myst_nb.glue`` scalars) into one CSV and a summary figure::

    python -m ex3lib.sweep book/sgd.ipynb -p learning_rate 0.1,0.01 -p batch_size 1,10,100
    python -m ex3lib.sweep book/sgd.ipynb --grid sweeps/table2.yaml

For a chapter ``book/sgd.ipynb`` the sweep writes into ``runs/sgd/``:

- ``<point>.ipynb``: the executed notebook of each point (with its error, if it failed);
- ``<point>.json``: the point's record (parameters, status, glued results, error,
  seconds), written last: a point is complete when its record says so;
- ``results.csv``: one row per point of the grid (``ok``, ``failed`` or ``pending``);
- ``summary.png``: the chosen metrics against the swept parameters.

Points run in parallel, one per CPU by default, each in its own process (papermill
starts a kernel per point); with ``--scheduler tcp://HOST:PORT`` (or
``$EX3_SWEEP_SCHEDULER``) they run on a Dask distributed cluster instead. A
point that fails is recorded with its error and the others go on; the exit
status is 1 if any failed. Rerunning the same sweep skips the points that are
complete for the same parameters, the same notebook and the same ex3lib source,
and runs the rest: a sweep killed mid-way loses no completed point. Every file
is written to a temporary name and renamed, so no file is ever half-written.

The grid is checked against the parameters the notebook declares (papermill's
notebook inspection of its ``parameters`` cell) before anything runs: an
unknown name or a value of the wrong type is refused with a message naming it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import difflib
import fcntl
import hashlib
import io
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as local_as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .data import _atomic_write
from .store import _PINNED_THREADS as _RUN_THREADS
from .store import _terminate_workers

SCHEDULER_ENV_VAR = "EX3_SWEEP_SCHEDULER"
DEFAULT_OUT = "runs"
RECORD_VERSION = 1

# Each point's kernel trains with one thread, as run_many's workers do; the points
# themselves run in parallel.
_PINNED_THREADS = {**_RUN_THREADS, "MKL_NUM_THREADS": "1"}
# Errors worth a second try: the kernel did not start in time or died under it.
_TRANSIENT = re.compile(r"kernel didn't respond|kernel died|dead kernel|timed? ?out waiting|"
                        r"failed to start the kernel|zmq", re.IGNORECASE)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=,+-]")


class SweepError(ValueError):
    """A sweep that cannot start: a bad grid, notebook or option. Nothing has run."""


# ----------------------------------------------------------------------------
# The grid


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its file name and every parameter passed to the notebook."""

    name: str
    swept: dict
    parameters: dict


@dataclass
class Sweep:
    """An expanded, validated sweep of one notebook."""

    notebook: Path
    declared: dict
    fixed: dict
    swept: dict
    points: list = field(default_factory=list)

    @property
    def chapter(self) -> str:
        return self.notebook.stem


def parse_values(text: str, kind: str | None = None) -> list:
    """Split a ``-p`` value on top-level commas and read each item as a literal.

    ``"0.1,0.01"`` is two values; ``"[0.1, 0.01]"`` one list; ``"[0.1],[0.01]"``
    two lists; ``"sequential"`` the string itself. Items are read as Python
    literals (``1e-3``, ``True``, ``'a,b'``), then as YAML (``true``, ``null``),
    else kept as text. For a parameter declared ``str`` (``kind="str"``) every
    item is text, quoted or not (``3`` is ``"3"``).
    """
    items = _split_top_level(text)
    if kind == "str":
        return [_unquote(item.strip()) for item in items]
    return [_literal(item.strip()) for item in items]


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(text)
            if isinstance(value, str):
                return value
    return text


def _split_top_level(text: str) -> list:
    items, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[({":
            depth += 1
        elif ch in "])}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


class _Text(str):
    """A ``-p`` item that is no literal: only a ``str`` parameter accepts it."""


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if isinstance(value, (bool, type(None))) and text:
        return value
    return _Text(text)


def read_grid_file(path) -> tuple[dict, dict]:
    """Read a YAML grid file: ``grid`` maps names to lists of values, ``parameters`` to fixed values.

    Example::

        grid:
          learning_rate: [0.1, 0.01, 0.001]
          batch_size: [1, 10, 100]
        parameters:
          n_seeds: 1
    """
    import yaml

    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SweepError(f"cannot read the grid file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"the grid file {path} is not valid YAML: {err}") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise SweepError(f"the grid file {path} must be a mapping with the keys 'grid' and/or "
                         f"'parameters', got a {type(content).__name__}")
    unknown = sorted(set(content) - {"grid", "parameters"})
    if unknown:
        raise SweepError(f"the grid file {path} has unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"allowed: 'grid' (name: list of values) and 'parameters' (name: value)")
    grid = content.get("grid") or {}
    fixed = content.get("parameters") or {}
    for key, value in (("grid", grid), ("parameters", fixed)):
        if not isinstance(value, dict):
            raise SweepError(f"'{key}' in {path} must map parameter names to values, "
                             f"got a {type(value).__name__}")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{name} in {path} must be a non-empty list of values, got {values!r}")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise SweepError(f"{', '.join(both)} in {path} is both swept (grid) and fixed (parameters)")
    return {str(k): list(v) for k, v in grid.items()}, {str(k): v for k, v in fixed.items()}


def declared_parameters(notebook) -> dict:
    """The parameters the notebook's ``parameters`` cell declares: name -> papermill's inspection."""
    import papermill

    notebook = Path(notebook)
    if not notebook.is_file():
        raise SweepError(f"notebook {notebook} does not exist")
    if notebook.suffix != ".ipynb":
        raise SweepError(f"{notebook} is not a notebook (.ipynb)")
    try:
        declared = papermill.inspect_notebook(str(notebook))
    except Exception as err:
        raise SweepError(f"cannot read the parameters of {notebook}: {type(err).__name__}: {err}") from None
    if not declared:
        raise SweepError(f"{notebook} declares no parameters: it needs a cell tagged 'parameters' "
                         f"with one 'name: type = value' per line")
    return declared


class _WrongType(Exception):
    pass


def _coerce(name, value, spec, notebook):
    """``value`` in the type the notebook declares for ``name``; raises _WrongType with a message."""
    kind = (spec.get("inferred_type_name") or "None").strip()
    shown = f"{value!r} ({'text' if isinstance(value, _Text) else type(value).__name__})"

    def wrong():
        article = "an" if kind[:1] in "aeiou" else "a"
        return _WrongType(f"{name}: {shown} is not {article} {kind}, the type {notebook} declares "
                          f"for {name}")

    if kind == "str":
        if isinstance(value, str):
            return str(value)
        raise wrong()
    if kind == "float" and isinstance(value, str):
        try:
            return float(value)  # from YAML, which reads 1e-3 as text
        except ValueError:
            raise wrong() from None
    if isinstance(value, _Text):
        if kind in ("None", ""):
            return str(value)
        raise wrong()
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    checks = {"int": isinstance(value, int) and not isinstance(value, bool),
              "float": number,
              "bool": isinstance(value, bool),
              "list": isinstance(value, list),
              "tuple": isinstance(value, (list, tuple)),
              "set": isinstance(value, (list, set)),
              "dict": isinstance(value, dict)}
    if kind not in checks:
        return value  # unannotated or a complex annotation: papermill passes it as given
    if not checks[kind]:
        raise wrong()
    return float(value) if kind == "float" else value


def make_sweep(notebook, grid=None, fixed=None) -> Sweep:
    """Validate a grid against the notebook's declared parameters and expand it into points.

    Parameters
    ----------
    notebook : path of a notebook with a ``parameters`` cell
    grid : dict name -> list of values, swept as a Cartesian product (in the given order)
    fixed : dict name -> value, passed to every point

    Raises
    ------
    SweepError
        An unknown parameter, a value of the wrong type, an empty list of values,
        or a parameter both swept and fixed. Every problem is listed.
    """
    notebook = Path(notebook)
    grid = dict(grid or {})
    fixed = dict(fixed or {})
    declared = declared_parameters(notebook)
    problems = []
    for name in list(grid) + list(fixed):
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{notebook} has no parameter {name!r}{hint}; it declares: "
                            f"{', '.join(declared)}")
    for name in set(grid) & set(fixed):
        problems.append(f"{name} is both swept and fixed")
    checked_grid, checked_fixed = {}, {}
    for name, values in grid.items():
        if name not in declared:
            continue
        if not isinstance(values, list) or not values:
            problems.append(f"{name}: the values to sweep must be a non-empty list, got {values!r}")
            continue
        coerced = []
        for value in values:
            try:
                value = _coerce(name, value, declared[name], notebook)
            except _WrongType as err:
                problems.append(str(err))
                continue
            if value in coerced:
                problems.append(f"{name}: the value {value!r} is listed twice")
            else:
                coerced.append(value)
        checked_grid[name] = coerced
    for name, value in fixed.items():
        if name not in declared:
            continue
        try:
            checked_fixed[name] = _coerce(name, value, declared[name], notebook)
        except _WrongType as err:
            problems.append(str(err))
    if problems:
        raise SweepError("invalid sweep of " + str(notebook) + ":\n  " + "\n  ".join(problems))

    sweep = Sweep(notebook=notebook, declared=declared, fixed=checked_fixed, swept=checked_grid)
    names = list(checked_grid)
    seen = {}
    for combo in itertools.product(*(checked_grid[n] for n in names)):
        swept = dict(zip(names, combo))
        name = point_name(swept)
        if name in seen:  # two values that print alike, e.g. 1 and 1.0 of an unannotated parameter
            name = f"{name}-{_digest(swept)[:8]}"
        seen[name] = True
        sweep.points.append(Point(name=name, swept=swept, parameters={**checked_fixed, **swept}))
    return sweep


def point_name(swept: dict) -> str:
    """A file name for a point: ``learning_rate=0.1,batch_size=10`` (``default`` with nothing swept)."""
    if not swept:
        return "default"
    text = ",".join(f"{k}={_short(v)}" for k, v in swept.items())
    name = _SAFE_NAME.sub("_", text)
    if len(name) > 120 or name != text:
        name = f"{name[:100]}-{_digest(swept)[:8]}"
    return name


def _short(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()


# ----------------------------------------------------------------------------
# Executing one point (in a worker process, or on a Dask worker)


def execute_point(notebook_text: str, parameters: dict, *, cwd=None, retries: int = 2,
                  start_timeout: float = 120, pinned: dict | None = None) -> dict:
    """Execute a notebook with papermill for one point; never raises for a failing notebook.

    Returns a dict with ``status`` (``"ok"`` or ``"failed"``), ``error``,
    ``results`` (the glued scalars), ``notebook`` (the executed notebook as
    JSON text, also when it failed), ``seconds``, ``attempts`` and ``host``.
    A kernel that does not start or dies is retried up to ``retries`` times.
    """
    import nbformat
    import papermill
    from papermill.exceptions import PapermillExecutionError

    os.environ.update(pinned or {})
    os.environ.setdefault("MPLBACKEND", "Agg")
    start = time.perf_counter()
    attempts, error, executed = 0, None, None
    with tempfile.TemporaryDirectory(prefix="ex3-sweep-") as tmp:
        out = Path(tmp) / "out.ipynb"
        while True:
            attempts += 1
            try:
                nb = papermill.execute_notebook(
                    nbformat.reads(notebook_text, as_version=4), str(out), parameters=parameters,
                    progress_bar=False, request_save_on_cell_execute=False,
                    start_timeout=start_timeout, cwd=cwd)
                executed, error = nbformat.writes(nb), None
                break
            except PapermillExecutionError as err:
                # A cell raised: papermill saved the notebook with the error in it.
                error = f"{err.ename}: {err.evalue} (in the cell executed {_ordinal(err.exec_count)})"
                executed = out.read_text(encoding="utf-8") if out.exists() else None
                break
            except Exception as err:
                error = f"{type(err).__name__}: {err}"
                executed = out.read_text(encoding="utf-8") if out.exists() else None
                if attempts > retries or not _TRANSIENT.search(error):
                    break
    results = glued_values(nbformat.reads(executed, as_version=4)) if executed else {}
    return {"status": "ok" if error is None else "failed", "error": error, "results": results,
            "notebook": executed, "seconds": time.perf_counter() - start, "attempts": attempts,
            "host": socket.gethostname()}


def _ordinal(n) -> str:
    if not isinstance(n, int):
        return "last"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def glued_values(nb) -> dict:
    """The scalars a notebook glued with ``myst_nb.glue``: name -> number, text, bool or None.

    Figures, tables and other rich values are left out; a value glued twice keeps the last.
    """
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", ()):
            meta = output.get("metadata", {}).get("scrapbook") or {}
            name = meta.get("name")
            # glue(..., display=False) prefixes the MIME types with application/papermill.record/.
            prefix = meta.get("mime_prefix") or ""
            data = {key[len(prefix):] if key.startswith(prefix) else key: value
                    for key, value in output.get("data", {}).items()}
            if not name or set(data) != {"text/plain"}:
                continue
            text = data["text/plain"]
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(text, None)
                if value is None:
                    continue
            if isinstance(value, (bool, int, float, str)) or value is None:
                values[name] = value
    return values


def _init_local_worker(cwd, pinned, log_path) -> None:
    """A local worker: its kernels use one thread each, log to the sweep's log, and die with the sweep."""
    os.environ.update(pinned)
    # The kernels' own messages (start-up warnings and the like) go to the log, not the terminal;
    # what a notebook prints is in its executed notebook.
    with contextlib.suppress(OSError):
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        os.dup2(log, 2)
        os.close(log)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the sweep itself handles Ctrl-C
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            # PR_SET_PDEATHSIG: SIGTERM when the sweep process dies, even by SIGKILL.
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    if cwd:
        os.chdir(cwd)


# ----------------------------------------------------------------------------
# The sweep


def _identity(notebook_bytes: bytes) -> dict:
    """What a point's result depends on besides its parameters: the notebook and the library."""
    from .store import chapter_fingerprint

    # Plots and sliders count here: a point's results are a whole executed chapter.
    return {"notebook_sha256": hashlib.sha256(notebook_bytes).hexdigest(),
            "ex3lib_fingerprint": chapter_fingerprint(), "version": RECORD_VERSION}


class _Outputs:
    """The sweep's folder: records, notebooks, the CSV and the figure."""

    def __init__(self, root: Path):
        self.root = root

    def record_path(self, point: Point) -> Path:
        return self.root / f"{point.name}.json"

    def notebook_path(self, point: Point) -> Path:
        return self.root / f"{point.name}.ipynb"

    def read_record(self, point: Point):
        try:
            return json.loads(self.record_path(point).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"status": "unreadable"}

    def write_point(self, point: Point, record: dict, notebook_json: str | None) -> None:
        # The notebook first, the record last: a record that says "ok" always
        # has its notebook beside it.
        if notebook_json is not None:
            _atomic_write(self.notebook_path(point), lambda f: f.write(notebook_json), mode="w")
        _atomic_write(self.record_path(point),
                      lambda f: json.dump(record, f, indent=1, sort_keys=True, allow_nan=True),
                      mode="w")

    def remove_leftovers(self) -> int:
        """Delete temporary files a killed sweep left mid-write; returns how many."""
        n = 0
        for path in self.root.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                n += 1
        return n


def point_status(record, point: Point, identity: dict, outputs: _Outputs):
    """``("done", None)`` if the point can be skipped, else ``("todo", why)`` (why None: never ran)."""
    if record is None:
        return "todo", None
    if record.get("status") == "unreadable":
        return "todo", "its record could not be read"
    if _jsonable(record.get("parameters")) != _jsonable(point.parameters):
        return "todo", "its parameters changed since it ran"
    for key, what in (("notebook_sha256", "the notebook"), ("ex3lib_fingerprint", "the ex3lib source"),
                      ("version", "the record format")):
        if record.get(key) != identity[key]:
            return "todo", f"{what} changed since it ran"
    if record.get("status") != "ok":
        return "todo", "it failed last time"
    if not outputs.notebook_path(point).is_file():
        return "todo", "its executed notebook is missing"
    return "done", None


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=True))


@dataclass
class SweepResult:
    """What a finished (or interrupted) sweep did."""

    out: Path
    csv: Path
    figure: Path | None
    ok: int
    failed: int
    skipped: int
    pending: int
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)


def run_sweep(sweep: Sweep, *, out=DEFAULT_OUT, workers=None, scheduler=None, retries=2,
              start_timeout=120.0, force=False, metrics=None, all_results=False, progress=True,
              log=print) -> SweepResult:
    """Execute every point of ``sweep`` that is not complete yet; write the CSV and the figure.

    Parameters
    ----------
    sweep : Sweep from :func:`make_sweep`
    out : folder; the sweep writes into ``out/<chapter>/``
    workers : int >= 1; local worker processes (default: one per CPU). Ignored with a scheduler.
    scheduler : address of a Dask distributed scheduler (``tcp://host:port``), or None for local processes
    retries : times a point whose kernel failed to start or died is tried again
    start_timeout : seconds a kernel may take to start
    force : run every point, even those already complete
    metrics : glued names to plot (default: the notebook's ``ex3.sweep_metrics`` metadata, else
        its first numeric results)
    all_results : put every glued scalar in the CSV, not only the notebook's ``ex3.sweep_results``
    """
    from tqdm.auto import tqdm

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SweepError(f"retries must be an integer >= 0, got {retries!r}")
    if not (isinstance(start_timeout, (int, float)) and start_timeout > 0):
        raise SweepError(f"start_timeout must be a positive number of seconds, got {start_timeout!r}")
    root = Path(out) / sweep.chapter
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepError(f"cannot create the output folder {root}: {err.strerror or err}") from None
    outputs = _Outputs(root)
    notebook_text = sweep.notebook.read_text(encoding="utf-8")
    identity = _identity(notebook_text.encode())

    with _lock(root):
        removed = outputs.remove_leftovers()
        if removed:
            log(f"removed {removed} temporary file(s) left by an interrupted sweep")
        records, todo, reruns = {}, [], []
        for point in sweep.points:
            record = outputs.read_record(point)
            state, why = ("todo", "--force") if force else point_status(record, point, identity, outputs)
            if state == "done":
                records[point.name] = record
            else:
                todo.append(point)
                if why:
                    reruns.append(f"  {point.name}: running again ({why})")
        skipped = len(sweep.points) - len(todo)
        log(f"{sweep.notebook}: {len(sweep.points)} point(s), {skipped} complete, {len(todo)} to run"
            f" -> {root}/")
        for line in reruns:
            log(line)

        interrupted = False
        if todo:
            engine = (_DaskEngine(scheduler) if scheduler
                      else _LocalEngine(workers or os.cpu_count() or 1, len(todo),
                                        sweep.notebook.resolve().parent, root / "sweep.log"))
            bar = tqdm(total=len(todo), desc=f"sweep {sweep.chapter}", unit="point", disable=not progress)
            try:
                with _sigterm_as_interrupt(), engine:
                    for point, outcome in engine.run(todo, notebook_text, retries, start_timeout):
                        record = {**identity, "point": point.name, "notebook": str(sweep.notebook),
                                  "parameters": point.parameters, "swept": point.swept,
                                  "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                  **{k: v for k, v in outcome.items() if k != "notebook"}}
                        outputs.write_point(point, record, outcome.get("notebook"))
                        records[point.name] = record
                        if record["status"] != "ok":
                            bar.write(f"{point.name}: failed: {record['error']}")
                        bar.update()
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()

        csv_path = write_csv(sweep, records, root / "results.csv", all_results)
        figure = write_summary_figure(sweep, records, root / "summary.png", metrics)
    ok = sum(1 for r in records.values() if r.get("status") == "ok")
    failed = sum(1 for r in records.values() if r.get("status") != "ok")
    result = SweepResult(out=root, csv=csv_path, figure=figure, ok=ok, failed=failed, skipped=skipped,
                         pending=len(sweep.points) - len(records), interrupted=interrupted)
    if interrupted:
        log(f"interrupted: {ok + failed} of {len(sweep.points)} point(s) are recorded in {root}/; "
            f"run the same command again to finish the other {result.pending}")
    log(f"{ok} ok, {failed} failed, {result.pending} pending; results: {csv_path}"
        + (f", figure: {figure}" if figure else ""))
    return result


@contextlib.contextmanager
def _lock(root: Path):
    """Refuse a second sweep writing into the same folder at the same time."""
    with open(root / ".lock", "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise SweepError(f"another sweep is writing into {root} ({handle.read().strip() or 'pid ?'}); "
                             f"wait for it or use another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM like Ctrl-C, so that a terminated sweep stops its workers too."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _LocalEngine:
    """Points in a pool of spawned processes on this machine."""

    def __init__(self, workers: int, n_points: int, cwd: Path, log_path: Path):
        self.workers = min(workers, n_points)
        self.log_path = str(log_path)
        cpus = os.cpu_count() or 1
        # Each point's own run_many trains in the cores left per worker.
        self.pinned = {**_PINNED_THREADS, "EX3_WORKERS": str(max(1, cpus // self.workers)),
                       "MPLBACKEND": "Agg"}
        self.cwd = str(cwd)
        self.pool = None

    def __enter__(self):
        import multiprocessing

        self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_local_worker, initargs=(self.cwd, self.pinned, self.log_path))
        return self

    def run(self, points, notebook_text, retries, start_timeout):
        futures = {self.pool.submit(execute_point, notebook_text, p.parameters, retries=retries,
                                    start_timeout=start_timeout, pinned=self.pinned): p
                   for p in points}
        for future in local_as_completed(futures):
            yield futures[future], _outcome(future)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            _terminate_workers(self.pool)
        self.pool.shutdown(wait=True, cancel_futures=True)
        return False


class _DaskEngine:
    """Points on a Dask distributed cluster."""

    def __init__(self, address: str):
        try:
            import distributed
        except ImportError:
            raise SweepError("--scheduler needs Dask distributed: pip install -r requirements-dask.txt") \
                from None
        self.distributed = distributed
        self.address = address
        self.client = None
        self.futures = {}
        self.pinned = {**_PINNED_THREADS, "EX3_WORKERS": "1", "MPLBACKEND": "Agg"}

    def __enter__(self):
        try:
            self.client = self.distributed.Client(self.address, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise SweepError(f"cannot reach the Dask scheduler at {self.address}: {err}") from None
        return self

    def run(self, points, notebook_text, retries, start_timeout):
        # The notebook travels as text: a worker on another machine need not share this file system.
        text = self.client.scatter(notebook_text, broadcast=True)
        self.futures = {self.client.submit(execute_point, text, p.parameters, retries=retries,
                                           start_timeout=start_timeout, pinned=self.pinned, pure=False,
                                           key=f"ex3-sweep-{p.name}-{os.urandom(4).hex()}"): p
                        for p in points}
        for future in self.distributed.as_completed(self.futures):
            yield self.futures[future], _outcome(future)

    def __exit__(self, exc_type, exc, tb):
        if self.client is not None:
            if exc_type is not None:
                # Interrupted: take the points that have not finished off the cluster.
                with contextlib.suppress(Exception):
                    self.client.cancel(list(self.futures))
            self.client.close()
        return False


def _outcome(future) -> dict:
    """The dict execute_point returned, or a failure if the worker itself broke."""
    try:
        return future.result()
    except Exception as err:  # a worker crashed (e.g. killed): the point failed, the sweep goes on
        return {"status": "failed", "error": f"worker failed: {type(err).__name__}: {err}",
                "results": {}, "notebook": None, "seconds": math.nan, "attempts": 1,
                "host": None}


# ----------------------------------------------------------------------------
# Collected results


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def _notebook_meta(sweep: Sweep) -> dict:
    """The notebook's ``ex3`` metadata: ``sweep_results`` (CSV columns) and ``sweep_metrics`` (figure)."""
    meta = json.loads(sweep.notebook.read_text(encoding="utf-8")).get("metadata", {})
    return meta.get("ex3") or {}


def write_csv(sweep: Sweep, records: dict, path: Path, all_results: bool = False) -> Path:
    """One row per point of the grid, in grid order: parameters, status, glued results, seconds, error.

    The results are the glued names the notebook lists in its ``ex3.sweep_results``
    metadata (all its glued scalars if it lists none, or with ``all_results``); every
    point's JSON record keeps all of them.
    """
    declared = [] if all_results else list(_notebook_meta(sweep).get("sweep_results") or [])
    result_names = list(declared)
    if not declared:
        for point in sweep.points:
            for name in (records.get(point.name) or {}).get("results", {}):
                if name not in result_names:
                    result_names.append(name)
    param_names = list(sweep.swept) + [n for n in sweep.fixed if n not in sweep.swept]
    header = ["point", "status", *param_names, *result_names, "seconds", "attempts", "error"]
    taken = set(header[:2 + len(param_names)])
    clash = [n for n in result_names if n in taken]
    if clash:  # a glued name equal to a parameter name: keep both apart
        header = header[:2 + len(param_names)] + [f"result.{n}" if n in clash else n
                                                  for n in result_names] + header[-3:]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for point in sweep.points:
        record = records.get(point.name)
        status = "pending" if record is None else record.get("status", "failed")
        results = (record or {}).get("results", {})
        writer.writerow([point.name, status, *(_cell(point.parameters.get(n)) for n in param_names),
                         *(_cell(results.get(n)) for n in result_names),
                         "" if record is None else _cell(round(record.get("seconds", math.nan), 2)),
                         "" if record is None else record.get("attempts", ""),
                         "" if record is None else (record.get("error") or "")])
    _atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")
    return path


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def default_metrics(sweep: Sweep, records: dict) -> list:
    """The notebook's ``ex3.sweep_metrics`` metadata, else its first (up to four) numeric results."""
    named = _notebook_meta(sweep).get("sweep_metrics")
    if named:
        return list(named)
    names = []
    for record in records.values():
        for name, value in record.get("results", {}).items():
            if _numeric(value) and name not in names:
                names.append(name)
    return names[:4]


def write_summary_figure(sweep: Sweep, records: dict, path: Path, metrics=None):
    """Each metric against the first swept parameter, one line per setting of the others."""
    from matplotlib.figure import Figure

    ok = [p for p in sweep.points if (records.get(p.name) or {}).get("status") == "ok"]
    metrics = list(metrics or default_metrics(sweep, records))
    metrics = [m for m in metrics if any(_numeric(records[p.name]["results"].get(m)) for p in ok)]
    if not ok or not metrics:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # an old figure would show results this sweep does not have
        return None
    names = list(sweep.swept)
    x_name = names[0] if names else None
    others = names[1:]
    x_values = sweep.swept.get(x_name, [None])
    numeric_x = x_name is not None and all(_numeric(v) for v in x_values)
    log_x = numeric_x and all(v > 0 for v in x_values) and max(x_values) / min(x_values) >= 20
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    groups = {}
    for p in ok:
        groups.setdefault(tuple(p.swept[n] for n in others), []).append(p)
    for ax, metric in zip(axes, metrics):
        for key, pts in groups.items():
            pts = sorted(pts, key=lambda p: x_values.index(p.swept[x_name]) if x_name else 0)
            xs = [p.swept[x_name] if numeric_x else x_values.index(p.swept[x_name]) if x_name else 0
                  for p in pts]
            results = [records[p.name]["results"] for p in pts]
            ys = [r.get(metric) if _numeric(r.get(metric)) else math.nan for r in results]
            # A glued <metric>_std (e.g. over seeds) becomes an error bar.
            errs = [r.get(f"{metric}_std") if _numeric(r.get(f"{metric}_std")) else math.nan
                    for r in results]
            label = ", ".join(f"{n} = {v}" for n, v in zip(others, key)) or None
            ax.errorbar(xs, ys, yerr=None if all(math.isnan(e) for e in errs) else errs,
                        fmt="o-", capsize=3, label=label)
        if log_x:
            ax.set_xscale("log")
        if x_name and not numeric_x:
            ax.set_xticks(range(len(x_values)), [str(v) for v in x_values])
        ax.set_xlabel(x_name or "")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
        if others:
            ax.legend(fontsize=7)
    n_bad = len(sweep.points) - len(ok)
    fig.suptitle(f"sweep of {sweep.notebook.name}: {len(ok)} point(s)"
                 + (f" ({n_bad} failed or pending, not shown)" if n_bad else ""), fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    _atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


# ----------------------------------------------------------------------------
# Command line


class _HelpFormatter(argparse.HelpFormatter):
    """Wrapped description and options, the epilog's example lines kept as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ex3lib.sweep",
        description="Execute a chapter notebook with papermill over a grid of its parameters, in "
                    "parallel, and collect the values it glues into one CSV and a summary figure "
                    "(OUT/<chapter>/results.csv, summary.png). Rerunning skips the points already "
                    "complete. Exit status: 0 all points ok, 1 some failed, 2 the grid was refused, "
                    "130 interrupted.",
        epilog="examples:\n"
               "  python -m ex3lib.sweep book/sgd.ipynb --grid sweeps/table2.yaml\n"
               "  python -m ex3lib.sweep book/sgd.ipynb -p learning_rate 0.1,0.01 -p batch_size 10,100 \\\n"
               "      -p epochs 1 -p learning_rates [] -p long_epochs 0\n"
               "the parameters a notebook declares: papermill --help-notebook NOTEBOOK")
    parser.formatter_class = _HelpFormatter
    parser.add_argument("notebook", type=Path, help="the chapter notebook, e.g. book/sgd.ipynb")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUES"),
                        help="a parameter and its values, comma-separated (0.1,0.01 sweeps two values; "
                             "one value fixes it; [0.1,0.01] is one list); repeatable")
    parser.add_argument("--grid", type=Path, metavar="FILE",
                        help="a YAML file with 'grid' (name: [values]) and 'parameters' (name: value); "
                             "-p options override it")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help="output folder; the sweep writes into OUT/<chapter>/ (default: runs)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: one per CPU)")
    parser.add_argument("--scheduler", default=os.environ.get(SCHEDULER_ENV_VAR) or None,
                        metavar="ADDRESS",
                        help=f"a Dask distributed scheduler, e.g. tcp://host:8786, to run the points "
                             f"on (default: ${SCHEDULER_ENV_VAR}, else local processes)")
    parser.add_argument("--retries", type=int, default=2,
                        help="retries of a point whose kernel did not start or died (default: 2)")
    parser.add_argument("--start-timeout", type=float, default=120.0,
                        help="seconds a kernel may take to start (default: 120)")
    parser.add_argument("--metric", action="append", default=None,
                        help="a glued value to plot in summary.png (repeatable; default: the notebook's "
                             "ex3.sweep_metrics metadata, else its first numeric results)")
    parser.add_argument("--all-results", action="store_true",
                        help="every value the notebook glues as a CSV column (default: the ones its "
                             "ex3.sweep_results metadata lists, if any)")
    parser.add_argument("--force", action="store_true", help="run every point again, even complete ones")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the grid and list its points and their state; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        grid, fixed = read_grid_file(args.grid) if args.grid else ({}, {})
        declared = declared_parameters(args.notebook) if args.parameter else {}
        for name, text in args.parameter:
            kind = (declared.get(name) or {}).get("inferred_type_name")
            values = parse_values(text, kind)
            grid.pop(name, None)
            fixed.pop(name, None)
            if len(values) == 1:
                fixed[name] = values[0]
            else:
                grid[name] = values
        sweep = make_sweep(args.notebook, grid, fixed)
        if args.dry_run:
            return _dry_run(sweep, args.out)
        result = run_sweep(sweep, out=args.out, workers=args.workers, scheduler=args.scheduler,
                           retries=args.retries, start_timeout=args.start_timeout, force=args.force,
                           metrics=args.metric, all_results=args.all_results,
                           progress=not args.no_progress)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return result.exit_code


def _dry_run(sweep: Sweep, out) -> int:
    root = Path(out) / sweep.chapter
    outputs = _Outputs(root)
    identity = _identity(sweep.notebook.read_bytes())
    print(f"{sweep.notebook}: {len(sweep.points)} point(s) -> {root}/")
    for point in sweep.points:
        state, why = point_status(outputs.read_record(point), point, identity, outputs)
        print(f"  {point.name}: {'complete' if state == 'done' else 'to run'}"
              + (f" ({why})" if why else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
