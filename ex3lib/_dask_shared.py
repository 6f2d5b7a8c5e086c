"""Values every Dask worker holds, for :meth:`ex3lib.cluster.Cluster.share`: imported only with Dask.

A value is held by a worker plugin. The scheduler keeps the plugin and
installs it on every worker, including the workers that join, or that a
nanny restarts after one died, before they take any task. So the value
survives the death of every worker that held it, which data scattered to
the workers does not: a run that kills its worker cannot cancel the
others' runs by taking their data with it.
"""

from __future__ import annotations

from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin


class SharedValue(WorkerPlugin):
    """A worker plugin that holds ``value``; its name is the :class:`Shared` handle's."""

    def __init__(self, value):
        self.value = value

    def teardown(self, worker):
        self.value = None


class Shared:
    """The handle of a value shared by :meth:`Cluster.share`: small, it travels with each task in the value's place."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Shared({self.name!r})"

    def value(self):
        """The value, on a worker."""
        worker = get_worker()
        try:
            return worker.plugins[self.name].value
        except KeyError:
            raise LookupError(f"the shared value {self.name} is not on the Dask worker {worker.address}: "
                              f"its Cluster has closed, or the value never reached this worker") from None


def call_with_shared(function, args: tuple, kwargs: dict):
    """``function(*args, **kwargs)`` with each :class:`Shared` argument replaced by its value; runs on a worker."""
    args = [a.value() if isinstance(a, Shared) else a for a in args]
    kwargs = {k: v.value() if isinstance(v, Shared) else v for k, v in kwargs.items()}
    return function(*args, **kwargs)
