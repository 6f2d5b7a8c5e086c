"""Parallel runs that fill the results store: :func:`run_many` and its process pool.

:func:`run_many` looks each run up in the :class:`~ex3lib.store.ResultsStore`
first and trains only the missing ones, in a pool of spawned processes, each
pinned to one thread (the kernels are serial so that runs are reproducible;
the parallelism is across runs). Each result is stored as soon as it is
finished, so an interrupted call keeps the runs it completed.

>>> import ex3lib
>>> configs = [ex3lib.RunConfig(learning_rate=lr, epochs=1) for lr in (0.01, 0.1)]
>>> histories = ex3lib.run_many(configs)                           # doctest: +SKIP
>>> [h.config["learning_rate"] for h in histories]                 # doctest: +SKIP
[0.01, 0.1]
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
from tqdm.auto import tqdm

from ._validate import check_bool, check_int
from .data import load_mnist
from .fingerprint import source_fingerprint
from .store import ResultsStore
from .sysutil import PINNED_THREADS, environment, terminate_workers
from .training import History, RunConfig, run

__all__ = ["WORKERS_ENV_VAR", "default_workers", "run_many"]

WORKERS_ENV_VAR = "EX3_WORKERS"

_DATA_FIELDS = ("x_train", "y_train", "x_test", "y_test")


def run_many(configs, data=None, *, store=None, workers=None, progress=True) -> list[History]:
    """Train every config, reusing stored results, in parallel processes; histories in input order.

    Each config is looked up in the store first. The missing ones are trained
    once each (duplicates are merged) in a pool of spawned processes, and each
    result is stored as soon as it is finished, so an interrupted call keeps
    the runs it completed. A run that raises does not stop the others; once
    they are done a RuntimeError names the failed configs.

    Spawned workers import the caller's main module, so a script that calls
    ``run_many`` must do so under ``if __name__ == "__main__":``.

    Parameters
    ----------
    configs : iterable of RunConfig
    data : object with ``x_train``, ``y_train``, ``x_test``, ``y_test``, optional
        Defaults to :func:`ex3lib.load_mnist`, which each worker loads from the
        on-disk cache itself. Other data is sent to every worker.
    store : ResultsStore, None or False
        Where results are looked up and saved; None for the default
        ``ResultsStore()``, False to always train and save nothing.
    workers : int >= 1, optional
        Processes to train in; defaults to the environment variable
        ``EX3_WORKERS`` if it is set (a sweep sets it to 1 in each of its
        points, which already run in parallel), else the number of CPUs. Never
        more than the number of runs; with 1 (or one run) the runs are trained
        in this process.
    progress : bool
        Show a progress bar over the runs.

    Returns
    -------
    list of History
        One per config, in the order of ``configs``.

    Raises
    ------
    RuntimeError
        One or more runs raised; the others were stored. The first run's
        exception is chained as ``__cause__``.

    Examples
    --------
    >>> base = RunConfig(epochs=1)
    >>> grid = [base.replace(learning_rate=lr, batch_size=m) for lr in (0.01, 0.1) for m in (1, 10)]
    >>> histories = run_many(grid, workers=4)                          # doctest: +SKIP
    >>> histories[3].config["learning_rate"], histories[3].config["batch_size"]  # doctest: +SKIP
    (0.1, 10)
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
    else:
        workers = default_workers()
    progress = check_bool("progress", progress)

    unique = list(dict.fromkeys(configs))
    done: dict[RunConfig, History] = {}
    if store is not False:
        for config in unique:
            hit = store.get(config)
            if hit is not None:
                done[config] = hit
    todo = [config for config in unique if config not in done]

    failures = []
    if todo:
        n_workers = min(workers, len(todo))
        outcomes = (_run_here(todo, data, progress) if n_workers == 1
                    else _run_in_pool(todo, data, n_workers))
        # closing(): if this loop is interrupted, stop the pool now rather than
        # whenever the generator happens to be garbage-collected.
        with contextlib.closing(outcomes), \
                tqdm(total=len(todo), desc="runs", unit="run", disable=not progress) as bar:
            for config, outcome in outcomes:
                if isinstance(outcome, Exception):
                    failures.append((config, outcome))
                else:
                    fingerprint, history = outcome
                    done[config] = history
                    if store is not False:
                        _save(store, config, history, fingerprint)
                bar.update()

    if failures:
        first_index = {}
        for i, config in enumerate(configs):
            first_index.setdefault(config, i)
        failures.sort(key=lambda f: first_index[f[0]])
        names = "; ".join(f"configs[{first_index[c]}] {c.label!r} ({type(e).__name__}: {e})"
                          for c, e in failures)
        kept = "stored" if store is not False else "finished"
        raise RuntimeError(f"{len(failures)} of {len(todo)} runs failed (the others were {kept}): "
                           f"{names}") from failures[0][1]

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


