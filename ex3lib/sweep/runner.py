"""Running a sweep: the points that are not complete, on local processes or a Dask cluster.

:func:`run_sweep` holds a lock on the output folder, skips the complete
points, executes the others on an engine (:class:`_LocalEngine`, a pool of
spawned processes, or :class:`_DaskEngine`), writes each point's record as it
finishes, and then the CSV and the summary figure. Ctrl-C, SIGINT and SIGTERM
stop the workers and still write the CSV, with the unfinished points as
pending; the handlers are installed explicitly, so that a sweep started in the
background (where SIGINT starts out ignored) stops on ``kill -INT`` too.
Nothing is written before the options are checked, and a point whose record
holds other parameters is only replaced with ``force``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import socket
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as local_as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..cluster import Cluster
from ..params import OVERRIDES_ENV_VAR
from ..sysutil import PINNED_THREADS, terminate_workers
from .grid import Sweep, SweepError
from .point import (PARAMETERS_CHANGED, SweepFolder, as_stored, execute_point, point_identity,
                    point_status)
from .results import check_metrics, write_csv, write_summary_figure, write_summary_html

__all__ = ["DEFAULT_OUT", "SweepResult", "run_sweep"]

DEFAULT_OUT = "runs"

# Each point's kernel trains with one thread, as run_many's workers do; the points
# themselves run in parallel.
_POINT_THREADS = {**PINNED_THREADS, "MKL_NUM_THREADS": "1"}


@dataclass
class SweepResult:
    """What a finished (or interrupted) sweep did.

    Attributes
    ----------
    out : pathlib.Path
        The sweep's folder, ``<out>/<chapter>/``.
    csv : pathlib.Path
        Its ``results.csv``.
    figure : pathlib.Path or None
        Its ``summary.png``, None if there was nothing to draw.
    page : pathlib.Path or None
        Its ``summary.html`` (the same, interactive), None if there was nothing to draw.
    ok, failed : int
        Points with a record, by status (the complete ones skipped included).
    skipped : int
        Points that were complete already and did not run.
    pending : int
        Points with no record (the sweep was interrupted).
    interrupted : bool
        Ctrl-C, SIGINT or SIGTERM stopped the sweep.
    figure_error : str or None
        Why ``summary.png`` could not be drawn with the requested metrics (an
        old figure is then left as it was).
    """

    out: Path
    csv: Path
    figure: Path | None
    ok: int
    failed: int
    skipped: int
    pending: int
    interrupted: bool = False
    figure_error: str | None = None
    page: Path | None = None

    @property
    def exit_code(self) -> int:
        """The command's exit status: 130 interrupted, 2 a metric was refused, 1 a point failed, else 0."""
        if self.interrupted:
            return 130
        return 2 if self.figure_error else (1 if self.failed else 0)


