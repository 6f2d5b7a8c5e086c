"""Parallel runs that fill the results store: :func:`run_many`, on local processes or a Dask cluster.

:func:`run_many` looks each run up in the :class:`~ex3lib.store.ResultsStore`
first and trains only the missing ones: in this process, in spawned worker
processes (each pinned to one thread: the kernels are serial so that runs are
reproducible, and the parallelism is across runs), or on a Dask distributed
cluster (``EX3_SCHEDULER``). Each result is stored, on the calling machine, as
soon as it is finished, so an interrupted call keeps the runs it completed,
and nothing one run does (raise in training or in storing, kill its worker)
costs another its result. It reports on the terminal as it goes (one line
when it starts, one per finished run), never in a notebook's output.

>>> import ex3lib
>>> configs = [ex3lib.RunConfig(learning_rate=lr, epochs=1) for lr in (0.01, 0.1)]
>>> histories = ex3lib.run_many(configs)                           # doctest: +SKIP
>>> [h.config["learning_rate"] for h in histories]                 # doctest: +SKIP
[0.01, 0.1]
"""

from __future__ import annotations

import contextlib
import copy
import functools
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields
from multiprocessing.connection import wait as wait_for_sentinels

import numpy as np
from tqdm.auto import tqdm

from ._validate import check_bool, check_int
from .cluster import Cluster
from .data import MNIST, load_mnist
from .fingerprint import _package_files, source_fingerprint
from .store import ResultsStore
from .sysutil import PINNED_THREADS, environment, terminate_workers
from .training import History, RunConfig, run

__all__ = ["CHAPTER_ENV_VAR", "PROGRESS_ENV_VAR", "SCHEDULER_ENV_VAR", "WARM_SECONDS", "WORKERS_ENV_VAR",
           "default_scheduler", "default_workers", "run_many"]

WORKERS_ENV_VAR = "EX3_WORKERS"
SCHEDULER_ENV_VAR = "EX3_SCHEDULER"
PROGRESS_ENV_VAR = "EX3_PROGRESS"
#: Set by the book's build to the chapter being executed; it starts run_many's progress lines.
CHAPTER_ENV_VAR = "EX3_CHAPTER"

_DATA_FIELDS = ("x_train", "y_train", "x_test", "y_test")