def _save(store: ResultsStore, config: RunConfig, history: History, fingerprint: str) -> None:
    """Store a finished run, unless it was trained by other code or the store cannot be written."""
    if fingerprint != source_fingerprint():
        # The worker saw ex3lib's source after an edit: storing its result
        # under this process's fingerprint would label it with the wrong code.
        warnings.warn(f"ex3lib's source changed while {config.label!r} ran; its result is returned "
                      f"but not stored", stacklevel=3)
        return
    try:
        store.put(config, history)
    except OSError as err:
        warnings.warn(f"could not store the result of {config.label!r} in {store.root}: {err}",
                      stacklevel=3)


def _run_here(todo, data, progress):
    """Train the configs one after another in this process, yielding ``(config, outcome)``."""
    if data is None:
        data = load_mnist()
    for config in todo:
        try:
            outcome = (source_fingerprint(), run(config, data, progress=progress))
        except Exception as err:
            outcome = err
        yield config, outcome


def _run_in_pool(todo, data, n_workers):
    """Train the configs in ``n_workers`` spawned processes, yielding ``(config, outcome)`` as they finish."""
    # Workers that load the default MNIST themselves (from the .npz cache)
    # start faster than ones that unpickle 440 MB of it.
    worker_data = None if data is None or _is_default_mnist(data) else data
    # Spawn, not fork: forking a process that holds Numba's or tqdm's threads
    # can deadlock the child.
    context = multiprocessing.get_context("spawn")
    # Spawned children copy os.environ when they start, and they import Numba
    # (reading NUMBA_NUM_THREADS) before any initializer runs; the pool starts
    # processes on submit, so the variables stay set until every task is submitted.
    with environment(PINNED_THREADS):
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=context,
                                   initializer=_init_worker, initargs=(worker_data,))
        try:
            futures = {pool.submit(_run_in_worker, config): config for config in todo}
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    try:
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as err:
                outcome = err
            yield futures[future], outcome
    except BaseException:
        # An interrupt (e.g. in a notebook) reaches only this process; stop the
        # workers rather than let them finish runs that nobody will collect.
        for future in futures:
            future.cancel()
        terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


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


_worker_data = None


def _init_worker(data) -> None:
    """Pin each worker to one thread and keep the dataset it was sent (None: load MNIST per task)."""
    global _worker_data
    # Numba already read these when the worker imported ex3lib; pinning them
    # here too covers any process a run might start.
    os.environ.update(PINNED_THREADS)
    if data is not None:
        for name in _DATA_FIELDS:
            array = getattr(data, name, None)
            # Unpickled arrays are writable; read-only ones let train() reuse
            # their sparse form across the runs of this worker.
            if isinstance(array, np.ndarray):
                array.flags.writeable = False
    _worker_data = data


def _run_in_worker(config: RunConfig):
    """Train one config in a worker; returns the worker's source fingerprint and the history."""
    global _worker_data
    if _worker_data is None:
        # Loaded here rather than in the initializer, so that a failure is
        # reported against a config instead of breaking the whole pool.
        _worker_data = load_mnist()
    return source_fingerprint(), run(config, _worker_data, progress=False)