def run_sweep(sweep: Sweep, *, out=DEFAULT_OUT, workers=None, scheduler=None, retries=2,
              start_timeout=120.0, force=False, metrics=None, all_results=False, progress=True,
              log=print) -> SweepResult:
    """Execute every point of ``sweep`` that is not complete yet; write the CSV and the figure.

    Each point's record is written as soon as it finishes, so an interrupted
    sweep (Ctrl-C, SIGTERM) keeps the points it completed; it then stops its
    workers, still writes the CSV (the other points as ``pending``) and
    returns with ``interrupted`` set.

    Parameters
    ----------
    sweep : Sweep
        From :func:`~ex3lib.sweep.grid.make_sweep`.
    out : str or path-like
        Folder; the sweep writes into ``out/<chapter>/``.
    workers : int >= 1, optional
        Local worker processes (default: one per CPU). Ignored with a scheduler.
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:port``), or None
        for local processes.
    retries : int >= 0
        Times a point whose kernel failed to start or died is tried again.
    start_timeout : float
        Seconds a kernel may take to start.
    force : bool
        Run every point, even those already complete, and replace records of
        other parameters (without it, finding one is an error).
    metrics : list of str, optional
        Glued names to plot (default: the notebook's ``ex3.sweep_metrics``
        metadata, else its first numeric results); checked against the names
        the notebook glues before anything runs.
    all_results : bool
        Put every glued scalar in the CSV, not only the notebook's ``ex3.sweep_results``.
    progress : bool
        Show a progress bar over the points.
    log : callable
        Called with each line of the sweep's report (default: print).

    Returns
    -------
    SweepResult

    Raises
    ------
    SweepError
        A bad option or metric, an output folder that cannot be created,
        another sweep writing into the same folder, records in it of other
        parameters (without ``force``), or a scheduler that cannot be reached.
        Raised before any result is written.
    """
    from tqdm.auto import tqdm

    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise SweepError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise SweepError(f"retries must be an integer >= 0, got {retries!r}")
    if not (isinstance(start_timeout, (int, float)) and start_timeout > 0):
        raise SweepError(f"start_timeout must be a positive number of seconds, got {start_timeout!r}")
    if os.environ.get(OVERRIDES_ENV_VAR, "").strip():
        raise SweepError(f"{OVERRIDES_ENV_VAR} is set ({os.environ[OVERRIDES_ENV_VAR]}): it is for runs of the book "
                         f"that papermill does not drive; a sweep sets the chapters' parameters itself "
                         f"(-p, --grid), so unset it first")
    check_metrics(sweep, metrics)
    root = Path(out) / sweep.chapter
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SweepError(f"cannot create the output folder {root}: {err.strerror or err}") from None
    outputs = SweepFolder(root)
    notebook_text = sweep.notebook.read_text(encoding="utf-8")
    identity = point_identity(notebook_text.encode())

    with _lock(root):
        removed = outputs.remove_leftovers()
        if removed:
            log(f"removed {removed} temporary file(s) left by an interrupted sweep")
        records, todo, reruns, others = {}, [], [], []
        for point in sweep.points:
            record = outputs.read_record(point)
            state, why = point_status(record, point, identity, outputs)
            if why == PARAMETERS_CHANGED:
                others.append(f"  {point.name}: ran with {_differences(record['parameters'], point)}")
            if force:
                state, why = "todo", "--force" + (f"; {why}" if why else "")
            if state == "done":
                records[point.name] = record
            else:
                todo.append(point)
                if why:
                    reruns.append(f"  {point.name}: running again ({why})")
        if others and not force:
            raise SweepError(f"{root}/ holds the results of other parameters for {len(others)} point(s) "
                             f"of this sweep; nothing was run or changed. Use --force to replace them, "
                             f"or another --out:\n" + "\n".join(others))
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
                with _signals_as_interrupt(), engine:
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
        figure_error, page = None, None
        try:
            figure = write_summary_figure(sweep, records, root / "summary.png", metrics)
            page = write_summary_html(sweep, records, root / "summary.html", metrics)
        except SweepError as err:
            figure, figure_error = None, str(err)
            log(f"error: {err}")
    ok = sum(1 for r in records.values() if r.get("status") == "ok")
    failed = sum(1 for r in records.values() if r.get("status") != "ok")
    result = SweepResult(out=root, csv=csv_path, figure=figure, ok=ok, failed=failed, skipped=skipped,
                         pending=len(sweep.points) - len(records), interrupted=interrupted,
                         figure_error=figure_error, page=page)
    if interrupted:
        log(f"interrupted: {ok + failed} of {len(sweep.points)} point(s) are recorded in {root}/; "
            f"run the same command again to finish the other {result.pending}")
    log(f"{ok} ok, {failed} failed, {result.pending} pending; results: {csv_path}"
        + (f", figure: {figure}" if figure else "") + (f", interactive: {page}" if page else ""))
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