def run_many(configs, data=None, *, store=None, workers=None, scheduler=None,
             progress=True) -> list[History]:
    """Train every config, reusing stored results, in parallel; histories in input order.

    Each config is looked up in the store first. The missing ones are trained
    once each (duplicates are merged) in local worker processes or on a Dask
    cluster, and each result is stored as soon as it is finished, so an
    interrupted call keeps the runs it completed. Whatever one run does —
    raise in training, return a history the store refuses, kill its worker
    process — the others still finish and are stored; then a RuntimeError
    names each failed config and its error.

    While it trains it writes to the terminal (stderr; in a Jupyter kernel the
    terminal of the process that started the kernel, e.g. ``jupyter-book
    build``, never the notebook): one line when it starts, e.g. ``sgd: 42
    runs, 39 stored, 3 to train on 2 workers``, one per finished run with its
    seconds, and one when it is done. ``EX3_PROGRESS=0`` silences them; the
    lines start with ``$EX3_CHAPTER`` (which the book's build sets to the
    chapter's name), else ``run_many``.

    Spawned workers import the caller's main module, so a script that calls
    ``run_many`` must do so under ``if __name__ == "__main__":``. Workers that
    train on the default MNIST are kept for the next call for
    :data:`WARM_SECONDS` (2 min) after this one, then exit (and at once if
    this process exits or is killed; a call after an edit to ex3lib's source
    starts new ones): a chapter that calls ``run_many`` six times starts them
    once, not six times (2-3 s each).

    Parameters
    ----------
    configs : iterable of RunConfig
    data : object with ``x_train``, ``y_train``, ``x_test``, ``y_test``, optional
        Defaults to :func:`ex3lib.load_mnist`, which each worker process
        loads from its own on-disk cache, once. Other data is sent to each
        worker once.
    store : ResultsStore, None or False
        Where results are looked up and saved; None for the default
        ``ResultsStore()``, False to always train and save nothing.
    workers : int >= 1, optional
        Local processes to train in; defaults to the environment variable
        ``EX3_WORKERS`` if it is set (a sweep sets it to 1 in each of its
        points, which already run in parallel), else the number of CPUs. Never
        more than the number of runs; with 1 (or one run) the runs are trained
        in this process. Ignored with a scheduler.
    scheduler : str, None or False
        Address of a Dask distributed scheduler (``tcp://HOST:PORT``) to send
        the runs to; None (the default) for ``$EX3_SCHEDULER``, read at each
        call, else local processes; False for local processes whatever the
        variable says. The store and every file stay on this machine; the
        workers need ex3lib, the Dask extra and (for the default data) MNIST
        in their own cache, and should run one thread each (``dask worker
        ADDRESS --nthreads 1``). A run whose workers keep dying is given up
        after Dask's ``distributed.scheduler.allowed-failures`` deaths.
    progress : bool
        Show a progress bar over the runs (in a notebook, in the cell's output).

    Returns
    -------
    list of History
        One per config, in the order of ``configs``.

    Raises
    ------
    RuntimeError
        One or more runs failed, e.g. ``2 of 5 runs failed (the others were
        stored):`` then a line per failed run, ``configs[3] Adam β₁=0.9
        β₂=0.999 η=0.001 m=10 (eps=1e-300) failed in storing: ValueError: ...``.
        The first failure's exception is chained as ``__cause__``.
    ImportError
        A scheduler is named but Dask distributed is not installed (``pip
        install -r requirements-dask.txt``).
    ConnectionError
        The scheduler cannot be reached (only asked when a run is missing).

    Examples
    --------
    >>> base = RunConfig(epochs=1)
    >>> grid = [base.replace(learning_rate=lr, batch_size=m) for lr in (0.01, 0.1) for m in (1, 10)]
    >>> histories = run_many(grid, workers=4)                          # doctest: +SKIP
    >>> histories[3].config["learning_rate"], histories[3].config["batch_size"]  # doctest: +SKIP
    (0.1, 10)
    >>> histories = run_many(grid, scheduler="tcp://127.0.0.1:8786")    # doctest: +SKIP
    """
    if isinstance(configs, RunConfig):
        raise TypeError("configs must be an iterable of RunConfig; for one run pass [config]")
    try:
        configs = list(configs)
    except TypeError:
        raise TypeError(f"configs must be an iterable of RunConfig, got {type(configs).__name__}") from None
    for i, config in enumerate(configs):
        if not isinstance(config, RunConfig):
            raise TypeError(f"configs[{i}] must be an ex3lib.RunConfig, got {type(config).__name__}")
    if data is not None:
        missing = [name for name in _DATA_FIELDS if not hasattr(data, name)]
        if missing:
            raise TypeError(f"data must have x_train, y_train, x_test and y_test (e.g. load_mnist()); "
                            f"{type(data).__name__} has no {missing[0]}")
    if store is None:
        store = ResultsStore()
    elif store is not False and not isinstance(store, ResultsStore):
        raise TypeError(f"store must be a ResultsStore, None (the default store) or False (no store), "
                        f"got {store!r}")
    if workers is not None:
        workers = check_int("workers", workers, 1)
    named_by = SCHEDULER_ENV_VAR
    if scheduler is None:
        scheduler = default_scheduler()
    elif scheduler is False:
        scheduler = None
    elif not isinstance(scheduler, str) or not scheduler.strip():
        raise TypeError(f"scheduler must be a Dask scheduler's address (e.g. 'tcp://host:8786'), None "
                        f"(${SCHEDULER_ENV_VAR}) or False (local processes), got {scheduler!r}")
    else:
        scheduler, named_by = scheduler.strip(), "run_many(scheduler=...)"
    progress = check_bool("progress", progress)
    say = _Reporter(progress)
    # Made now, so that a missing Dask is reported even when every run is stored.
    cluster = Cluster(scheduler, what=named_by) if scheduler else None
    if workers is None and cluster is None:
        workers = default_workers()

    unique = list(dict.fromkeys(configs))
    done: dict[RunConfig, History] = {}
    if store is not False:
        for config in unique:
            hit = store.get(config)
            if hit is not None:
                done[config] = hit
    todo = [config for config in unique if config not in done]
    if unique and not todo:
        say(f"{_runs(len(unique))}, all stored")
    elif todo:
        failures = _train_and_store(todo, data, store, workers, cluster, progress, say,
                                    stored_before=len(done), n_unique=len(unique), done=done)
        if failures:
            error, cause = _failed(configs, todo, failures, store, done)
            raise error from cause

    seen = set()
    results = []
    for config in configs:
        # Duplicates get their own copy, so that changing one history leaves the others alone.
        results.append(copy.deepcopy(done[config]) if config in seen else done[config])
        seen.add(config)
    return results


