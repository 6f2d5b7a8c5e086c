"""A results store on disk, keyed by run config and library source, and parallel runs that fill it.

A finished :func:`ex3lib.run` is saved as JSON under a key derived from its
:class:`RunConfig` and a fingerprint of the source training depends on and of
the numpy, Numba and Python versions. Any edit to that code therefore changes
every key, so a result computed by older code is never returned; an edit to a
module training does not import (a chapter's analysis, a figure) keeps them. :func:`run_many` looks runs up
in the store first and trains only the missing ones, in parallel processes.

>>> import ex3lib
>>> configs = [ex3lib.RunConfig(learning_rate=lr, epochs=1) for lr in (0.01, 0.1)]
>>> histories = ex3lib.run_many(configs)                           # doctest: +SKIP
>>> [h.config["learning_rate"] for h in histories]                 # doctest: +SKIP
[0.01, 0.1]
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import re
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numba
import numpy as np
import platformdirs
from tqdm.auto import tqdm

from ._validate import check_bool, check_int
from .data import _atomic_write, load_mnist
from .training import History, RunConfig, run

RESULTS_ENV_VAR = "EX3_RESULTS_DIR"
WORKERS_ENV_VAR = "EX3_WORKERS"
FORMAT = 1

# Each worker process runs one training at a time; letting every worker also
# start a thread per core would oversubscribe the machine.
_PINNED_THREADS = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

_KEY_RE = re.compile(r"[0-9a-f]{64}")
_DATA_FIELDS = ("x_train", "y_train", "x_test", "y_test")


#: The modules that turn a RunConfig into a History: ``run`` (training) and
#: ``load_mnist`` (data). The fingerprint covers them and every ex3lib module
#: they import, found by reading their import statements (:func:`run_sources`),
#: so editing a chapter's analysis, a figure or the sweep command keeps the
#: stored runs, and a new module that training imports is covered without
#: anyone listing it.
RUN_ROOTS = ("training.py", "data.py")


@functools.cache
def source_fingerprint() -> str:
    """The sha256 of the source a training run depends on and of the numpy, Numba and Python versions.

    The files are those of :func:`run_sources`, each hashed with its path
    relative to the package, in sorted order, so renaming, adding or editing a
    module that training imports changes the fingerprint, and editing one it
    does not import (the results store itself, the chapters' analysis, plots,
    sliders, sweeps) does not. It is computed once per process: an edit made
    while a process runs is only seen by processes started afterwards.

    Returns
    -------
    str
        64 hexadecimal digits.

    Examples
    --------
    >>> len(source_fingerprint())
    64
    """
    return _fingerprint(run_sources())


@functools.cache
def chapter_fingerprint() -> str:
    """Like :func:`source_fingerprint`, over every module a chapter can import: all but the sweep command.

    A sweep point is a whole executed chapter, whose figures and text also
    depend on the presentation modules; the sweep command itself runs chapters
    but is never imported by them.
    """
    return _fingerprint(rel for rel, _ in _package_files() if not _is_sweep(rel))


def _is_sweep(rel: str) -> bool:
    return rel == "sweep.py" or rel.startswith("sweep/")


def _package_files():
    """``(path relative to the package, path)`` of every importable ``*.py`` file of ex3lib, sorted."""
    package = Path(__file__).resolve().parent
    # Names starting with a dot are not importable modules, and editors leave
    # such files behind (Emacs lock files are dangling symlinks named .#x.py).
    return sorted(
        (p.relative_to(package).as_posix(), p) for p in package.rglob("*.py")
        if not any(part.startswith(".") for part in p.relative_to(package).parts)
    )


def run_sources(roots=RUN_ROOTS) -> list[str]:
    """The package files ``roots`` import, directly or through each other (paths relative to ex3lib).

    Follows ``from . import x``, ``from .x import y``, ``from ..x import y``
    and ``import ex3lib.x`` statements anywhere in a file (function-level
    imports included); a package counts with its ``__init__.py``, and
    ``from .pkg import name`` also takes ``pkg/name.py`` when there is one.
    ``ex3lib/__init__.py`` itself is left out: it only re-exports names.

    Examples
    --------
    >>> "network.py" in run_sources()
    True
    >>> "plots.py" in run_sources()
    False
    """
    package = Path(__file__).resolve().parent
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        tree = ast.parse((package / rel).read_bytes(), filename=rel)
        here = Path(rel).parent  # the package of this module, relative to ex3lib
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here
                for _ in range(node.level - 1):
                    base = base.parent
                targets = _module_files(package, base, node.module, [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ex3lib":
                module = node.module.partition(".")[2] or None
                targets = _module_files(package, Path("."), module, [a.name for a in node.names])
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("ex3lib."):
                        targets += _module_files(package, Path("."), alias.name.partition(".")[2], [])
            todo += [t for t in targets if t not in seen]
    seen.discard("__init__.py")
    return sorted(seen)


def _module_files(package: Path, base: Path, module: str | None, names) -> list[str]:
    """The files behind ``from <base>.<module> import <names>`` (relative to the package)."""
    found = []
    where = base
    if module:
        parts = module.split(".")
        for i, part in enumerate(parts):
            where = where / part
            init = where / "__init__.py"
            if (package / init).is_file():
                found.append(init.as_posix())
            elif i == len(parts) - 1 and (package / where.with_suffix(".py")).is_file():
                found.append(where.with_suffix(".py").as_posix())
    for name in names:
        candidate = where / f"{name}.py"
        if (package / candidate).is_file():
            found.append(candidate.as_posix())
        elif (package / where / name / "__init__.py").is_file():
            found.append((where / name / "__init__.py").as_posix())
    return [f.removeprefix("./") for f in found]


def _fingerprint(files) -> str:
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for rel in sorted(files):
        content = (package / rel).read_bytes()
        # Lengths delimit the fields, so no two different sets of files hash alike.
        for field in (rel.encode(), content):
            h.update(len(field).to_bytes(8, "little"))
            h.update(field)
    versions = (f"numpy={np.__version__}\0numba={numba.__version__}\0"
                f"python={platform.python_implementation()} {platform.python_version()}")
    h.update(versions.encode())
    return h.hexdigest()


class ResultsStore:
    """Training histories on disk, one JSON file per run config and library version.

    A run's key is the sha256 of its config and of :func:`source_fingerprint`;
    its history lives in ``<root>/<key[:2]>/<key>.json``. Files are written
    atomically and validated when read: an unreadable, malformed or mismatched
    file counts as missing (with a warning), so :meth:`get` never returns a
    result that may be stale or wrong. Only JSON is read, never pickle, so a
    store from elsewhere cannot run code.

    Parameters
    ----------
    root : str or path-like, optional
        Folder of the store; defaults to ``$EX3_RESULTS_DIR``, then
        ``<user cache folder>/ex3/results``. Created on the first :meth:`put`.

    Examples
    --------
    >>> store = ResultsStore("/tmp/ex3-results")                    # doctest: +SKIP
    >>> config = RunConfig(epochs=1)
    >>> store.put(config, run(config, load_mnist()))                 # doctest: +SKIP
    >>> config in store, store.get(config).config["epochs"]          # doctest: +SKIP
    (True, 1)
    """

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = os.environ.get(RESULTS_ENV_VAR) or Path(platformdirs.user_cache_dir("ex3")) / "results"
        elif not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root must be a path (str or os.PathLike) or None, got {type(root).__name__}")
        self.root = Path(root).expanduser()
        self._warned: set[Path] = set()

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    def key(self, config: RunConfig) -> str:
        """The store key of ``config`` with the current library source.

        Parameters
        ----------
        config : RunConfig

        Returns
        -------
        str
            64 hexadecimal digits.
        """
        _check_config("config", config)
        blob = json.dumps({"config": config.to_dict(), "fingerprint": source_fingerprint()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def path(self, config: RunConfig) -> Path:
        """The file that holds (or would hold) the result of ``config``."""
        key = self.key(config)
        return self.root / key[:2] / f"{key}.json"

    def get(self, config: RunConfig) -> History | None:
        """The stored history of ``config``, or None if there is no valid one.

        A file that cannot be read or parsed, has another format or
        fingerprint, or belongs to another config is treated as missing, with
        one warning per file; the next :meth:`put` of the config replaces it.

        Parameters
        ----------
        config : RunConfig

        Returns
        -------
        History or None

        Examples
        --------
        >>> ResultsStore("/tmp/ex3-empty").get(RunConfig()) is None      # doctest: +SKIP
        True
        """
        path = self.path(config)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as err:
            return self._invalid(path, f"cannot be read ({err})")
        try:
            stored = json.loads(text)
        except ValueError as err:
            return self._invalid(path, f"is not valid JSON ({err})")
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            return self._invalid(path, f"is not a format-{FORMAT} result file")
        if stored.get("fingerprint") != source_fingerprint():
            return self._invalid(path, "was written by another version of ex3lib")
        # Through JSON and back, so that the comparison sees what a file can hold.
        if stored.get("config") != json.loads(json.dumps(config.to_dict())):
            return self._invalid(path, "holds the result of another config")
        try:
            return History.from_dict(stored["history"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            return self._invalid(path, f"holds a malformed history ({type(err).__name__}: {err})")

    def put(self, config: RunConfig, history: History) -> None:
        """Save ``history`` as the result of ``config``, replacing any earlier one.

        The file is written to a temporary sibling and renamed over the target,
        so readers (and an interrupted write) never see a partial file.

        Parameters
        ----------
        config : RunConfig
        history : History

        Raises
        ------
        OSError
            The file could not be written; an earlier result of ``config`` is kept.

        Examples
        --------
        >>> config = RunConfig(epochs=1)
        >>> ResultsStore().put(config, run(config, load_mnist()))        # doctest: +SKIP
        """
        if not isinstance(history, History):
            raise TypeError(f"history must be an ex3lib.History, got {type(history).__name__}")
        path = self.path(config)
        payload = {"format": FORMAT, "fingerprint": source_fingerprint(),
                   "config": config.to_dict(), "history": history.to_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        # allow_nan=False: NaN is not JSON, and History.to_dict already maps it to None.
        _atomic_write(path, lambda f: json.dump(payload, f, allow_nan=False, default=_json_scalar), "w")
        self._warned.discard(path)

    def __contains__(self, config) -> bool:
        """Whether :meth:`get` would return a history for ``config``."""
        return isinstance(config, RunConfig) and self.get(config) is not None

    def __len__(self) -> int:
        """The number of result files, including those of other ex3lib versions."""
        return sum(1 for _ in self._files())

    def clear(self) -> int:
        """Delete every result file (and leftover temporary file) of the store.

        Only files named as the store names them are removed, so a root that
        also holds other files is safe to clear.

        Returns
        -------
        int
            The number of result files deleted.
        """
        removed = 0
        for path in list(self._files()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        for folder in self._folders():
            for tmp in folder.glob(".*.json.*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._warned.clear()
        return removed

    def _folders(self):
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if re.fullmatch(r"[0-9a-f]{2}", folder.name) and folder.is_dir():
                yield folder

    def _files(self):
        for folder in self._folders():
            for path in folder.glob("*.json"):
                if _KEY_RE.fullmatch(path.stem) and path.stem[:2] == folder.name:
                    yield path

    def _invalid(self, path: Path, problem: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"ignoring stored result {path}: it {problem}; the run will be repeated",
                          stacklevel=3)
        return None


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
        _check_config(f"configs[{i}]", config)
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


def _check_config(name, config):
    if not isinstance(config, RunConfig):
        raise TypeError(f"{name} must be an ex3lib.RunConfig, got {type(config).__name__}")


def _json_scalar(value):
    """Numpy scalars as Python numbers, for json.dump; anything else is an error."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


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
    with _environment(_PINNED_THREADS):
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
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's worker processes mid-task and wait until they have exited."""
    # ProcessPoolExecutor has no public way to do this before Python 3.14.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


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


@contextlib.contextmanager
def _environment(values):
    """Set environment variables for the duration of a ``with`` block."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_worker_data = None


def _init_worker(data) -> None:
    """Pin each worker to one thread and keep the dataset it was sent (None: load MNIST per task)."""
    global _worker_data
    # Numba already read these when the worker imported ex3lib; pinning them
    # here too covers any process a run might start.
    os.environ.update(_PINNED_THREADS)
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
