"""Work on a Dask distributed cluster, for :func:`ex3lib.run_many` and the sweep command.

Dask is an optional extra (``pip install -r requirements-dask.txt``); this
module imports it only when a :class:`Cluster` is made, so the rest of ex3lib
works without it. A :class:`Cluster` connects to a scheduler, sends data to
every worker once (:meth:`Cluster.broadcast`), submits one task per item
(:meth:`Cluster.submit`) and yields each item's result or exception as it
finishes (:meth:`Cluster.results`); leaving the ``with`` block early (an
error, Ctrl-C) takes the unfinished tasks off the cluster. Every file is
written by the caller, on the machine that called.

>>> with Cluster("tcp://127.0.0.1:8786", what="EX3_SCHEDULER") as cluster:   # doctest: +SKIP
...     for n in (2, 3):
...         cluster.submit(n, pow, n, 2)
...     for n, outcome in cluster.results():
...         print(n, outcome)
3 9
2 4
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["CONNECT_TIMEOUT", "INSTALL_HINT", "Cluster"]

#: Seconds to wait for the scheduler before giving up.
CONNECT_TIMEOUT = 20.0

INSTALL_HINT = "pip install -r requirements-dask.txt"


class Cluster:
    """A connection to a Dask distributed scheduler, as a context manager.

    Parameters
    ----------
    address : str
        The scheduler, e.g. ``tcp://host:8786``.
    what : str
        What named the scheduler (an option, a variable, an argument), for
        the error messages.
    timeout : float, optional
        Seconds to wait for the scheduler; default :data:`CONNECT_TIMEOUT`.

    Raises
    ------
    ImportError
        Dask distributed is not installed; the message says how to install it.
    ConnectionError
        (on entering) The scheduler cannot be reached in ``timeout`` seconds,
        or ``address`` is not a scheduler's address.
    """

    def __init__(self, address: str, *, what: str, timeout: float | None = None):
        try:
            import distributed
        except ImportError:
            raise ImportError(f"{what} names a Dask scheduler, which needs Dask distributed: "
                              f"{INSTALL_HINT}") from None
        self.distributed = distributed
        self.address = address
        self.what = what
        self.timeout = CONNECT_TIMEOUT if timeout is None else timeout
        self.client = None
        self._futures: dict = {}  # the tasks not yet given back by results(), and their items
        self._finishing = None

    def __enter__(self) -> "Cluster":
        try:
            self.client = self.distributed.Client(self.address, timeout=f"{self.timeout}s")
        except (OSError, TimeoutError, ValueError, TypeError) as err:
            raise ConnectionError(f"cannot reach the Dask scheduler at {self.address!r} (from {self.what}) "
                                  f"within {self.timeout:g} s: {type(err).__name__}: {err}") from None
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.client is not None:
            if exc_type is not None:
                # Stopped early: take what has not finished off the cluster.
                with contextlib.suppress(Exception):
                    self.client.cancel(list(self._futures))
            self.client.close()
            self.client = None
        return False

    def threads(self) -> tuple[int, int]:
        """The number of workers connected now and of their threads."""
        nthreads = self.client.nthreads()
        return len(nthreads), sum(nthreads.values())

    def broadcast(self, value):
        """Send ``value`` to every worker once; pass the returned future to :meth:`submit` in its place."""
        # hash=False: tokenising hundreds of MB of arrays would cost more than it saves.
        return self.client.scatter(value, broadcast=True, hash=False)

    def submit(self, item, function, *args, key: str | None = None, **kwargs) -> None:
        """Run ``function(*args, **kwargs)`` on the cluster as the task of ``item``.

        Every call is a new task (``pure=False``), so submitting the same call
        twice runs it twice; ``key`` starts the task's name (which the
        dashboard shows). A task submitted while :meth:`results` is being
        iterated joins it.
        """
        if key is not None:
            key = f"{key}-{os.urandom(4).hex()}"
        future = self.client.submit(function, *args, pure=False, key=key, **kwargs)
        self._futures[future] = item
        if self._finishing is not None:
            self._finishing.add(future)

    def results(self):
        """Yield ``(item, outcome)`` for each submitted task as it finishes.

        The outcome is what the task returned, or the exception it raised:
        ``distributed.KilledWorker`` when every worker that tried it died, a
        ``CancelledError`` when it was lost (e.g. with data sent by
        :meth:`broadcast` to workers that all died). Each result is fetched as
        soon as its task finishes, so that a worker dying afterwards cannot
        take it.
        """
        self._finishing = self.distributed.as_completed(list(self._futures), with_results=True,
                                                        raise_errors=False)
        try:
            for future, result in self._finishing:
                item = self._futures.pop(future)
                if future.status == "error":
                    result = result[1]  # as_completed gives (type, exception, traceback)
                yield item, result
        finally:
            self._finishing = None