def _differences(recorded: dict, point) -> str:
    """How a record's parameters differ from the point's, e.g. ``n = 2, this sweep n = 5``."""
    now = as_stored(point.parameters)

    def shown(values, name):
        return f"{name} = {values[name]!r}" if name in values else f"{name} = the notebook's default"

    names = [n for n in dict.fromkeys([*recorded, *now])
             if (n in recorded) != (n in now) or recorded.get(n) != now.get(n)]
    return (", ".join(shown(recorded, n) for n in names) + "; this sweep has "
            + ", ".join(shown(now, n) for n in names))


@contextlib.contextmanager
def _signals_as_interrupt():
    """Turn SIGINT and SIGTERM into KeyboardInterrupt while the points run, whatever their handlers were.

    Python only installs its own SIGINT handler when SIGINT is not ignored at
    start-up; a command started in the background by a shell (``cmd &``) or by
    nohup starts with it ignored, so without this ``kill -INT`` would not stop
    it. Both handlers are restored afterwards.
    """
    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals go to the main thread's handlers
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _LocalEngine:
    """Points in a pool of spawned processes on this machine."""

    def __init__(self, workers: int, n_points: int, cwd: Path, log_path: Path):
        """``workers`` processes at most, one per point, running kernels in ``cwd``, logging to ``log_path``."""
        self.workers = min(workers, n_points)
        self.log_path = str(log_path)
        cpus = os.cpu_count() or 1
        # Each point's own run_many trains in the cores left per worker.
        self.pinned = {**_POINT_THREADS, "EX3_WORKERS": str(max(1, cpus // self.workers)),
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
        """Execute the points; yields ``(point, outcome)`` as each finishes."""
        futures = {self.pool.submit(execute_point, notebook_text, p.parameters, retries=retries,
                                    start_timeout=start_timeout, pinned=self.pinned): p
                   for p in points}
        for future in local_as_completed(futures):
            yield futures[future], _outcome(future)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            terminate_workers(self.pool)
        self.pool.shutdown(wait=True, cancel_futures=True)
        return False


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


class _DaskEngine:
    """Points on a Dask distributed cluster (:class:`ex3lib.cluster.Cluster`)."""

    def __init__(self, address: str):
        """An engine for the scheduler at ``address``; SweepError if Dask distributed is not installed."""
        try:
            self.cluster = Cluster(address, what="--scheduler")
        except ImportError as err:
            raise SweepError(str(err)) from None
        # A point's own run_many trains in its kernel: the point already holds a worker,
        # and waiting there for runs sent back to the cluster could take every worker.
        self.pinned = {**_POINT_THREADS, "EX3_WORKERS": "1", "EX3_SCHEDULER": "", "MPLBACKEND": "Agg"}

    def __enter__(self):
        try:
            self.cluster.__enter__()
        except ConnectionError as err:
            raise SweepError(str(err)) from None
        return self

    def run(self, points, notebook_text, retries, start_timeout):
        """Execute the points on the cluster; yields ``(point, outcome)`` as each finishes."""
        # The notebook travels as text: a worker on another machine need not share this file system.
        text = self.cluster.share(notebook_text)
        for p in points:
            self.cluster.submit(p, execute_point, text, p.parameters, retries=retries,
                                start_timeout=start_timeout, pinned=self.pinned, key=f"ex3-sweep-{p.name}")
        for point, outcome in self.cluster.results():
            yield point, _failed_point(outcome) if isinstance(outcome, BaseException) else outcome

    def __exit__(self, exc_type, exc, tb):
        return self.cluster.__exit__(exc_type, exc, tb)


def _outcome(future) -> dict:
    """The dict execute_point returned, or a failure if the worker itself broke."""
    try:
        return future.result()
    except Exception as err:  # a worker crashed (e.g. killed): the point failed, the sweep goes on
        return _failed_point(err)


def _failed_point(err: BaseException) -> dict:
    """The outcome of a point whose worker broke."""
    return {"status": "failed", "error": f"worker failed: {type(err).__name__}: {err}",
            "results": {}, "notebook": None, "seconds": math.nan, "attempts": 1,
            "host": None}