def default_workers() -> int:
    """Processes :func:`run_many` trains in by default: ``$EX3_WORKERS``, else the number of CPUs.

    Returns
    -------
    int
        At least 1.

    Raises
    ------
    ValueError
        ``EX3_WORKERS`` is set to anything but a positive integer.
    """
    value = os.environ.get(WORKERS_ENV_VAR, "").strip()
    if not value:
        return os.cpu_count() or 1
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(f"the environment variable {WORKERS_ENV_VAR} must be a positive integer "
                         f"(processes per run_many call) or unset for one per CPU; got {value!r}")
    return workers


def default_scheduler() -> str | None:
    """The Dask scheduler :func:`run_many` sends its runs to by default: ``$EX3_SCHEDULER``, else None.

    Returns
    -------
    str or None
        The address (e.g. ``tcp://host:8786``), or None (unset or empty) for local processes.
    """
    return os.environ.get(SCHEDULER_ENV_VAR, "").strip() or None




class _Failure:
    """Why a run has no result: what went wrong (``"in training"``, ...) and the exception."""

    def __init__(self, what: str, error: BaseException, *, show_error: bool = True):
        self.what, self.error, self.show_error = what, error, show_error

    def __str__(self) -> str:
        if not self.show_error:
            return self.what
        text = str(self.error).strip().splitlines()
        return f"{self.what}: {type(self.error).__name__}" + (f": {text[0]}" if text else "")


def _train_and_store(todo, data, store, workers, cluster, progress, say, *, stored_before, n_unique, done):
    """Train ``todo`` on the chosen engine, storing each result as it comes; returns the failures."""
    failures: dict[RunConfig, _Failure] = {}
    trained = []
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if cluster is not None:
            stack.enter_context(cluster)
            n_workers, n_threads = cluster.threads()
            where = (f"on the Dask cluster at {cluster.address} ({n_workers} workers, {n_threads} threads)"
                     if n_workers else f"on the Dask cluster at {cluster.address} (no workers yet: waiting)")
            outcomes = _run_on_cluster(_longest_first(todo), data, cluster)
        else:
            n_workers = min(workers, len(todo))
            if n_workers == 1:
                where = "in this process"
                outcomes = _run_here(todo, data, progress)
            else:
                where = f"on {n_workers} workers"
                outcomes = _run_in_pool(_longest_first(todo), data, n_workers)
        stored = f"{stored_before} stored, " if store is not False else ""
        say(f"{_runs(n_unique)}, {stored}{len(todo)} to train {where}")
        # closing(): if this loop is interrupted, stop the workers now rather than
        # whenever the generator happens to be garbage-collected.
        outcomes = stack.enter_context(contextlib.closing(outcomes))
        bar = stack.enter_context(tqdm(total=len(todo), desc="runs", unit="run", disable=not progress))
        for k, (config, outcome) in enumerate(outcomes, 1):
            if not isinstance(outcome, _Failure):
                fingerprint, history = outcome
                try:
                    outcome = _store(store, config, history, fingerprint)
                except Exception as err:  # e.g. its warning, with warnings made errors
                    outcome = _Failure("in storing", err)
                if outcome is None:
                    done[config] = history
                    trained.append(history.seconds)
            if isinstance(outcome, _Failure):
                failures[config] = outcome
                say(f"{k}/{len(todo)} {_describe(config)} failed {outcome}")
            else:
                say(f"{k}/{len(todo)} {_describe(config)}: {history.seconds:.1f} s")
            bar.update()
    for config in todo:
        if config not in done and config not in failures:  # an engine must never do this
            failures[config] = _Failure("with no result", RuntimeError("its worker never reported back"))
    failed = f", {len(failures)} failed" if failures else ""
    say(f"{len(trained)} trained in {time.perf_counter() - start:.0f} s "
        f"({sum(trained):.0f} s of training){failed}")
    return failures


