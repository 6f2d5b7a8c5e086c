"""Work on a Dask distributed cluster, for :func:`ex3lib.run_many` and the sweep command.

Dask is an optional extra (``pip install -r requirements-dask.txt``); this
module imports it only when a :class:`Cluster` is made, so the rest of ex3lib
works without it. A :class:`Cluster` connects to a scheduler, shares data with
every worker (:meth:`Cluster.share`), takes one task per item
(:meth:`Cluster.submit`) and yields each item's result or exception as it
finishes (:meth:`Cluster.results`); leaving the ``with`` block early (an
error, Ctrl-C) takes the unfinished tasks off the cluster. Every file is
written by the caller, on the machine that called.

A task that kills its workers costs no other task. No more tasks are on the
cluster at a time than it has threads, so none waits on a worker that
another kills; shared data outlives every worker that held it; and as the
scheduler still blames every task a dying worker held (it gives a task up,
``KilledWorker``, after ``distributed.scheduler.allowed-failures`` of them),
a task given up is tried once more, alone, after all the others.

>>> with Cluster("tcp://127.0.0.1:8786", what="EX3_SCHEDULER") as cluster:   # doctest: +SKIP
...     for n in (2, 3):
...         cluster.submit(n, pow, n, 2)
...     for n, outcome in cluster.results():
...         print(n, outcome)
3 9
2 4
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from typing import NamedTuple

__all__ = ["CONNECT_TIMEOUT", "INSTALL_HINT", "Cluster"]

#: Seconds to wait for the scheduler before giving up.
CONNECT_TIMEOUT = 20.0

INSTALL_HINT = "pip install -r requirements-dask.txt"

#: Times :meth:`Cluster.share` tries to send a value while workers die under it.
_SHARE_ATTEMPTS = 5


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

            from . import _dask_shared
        except ImportError:
            raise ImportError(f"{what} names a Dask scheduler, which needs Dask distributed: "
                              f"{INSTALL_HINT}") from None
        self.distributed = distributed
        self._shared_mod = _dask_shared
        self.address = address
        self.what = what
        self.timeout = CONNECT_TIMEOUT if timeout is None else timeout
        self.client = None
        self._waiting = collections.deque()  # tasks submitted but not yet sent to the cluster
        self._futures: dict = {}  # the tasks on the cluster not yet given back by results()
        self._suspects = collections.deque()  # tasks blamed for dead workers, to be tried again alone
        self._shared: list[str] = []  # the names of the shared values' worker plugins
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
            self._waiting.clear()
            self._suspects.clear()
            if exc_type is not None:
                # Stopped early: take what has not finished off the cluster.
                with contextlib.suppress(Exception):
                    self.client.cancel(list(self._futures))
            for name in self._shared:
                with contextlib.suppress(Exception):
                    self.client.unregister_worker_plugin(name)
            self._shared.clear()
            self.client.close()
            self.client = None
        return False

    def threads(self) -> tuple[int, int]:
        """The number of workers connected now and of their threads."""
        nthreads = self.client.nthreads()
        return len(nthreads), sum(nthreads.values())

    def share(self, value):
        """Give every worker ``value``, once; pass the returned handle to :meth:`submit` in its place.

        The scheduler keeps a copy, which it gives to each worker that joins
        or is restarted, until the ``with`` block ends.
        """
        name = f"ex3-shared-{os.urandom(8).hex()}"
        plugin = self._shared_mod.SharedValue(value)
        for attempt in range(_SHARE_ATTEMPTS):
            try:
                self.client.register_plugin(plugin, name=name)
                break
            except OSError as err:  # distributed's CommClosedError among them
                # A worker died while it was being sent the value (the scheduler
                # keeps it for the worker that replaces it); the others are sent it
                # again, in case one of them missed it too.
                if attempt + 1 == _SHARE_ATTEMPTS:
                    raise ConnectionError(f"could not send data to the Dask workers of {self.address!r} in "
                                          f"{_SHARE_ATTEMPTS} attempts: {type(err).__name__}: {err}") from err
                time.sleep(0.5)
        self._shared.append(name)
        return self._shared_mod.Shared(name)

    def submit(self, item, function, *args, key: str | None = None, **kwargs) -> None:
        """Run ``function(*args, **kwargs)`` on the cluster as the task of ``item``.

        A handle from :meth:`share` among ``args`` or ``kwargs`` reaches
        ``function`` as its value. Every call is a new task, so submitting
        the same call twice runs it twice; ``key`` starts the task's name
        (which the dashboard shows). Tasks go to the cluster in the order
        they were submitted, while :meth:`results` is iterated, as threads
        are free; a task submitted during that iteration joins it.
        """
        self._waiting.append(_Task(item, key or "ex3-task", function, args, kwargs))

    def _send(self) -> None:
        """Send waiting tasks to the cluster until it has one per thread (at least one).

        Once none is waiting and the cluster is idle, a task blamed for dead
        workers is sent again, alone.
        """
        if any(task.alone for task in self._futures.values()):
            return
        if not self._waiting and not self._futures and self._suspects:
            self._start(self._suspects.popleft()._replace(alone=True))
            return
        if self._waiting:
            slots = max(1, self.threads()[1])
            while self._waiting and len(self._futures) < slots:
                self._start(self._waiting.popleft())

    def _start(self, task) -> None:
        # The function's arguments travel packed, so that none is taken for
        # one of Client.submit's own (retries, workers, priority...).
        future = self.client.submit(self._shared_mod.call_with_shared, task.function, task.args, task.kwargs,
                                    pure=False, key=f"{task.key}-{os.urandom(4).hex()}")
        self._futures[future] = task
        self._finishing.add(future)

    def results(self):
        """Yield ``(item, outcome)`` for each submitted task as it finishes.

        The outcome is what the task returned, or the exception it raised:
        ``distributed.KilledWorker`` when the workers that tried it died, one
        after another, as many times as the scheduler allows, also when it
        was tried again alone. Each result is fetched as soon as its task
        finishes, so that a worker dying afterwards cannot take it, and the
        next waiting task is sent before it is yielded.
        """
        self._finishing = self.distributed.as_completed(loop=self.client.loop, with_results=True,
                                                        raise_errors=False)
        try:
            self._send()
            for future, result in self._finishing:
                task = self._futures.pop(future)
                error = future.status == "error"
                # Let go of the finished task at once: a key still held is computed
                # again when the worker holding its result dies.
                future.release()
                del future
                if error:
                    result = result[1]  # as_completed gives (type, exception, traceback)
                    if isinstance(result, self.distributed.KilledWorker) and not task.alone:
                        # It may only have been waiting on a worker that another task killed.
                        self._suspects.append(task)
                        self._send()
                        continue
                self._send()
                yield task.item, result
        finally:
            self._finishing = None


class _Task(NamedTuple):
    item: object
    key: str
    function: object
    args: tuple
    kwargs: dict
    alone: bool = False  # tried again alone, after its workers died
