"""The tests' Dask: the ``distributed`` package (required in CI) and a small cluster on loopback."""

import os

import pytest


def require_distributed():
    """The ``distributed`` module; without it the test is skipped, or fails where ``$EX3_REQUIRE_DASK`` is set."""
    if os.environ.get("EX3_REQUIRE_DASK"):
        import distributed  # .ci/run installs requirements-dask.txt: a missing Dask fails there
        return distributed
    return pytest.importorskip("distributed", reason="the Dask extra: pip install -r requirements-dask.txt")


def local_cluster():
    """A ``distributed.LocalCluster`` of two one-thread worker processes on 127.0.0.1, with no dashboard.

    Without a dashboard the scheduler still serves HTTP (its health routes),
    on port 8787 unless told otherwise, so two tests with a cluster at once
    (one per pytest worker) warned "Port 8787 is already in use"; port 0
    takes a free one.
    """
    return require_distributed().LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                              host="127.0.0.1", dashboard_address=None,
                                              scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