#: Rough cost of one optimiser step relative to one sample's forward and backward pass
#: (CPU seconds per epoch on the project's machine, 2026-12-01: SGD 1.4 s at m = 10 and
#: 2.3 s at m = 1, momentum 3.2 / 18, AdaGrad 4.9 / 17.5, Adam 7.9 / 101).
_STEP_COST = {"sgd": 1.0, "momentum": 15.0, "adagrad": 15.0, "rmsprop": 15.0, "adam": 80.0}


def _longest_first(todo: list[RunConfig]) -> list[RunConfig]:
    """The runs in the order to start them on parallel workers: the longest expected first.

    Started last, a long run keeps one worker busy while the others have
    nothing left to do; started first, it runs beside the short ones. The
    order changes no result: each run is trained alone, from its own seed.
    """
    def expected_cost(config):
        kind = "momentum" if config.optimiser == "sgd" and config.momentum else config.optimiser
        n = config.train_size or 60_000
        sched = config.batch_schedule_spec
        return sum(n * (1.0 + _STEP_COST.get(kind, 1.0) / sched.batch_size_at(k)) for k in range(config.epochs))

    return sorted(todo, key=expected_cost, reverse=True)


def _store(store, config: RunConfig, history, fingerprint: str) -> _Failure | None:
    """Keep a finished run in the store; a failure if the store refused it, else None.

    The history is kept (and returned) without being stored when it was
    trained by other code or the store cannot be written (an OSError), with
    a warning.
    """
    if not isinstance(history, History):
        return _Failure("in training", TypeError(f"the run returned a {type(history).__name__}, "
                                                 f"not an ex3lib.History"))
    if store is False:
        return None
    if fingerprint != source_fingerprint():
        # The process that trained it saw other ex3lib source (an edit during the
        # run, or a cluster worker with another copy): storing its result under
        # this process's fingerprint would label it with the wrong code.
        warnings.warn(f"{config.label!r} was trained by a process with other ex3lib source (edited "
                      f"since, or another copy on a cluster worker); its result is returned but not "
                      f"stored", stacklevel=4)
        return None
    try:
        store.put(config, history)
    except OSError as err:
        warnings.warn(f"could not store the result of {config.label!r} in {store.root}: {err}",
                      stacklevel=4)
    except Exception as err:
        return _Failure("in storing", err)
    return None


def _failed(configs, todo, failures, store, done):
    """The RuntimeError that names each failed config (by its first index in ``configs``) and its error.

    Returns it with the first failure's exception, its cause.
    """
    first_index = {}
    for i, config in enumerate(configs):
        first_index.setdefault(config, i)
    ordered = sorted(failures.items(), key=lambda item: first_index[item[0]])
    lines = "".join(f"\n  configs[{first_index[c]}] {_describe(c)} failed {f}" for c, f in ordered)
    n_ok = len(todo) - len(failures)
    if not n_ok:
        kept = ""
    elif store is False:
        kept = " (the others finished)"
    else:
        n_stored = sum(1 for c in todo if c in done and c in store)
        kept = (" (the others were stored)" if n_stored == n_ok
                else f" ({n_stored} of the other {n_ok} were stored)")
    return RuntimeError(f"{len(failures)} of {len(todo)} runs failed{kept}:{lines}"), ordered[0][1].error


#: RunConfig fields that RunConfig.label already shows.
_IN_LABEL = {"optimiser", "learning_rate", "lr_final", "schedule", "batch_size", "batch_final", "batch_schedule",
             "momentum", "nesterov", "b1", "b2"}


def _describe(config: RunConfig) -> str:
    """The config's label and its other non-default fields, e.g. ``SGD η=0.1 m=10 (seed=2)``."""
    default = _default_config()
    others = [f"{f.name}={getattr(config, f.name)!r}" for f in fields(RunConfig)
              if f.name not in _IN_LABEL and getattr(config, f.name) != getattr(default, f.name)]
    return config.label + (f" ({', '.join(others)})" if others else "")


@functools.cache
def _default_config() -> RunConfig:
    """``RunConfig()``, made once."""
    return RunConfig()


