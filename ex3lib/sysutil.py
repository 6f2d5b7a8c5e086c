"""File and process helpers shared by the data cache, the results store, run_many and the sweep.

- :func:`atomic_write` writes a file under a temporary name and renames it,
  so that no reader ever sees half a file;
- :data:`PINNED_THREADS` and :func:`environment` hold a worker process to one
  thread per library;
- :func:`terminate_workers` stops a process pool's workers mid-task.

This module is imported by :mod:`ex3lib.data`, so it is part of the source
fingerprint of a training run (:func:`ex3lib.fingerprint.run_sources`): keep it
small and free of ex3lib imports.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

__all__ = ["PINNED_THREADS", "atomic_write", "environment", "terminate_workers"]

#: The environment of a worker process that runs one training at a time:
#: letting every worker also start a thread per core would oversubscribe the
#: machine.
PINNED_THREADS = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def atomic_write(path: Path, write: Callable[[IO], None], mode: str = "wb") -> None:
    """Write a file through ``write`` into a temporary sibling, then rename it over ``path``.

    An interrupted or failed write leaves ``path`` as it was and no temporary
    file behind. The temporary file is named ``.<name>.<random>.tmp`` in the
    same folder, so that a sweep or a store can find and remove one left by a
    killed process. The file gets the permissions a plain ``open()`` would give.

    Parameters
    ----------
    path : pathlib.Path
        The file to write; its folder must exist.
    write : callable
        Called once with the open temporary file; writes the whole content.
    mode : str
        ``"wb"`` (bytes) or ``"w"`` (text, UTF-8).

    Raises
    ------
    OSError
        The file could not be written; ``path`` is unchanged. Whatever
        ``write`` raises is raised too, with the same guarantee.

    Examples
    --------
    >>> atomic_write(Path("/tmp/ex3-example.txt"), lambda f: f.write("hello"), mode="w")  # doctest: +SKIP
    """
    encoding = None if "b" in mode else "utf-8"
    tmp = tempfile.NamedTemporaryFile(mode, encoding=encoding, delete=False, dir=path.parent,
                                      prefix=f".{path.name}.", suffix=".tmp")
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            # NamedTemporaryFile is private (0600); give the file the mode a plain open() would.
            os.fchmod(tmp.fileno(), 0o666 & ~_umask())
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp.name)
        raise


@functools.cache
def _umask() -> int:
    """The process's umask (reading it means setting it, so it is read once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def environment(values: Mapping[str, str]):
    """Set environment variables for the duration of a ``with`` block.

    Each variable gets back its earlier value afterwards, or is removed if it
    was not set.

    Parameters
    ----------
    values : mapping of str to str
        Variable names and their values, e.g. :data:`PINNED_THREADS`.

    Examples
    --------
    >>> with environment({"OMP_NUM_THREADS": "1"}):
    ...     os.environ["OMP_NUM_THREADS"]
    '1'
    """
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


def terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's worker processes mid-task and wait until they have exited.

    Each worker gets SIGTERM, then SIGKILL if it has not exited after 5 s.
    The pool itself must still be shut down afterwards.

    Parameters
    ----------
    pool : concurrent.futures.ProcessPoolExecutor
    """
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