def _runs(n: int) -> str:
    """``"1 run"``, ``"2 runs"``."""
    return f"{n} run" + ("" if n == 1 else "s")


# The three engines, _run_here, _run_in_pool and _run_on_cluster, each yield
# (config, outcome) as runs finish, outcome being (fingerprint, history) or a _Failure.


def _run_here(todo, data, progress):
    """Train the configs one after another in this process."""
    if data is None:
        data = load_mnist()
    for config in todo:
        try:
            outcome = (source_fingerprint(), run(config, data, progress=progress))
        except Exception as err:
            outcome = _Failure("in training", err)
        yield config, outcome


def _run_in_pool(todo, data, n_workers):
    """Train the configs in ``n_workers`` spawned processes, one run at a time each.

    Each worker process is its own one-process pool, so a process that dies
    (killed, out of memory, a crash in compiled code) fails only the run it
    was training; a new process takes its place for the runs still waiting.
    Workers that train on the default MNIST are kept for the next call
    (:data:`_warm`); others exit when the call ends.
    """
    # Workers that load the default MNIST themselves (from the .npz cache)
    # start faster than ones that unpickle 440 MB of it.
    worker_data = None if data is None or _is_default_mnist(data) else _arrays(data)
    # Spawn, not fork: forking a process that holds Numba's or tqdm's threads
    # can deadlock the child.
    context = multiprocessing.get_context("spawn")
    waiting = deque(todo)
    warm = _warm if worker_data is None else None
    slots: list[ProcessPoolExecutor | None] | None = warm.take(n_workers) if warm is not None else None
    if slots is None:
        warm, slots = None, [None] * n_workers
    # Kept workers that have not finished a run in this call: one may have
    # died while idle, unnoticed until its first run here fails; that run is
    # then trained again, on a new worker.
    untried = {slot for slot, pool in enumerate(slots) if pool is not None}
    running = {}

    def new_pool():
        # Spawned children copy os.environ when they start, and they import
        # Numba (reading NUMBA_NUM_THREADS) before any initializer runs; the
        # pool starts its process on the first submit.
        return ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_init_worker,
                                   initargs=(worker_data,))

    def start(slot):
        config = waiting.popleft()
        if slots[slot] is not None:
            try:
                future = slots[slot].submit(_run_in_worker, config)
                running[future] = config, slot
                return
            except (BrokenProcessPool, RuntimeError):
                # A kept worker that died while idle (e.g. killed): start another.
                slots[slot].shutdown(wait=False)
                untried.discard(slot)
        with environment(PINNED_THREADS):
            slots[slot] = new_pool()
            future = slots[slot].submit(_run_in_worker, config)
        running[future] = config, slot

    finished_cleanly = False
    try:
        for slot in range(min(n_workers, len(waiting))):
            start(slot)
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                config, slot = running.pop(future)
                outcome = _pool_outcome(future, slots[slot])
                broken = isinstance(outcome, _Failure) and isinstance(outcome.error, BrokenProcessPool)
                if broken:
                    slots[slot].shutdown(wait=False)
                    slots[slot] = None
                if broken and slot in untried:
                    untried.discard(slot)
                    waiting.appendleft(config)
                    start(slot)
                    continue
                untried.discard(slot)
                if waiting:
                    start(slot)  # before yielding: the worker trains while the caller stores
                yield config, outcome
        finished_cleanly = True
    except BaseException:
        # An interrupt (e.g. in a notebook) reaches only this process; stop the
        # workers rather than let them finish runs that nobody will collect.
        for pool in slots:
            if pool is not None:
                terminate_workers(pool)
        raise
    finally:
        if warm is not None and finished_cleanly:
            warm.keep(slots)
        else:
            if warm is not None:
                warm.keep([])
            for pool in slots:
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)


#: Seconds that the local workers of runs on the default MNIST wait, idle, for
#: the next :func:`run_many` call of the same process before they exit.
WARM_SECONDS = 120.0


class _WarmWorkers:
    """The local workers of the last :func:`run_many` call on the default MNIST, kept for the next one.

    A worker process costs 2-3 s to start (Python, NumPy and Numba imported,
    MNIST loaded and converted, the compiled kernels loaded from the cache);
    a chapter that calls :func:`run_many` six times would pay that six times.
    Kept workers exit after :data:`WARM_SECONDS` idle, when this process
    exits, or if this process dies (:func:`_init_worker`), and are not used
    again once a source file of ex3lib has changed since they started (they
    would train with the code they imported). Only one call at a time uses
    them: a call made meanwhile from another thread starts its own.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._in_use = False
        self._slots: list[ProcessPoolExecutor] = []
        self._generation = 0
        self._stamp = None

    def take(self, n: int) -> list[ProcessPoolExecutor | None] | None:
        """``n`` slots, the kept workers first, for a call to use; None if another call is using them."""
        with self._lock:
            if self._in_use:
                return None
            self._in_use = True
            self._generation += 1
            kept, self._slots = self._slots, []
            stamp, self._stamp = self._stamp, _source_stamp()
        if stamp is None or stamp != self._stamp:
            kept, spare = [], kept  # started with other code
        else:
            kept, spare = kept[:n], kept[n:]  # any beyond n: more than this call needs
        for pool in spare:
            pool.shutdown(wait=False)
        return kept + [None] * (n - len(kept))

    def keep(self, slots) -> None:
        """Keep the call's workers for :data:`WARM_SECONDS`."""
        kept = [pool for pool in slots if pool is not None]
        with self._lock:
            self._slots = kept
            self._in_use = False
            self._generation += 1
            generation = self._generation
        if kept:
            timer = threading.Timer(WARM_SECONDS, self.close, args=(generation,))
            timer.daemon = True
            timer.start()

    def close(self, generation: int | None = None) -> None:
        """Let the kept workers exit now (if still kept since ``generation``), and wait until they have."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return  # used (or kept again) since
            slots, self._slots = self._slots, []
            self._generation += 1
        for pool in slots:
            pool.shutdown(wait=True)

    def pids(self) -> list[int]:
        """The process ids of the kept workers."""
        with self._lock:
            return [pid for pool in self._slots for pid in (getattr(pool, "_processes", None) or {})]


def _source_stamp() -> tuple | None:
    """The size and modification time of every source file of ex3lib (None if one cannot be read)."""
    try:
        stats = [(rel, path.stat()) for rel, path in _package_files()]
    except OSError:
        return None
    return tuple((rel, st.st_size, st.st_mtime_ns) for rel, st in stats)


_warm = _WarmWorkers()


def _pool_outcome(future, pool):
    """What a worker's future brought: ``(fingerprint, history)`` or a _Failure."""
    try:
        result = future.result()
    except BrokenProcessPool as err:
        return _Failure(f"in training: its worker process died ({_exit_reason(pool)})", err, show_error=False)
    except Exception as err:
        return _Failure("in training", err)
    try:
        return pickle.loads(result)
    except Exception as err:
        return _Failure("when its result was unpickled", err)


def _exit_reason(pool) -> str:
    """How the process of a broken one-process pool ended, e.g. ``killed by SIGKILL``."""
    # ProcessPoolExecutor keeps its processes in a private dict.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    deadline = time.monotonic() + 5
    while processes and time.monotonic() < deadline:
        # The pool's own thread reaps the process too: until it has, exitcode may be None.
        code = processes[0].exitcode
        if code is not None:
            with contextlib.suppress(ValueError):
                if code < 0:
                    return f"killed by {signal.Signals(-code).name}"
            return f"exit code {code}"
        time.sleep(0.05)
    return "exit status unknown"


def _run_on_cluster(todo, data, cluster: Cluster):
    """Train the configs on a Dask cluster; the default MNIST is loaded by each worker, other data shared once."""
    arrays = None if data is None or _is_default_mnist(data) else _arrays(data)
    shared = None if arrays is None else cluster.share(arrays)
    for config in todo:
        cluster.submit(config, _run_on_worker, config, shared, key="ex3-run")
    for config, outcome in cluster.results():
        if type(outcome).__name__ == "KilledWorker":
            outcome = _Failure("in training: every Dask worker that ran it died, also when it ran alone", outcome)
        elif isinstance(outcome, BaseException):
            outcome = _Failure("in training", outcome)
        yield config, outcome


def _arrays(data) -> MNIST:
    """The four arrays of ``data`` and nothing else: what a worker is sent."""
    return MNIST(**{name: getattr(data, name) for name in _DATA_FIELDS})


def _is_default_mnist(data) -> bool:
    """Whether ``data`` is the dataset ``load_mnist()`` returns."""
    x = getattr(data, "x_train", None)
    # load_mnist returns read-only float64 arrays; checking that first avoids
    # loading MNIST here just to compare it with the caller's own data.
    if not isinstance(x, np.ndarray) or x.flags.writeable or x.dtype != np.float64:
        return False
    try:
        return data is load_mnist()
    except Exception:
        return False


def _read_only(data):
    """``data`` with its arrays made read-only, which lets train() reuse their sparse form across runs."""
    for name in _DATA_FIELDS:
        array = getattr(data, name, None)
        if isinstance(array, np.ndarray):
            array.flags.writeable = False
    return data


_worker_data = None


def _init_worker(data) -> None:
    """Pin a worker to one thread, keep the dataset it was sent (None: load MNIST on the first run).

    A worker also exits as soon as the process that started it has exited:
    kept between calls (:class:`_WarmWorkers`), it would otherwise outlive a
    caller that was killed. It ignores SIGINT, which a terminal's Ctrl-C or a
    Jupyter kernel's interrupt and shutdown send to the caller's whole process
    group: the caller stops its workers itself (:func:`run_many` on an
    interrupt, or by exiting), and a worker killed by SIGINT printed a
    KeyboardInterrupt traceback into the build log after every chapter.
    """
    global _worker_data
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Numba already read these when the worker imported ex3lib; pinning them
    # here too covers any process a run might start.
    os.environ.update(PINNED_THREADS)
    _worker_data = None if data is None else _read_only(data)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True).start()


def _exit_with(sentinel) -> None:
    """Wait until ``sentinel`` (the parent process's) is ready, i.e. the parent has exited; then exit."""
    wait_for_sentinels([sentinel])
    os._exit(1)


def _run_in_worker(config: RunConfig) -> bytes:
    """Train one config in a local worker; returns its source fingerprint and history, pickled.

    Pickled here so that a result the caller cannot unpickle fails this run
    alone (the pool would otherwise break, failing every run in flight).
    """
    global _worker_data
    if _worker_data is None:
        # Loaded here rather than in the initializer, so that a failure is
        # reported against a config instead of breaking the whole pool.
        _worker_data = load_mnist()
    return pickle.dumps((source_fingerprint(), run(config, _worker_data, progress=False)),
                        protocol=pickle.HIGHEST_PROTOCOL)


def _run_on_worker(config: RunConfig, data):
    """Train one config on a Dask worker; returns its source fingerprint and history.

    ``data`` is None for the default MNIST, which load_mnist() reads from the
    worker's cache once per process and returns from memory afterwards.
    """
    data = load_mnist() if data is None else _read_only(data)
    return source_fingerprint(), run(config, data, progress=False)




class _Reporter:
    """Writes run_many's progress lines to the terminal, never into a notebook's output.

    In a Jupyter kernel, ``sys.stderr`` is ipykernel's stream into the
    notebook, but its ``fileno()`` is a copy of the kernel's original stderr:
    the terminal (or log) of the process that started the kernel, e.g.
    ``jupyter-book build`` or papermill. Elsewhere it is the process's stderr.
    """

    def __init__(self, bar: bool):
        value = os.environ.get(PROGRESS_ENV_VAR, "").strip()
        if value not in ("", "0", "1"):
            raise ValueError(f"the environment variable {PROGRESS_ENV_VAR} must be 1 (progress lines on the "
                             f"terminal, the default) or 0 (none); got {value!r}")
        self.fd = None if value == "0" else _terminal_fd()
        self.name = os.environ.get(CHAPTER_ENV_VAR, "").strip() or "run_many"
        self.bar = bar

    def __call__(self, text: str) -> None:
        if self.fd is None:
            return
        line = f"{self.name}: {text}\n".encode()
        # Progress must never cost a run: a closed or full terminal is ignored.
        with contextlib.suppress(OSError, ValueError):
            if self.bar:
                with tqdm.external_write_mode(file=sys.stderr):
                    os.write(self.fd, line)
            else:
                os.write(self.fd, line)


def _terminal_fd() -> int:
    """The file descriptor of the terminal: ``sys.stderr``'s if it has one, else 2."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return 2
