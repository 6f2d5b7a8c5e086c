"""run_many (ex3lib.runner): one run never costs another, runs on a Dask cluster, progress lines.

Every kind of failure is tried on every engine that can have it — in this
process (``workers=1``), the local pool (``workers=2``) and a Dask
``LocalCluster`` on loopback — and each time the other runs must be stored.
The Dask tests skip without the Dask extra unless ``EX3_REQUIRE_DASK`` is set
(as CI does).
"""

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ex3lib import RunConfig, run
from ex3lib import cluster as cluster_mod
from ex3lib import runner as runner_mod
from ex3lib.data import MNIST
from ex3lib.runner import run_many
from ex3lib.store import ResultsStore
from localcluster import local_cluster, require_distributed

TINY = dict(train_size=600, epochs=1, batch_size=10, log_every=300, layers=(784, 32, 10))
#: The failing config of each test: configs[1] of four.
BAD_SEED = 99
FIELDS = ("epoch", "loss", "test_loss", "test_accuracy", "learning_rate")


def tiny(**changes):
    """A run that trains for well under a second once the kernels are compiled."""
    return RunConfig(**{**TINY, **changes})


def assert_same_run(a, b):
    """Identical histories, every array and field except the wall-clock times."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), name
    assert a.time.shape == b.time.shape
    assert (a.config, a.diverged, a.reason) == (b.config, b.diverged, b.reason)
    assert json.dumps(a.extra) == json.dumps(b.extra)  # NaN == NaN, as the store would see them


@pytest.fixture
def store(tmp_path):
    return ResultsStore(tmp_path / "results")


@pytest.fixture
def small_mnist(mnist):
    """The first 600 training and 500 test images: data that run_many must send to its workers."""
    return MNIST(mnist.x_train[:600], mnist.y_train[:600], mnist.x_test[:500], mnist.y_test[:500])



@pytest.fixture(scope="module")
def dask_cluster():
    """Two one-thread workers on loopback; a worker that dies is restarted by its nanny.

    A run is given up after its second dead worker (allowed-failures 1)
    rather than the fourth. The LocalCluster closes a worker's nanny when no
    worker of that name has been up for lost-worker-timeout after one died
    (15 s): with runs killing workers every second, that can fall on a
    restart and leave the cluster a worker short, so it is made longer than
    the tests.
    """
    require_distributed()
    import dask

    with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                          "distributed.deploy.lost-worker-timeout": "1h"}), local_cluster() as cluster:
        yield cluster


ENGINES = ["process", "pool", "dask"]


@pytest.fixture(params=ENGINES)
def engine(request):
    """run_many's keyword arguments for one engine."""
    if request.param == "process":
        return {"workers": 1}
    if request.param == "pool":
        return {"workers": 2}
    cluster = request.getfixturevalue("dask_cluster")
    cluster.wait_for_workers(2, timeout=60)
    return {"scheduler": cluster.scheduler_address}


def others_are_stored(configs, store, data, error):
    """``error`` names configs[1] alone; every other config's history is in the store, as if run alone."""
    message = str(error)
    assert message.startswith("1 of 4 runs failed (the others were stored):\n  configs[1] ")
    assert message.count("\n") == 1
    for i in (0, 2, 3):
        assert_same_run(store.get(configs[i]), run(configs[i], data, progress=False))
    assert configs[1] not in store
    return message.split("\n")[1]




def test_a_run_that_raises_in_training(store, small_mnist, engine):
    # Five output units cannot take MNIST's labels 5..9.
    configs = [tiny(), tiny(layers=(784, 32, 5)), tiny(seed=1), tiny(seed=2)]
    with pytest.raises(RuntimeError) as info:
        run_many(configs, small_mnist, store=store, progress=False, **engine)
    line = others_are_stored(configs, store, small_mnist, info.value)
    assert line == (f"  configs[1] {runner_mod._describe(configs[1])} failed in training: "
                    f"ValueError: data.y_train must hold labels from 0 to 4, got values from 0 to 9")
    assert "layers=(784, 32, 5)" in line
    assert isinstance(info.value.__cause__, ValueError)


def refuse_to_store_the_bad_seed(monkeypatch, error):
    """Make ResultsStore.put raise ``error`` for the bad seed's run and store the others."""
    put = ResultsStore.put

    def refuse_one(self, config, history):
        if config.seed == BAD_SEED:
            raise error
        put(self, config, history)

    monkeypatch.setattr(ResultsStore, "put", refuse_one)


def test_a_run_that_raises_in_storing(store, small_mnist, engine, monkeypatch):
    refuse_to_store_the_bad_seed(monkeypatch, TypeError("cannot store this one"))
    # Expected to be the longest (on-line Adam), the refused run starts first and comes back while
    # the others are training or waiting: they must not be stopped.
    bad = tiny(seed=BAD_SEED, optimiser="adam", learning_rate=0.001, batch_size=1, train_size=100, log_every=100)
    configs = [tiny(seed=1), bad, tiny(seed=2), tiny(seed=3)]
    assert runner_mod._longest_first(configs)[0] == bad
    with pytest.raises(RuntimeError) as info:
        run_many(configs, small_mnist, store=store, progress=False, **engine)
    line = others_are_stored(configs, store, small_mnist, info.value)
    assert line == f"  configs[1] {runner_mod._describe(bad)} failed in storing: TypeError: cannot store this one"
    assert "Adam β₁=0.9 β₂=0.999 η=0.001 m=1 (epochs=1, seed=99, train_size=100" in line
    assert isinstance(info.value.__cause__, TypeError)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # an overflow is the run's to record, not a warning
def test_a_run_with_non_finite_numbers(store, small_mnist, engine):
    # An eps that validation accepts, but η/ε overflows: Adam's effective step of
    # the weights of never-lit pixels is infinite, and its percentiles NaN.
    bad = tiny(optimiser="adam", learning_rate=0.001, eps=1e-320)
    configs = [tiny(), bad, tiny(seed=1), tiny(seed=2)]
    try:
        histories = run_many(configs, small_mnist, store=store, progress=False, **engine)
    except RuntimeError as err:
        # The store cannot keep it (JSON has no NaN): that run alone is reported.
        line = others_are_stored(configs, store, small_mnist, err)
        assert line.startswith(f"  configs[1] {runner_mod._describe(bad)} failed in storing: ")
    else:
        # The store keeps non-finite numbers: they come back as they were.
        assert not np.all(np.isfinite(histories[1].extra["effective_step"]))
        assert_same_run(store.get(bad), histories[1])
        for config in configs:
            assert config in store


def _train_or_die(config):
    """A local worker's task that kills its own process for the bad seed."""
    if config.seed == BAD_SEED:
        os.kill(os.getpid(), signal.SIGKILL)
    return runner_mod._run_in_worker(config)


def _train_or_die_on_dask(config, data):
    """A Dask worker's task that kills its own process for the bad seed, after a second.

    The second lets the nanny of a worker it restarted learn that the worker
    is up: a worker that dies before that is not restarted again, its nanny
    closes, and the cluster would be a worker short for the tests after.
    """
    if config.seed == BAD_SEED:
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)
    return runner_mod._run_on_worker(config, data)


def test_a_run_that_kills_its_worker(store, small_mnist, engine, monkeypatch):
    if "workers" in engine and engine["workers"] == 1:
        pytest.skip("in this process there is no worker to kill")
    monkeypatch.setattr(runner_mod, "_run_in_worker", _train_or_die)
    monkeypatch.setattr(runner_mod, "_run_on_worker", _train_or_die_on_dask)
    configs = [tiny(), tiny(seed=BAD_SEED), tiny(seed=1), tiny(seed=2)]
    with pytest.raises(RuntimeError) as info:
        run_many(configs, small_mnist, store=store, progress=False, **engine)
    line = others_are_stored(configs, store, small_mnist, info.value)
    if "scheduler" in engine:
        assert "failed in training: every Dask worker that ran it died, also when it ran alone: KilledWorker" in line
    else:
        assert line.endswith("failed in training: its worker process died (killed by SIGKILL)")


class _Unloadable:
    """Pickles, but cannot be unpickled."""

    def __reduce__(self):
        return _refuse, ()


def _refuse():
    raise ValueError("this result cannot be read back")


def _train_unloadable(config):
    if config.seed == BAD_SEED:
        return pickle.dumps(("0" * 64, _Unloadable()))
    return runner_mod._run_in_worker(config)


def test_a_result_that_cannot_be_unpickled(store, small_mnist, monkeypatch):
    monkeypatch.setattr(runner_mod, "_run_in_worker", _train_unloadable)
    configs = [tiny(), tiny(seed=BAD_SEED), tiny(seed=1), tiny(seed=2)]
    with pytest.raises(RuntimeError) as info:
        run_many(configs, small_mnist, store=store, workers=2, progress=False)
    line = others_are_stored(configs, store, small_mnist, info.value)
    assert line.endswith("failed when its result was unpickled: ValueError: this result cannot be read back")


def test_a_warning_made_an_error_fails_its_run_alone(store, small_mnist, monkeypatch):
    refuse_to_store_the_bad_seed(monkeypatch, OSError("no space left on device"))
    configs = [tiny(), tiny(seed=BAD_SEED), tiny(seed=1), tiny(seed=2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError) as info:
            run_many(configs, small_mnist, store=store, workers=2, progress=False)
    line = others_are_stored(configs, store, small_mnist, info.value)
    assert line.endswith("failed in storing: UserWarning: could not store the result of 'SGD η=0.1 m=10' in "
                         f"{store.root}: no space left on device")


def test_several_failures_are_named_in_input_order(store, small_mnist):
    five, three = tiny(layers=(784, 32, 5)), tiny(layers=(784, 32, 3), seed=4)
    configs = [tiny(), three, five, three, tiny(seed=1)]
    with pytest.raises(RuntimeError) as info:
        run_many(configs, small_mnist, store=store, workers=2, progress=False)
    lines = str(info.value).split("\n")
    assert lines[0] == "2 of 4 runs failed (the others were stored):"
    assert lines[1].startswith(f"  configs[1] {runner_mod._describe(three)} failed in training")
    assert lines[2].startswith(f"  configs[2] {runner_mod._describe(five)} failed in training")
    assert len(lines) == 3 and tiny() in store and tiny(seed=1) in store


def test_the_longest_runs_start_first(store, small_mnist, monkeypatch):
    short, adam_online, long_sgd = tiny(batch_size=100), tiny(optimiser="adam", batch_size=1), tiny(epochs=3)
    assert runner_mod._longest_first([short, long_sgd, adam_online]) == [adam_online, long_sgd, short]
    # The pool starts them in that order (seen here through the order they are sent to the workers)...
    started = []

    def record_order(todo, data, n_workers):
        started.extend(todo)
        yield from ()

    monkeypatch.setattr(runner_mod, "_run_in_pool", record_order)
    with pytest.raises(RuntimeError, match="3 of 3 runs failed:\n.* failed with no result: RuntimeError: its "
                                           "worker never reported back"):
        run_many([short, long_sgd, adam_online], small_mnist, store=store, workers=2, progress=False)
    assert started == [adam_online, long_sgd, short]
    # ... and in this process, where the order cannot matter, they run as given.
    calls = []
    monkeypatch.setattr(runner_mod, "run", lambda config, data, progress: calls.append(config) or
                        run(config, data, progress=progress))
    run_many([short, long_sgd], small_mnist, store=store, workers=1, progress=False)
    assert calls == [short, long_sgd]


def test_describe_names_what_the_label_does_not():
    assert runner_mod._describe(RunConfig()) == "SGD η=0.1 m=10"
    assert runner_mod._describe(RunConfig(seed=2, epochs=20)) == "SGD η=0.1 m=10 (epochs=20, seed=2)"
    assert (runner_mod._describe(RunConfig(optimiser="adam", learning_rate=0.001, eps=1e-300))
            == "Adam β₁=0.9 β₂=0.999 η=0.001 m=10 (eps=1e-300)")
    assert (runner_mod._describe(RunConfig(batch_schedule="increase", batch_final=1000, train_size=2000))
            == "SGD η=0.1 m=10→1000 (train_size=2000)")


def test_a_growing_batch_is_expected_to_cost_less_than_its_first_batch_size():
    grown = RunConfig(batch_schedule="increase", batch_size=1, batch_final=100, epochs=3, train_size=1000)
    assert runner_mod._longest_first([grown, grown.replace(batch_schedule="constant", batch_final=None),
                                      grown.replace(batch_size=2, batch_schedule="constant", batch_final=None)]) \
        == [grown.replace(batch_schedule="constant", batch_final=None), grown,
            grown.replace(batch_size=2, batch_schedule="constant", batch_final=None)]




CLUSTER_CONFIGS = [tiny(), tiny(seed=1, order="shuffle"), tiny(optimiser="adam", learning_rate=0.001),
                   tiny(momentum=0.9, nesterov=True, schedule="linear_decay", lr_final=0.01)]


@pytest.mark.parametrize("which", ["default MNIST", "other data"])
def test_cluster_histories_are_those_of_local_runs(dask_cluster, tmp_path, mnist, small_mnist, which):
    data = None if which == "default MNIST" else small_mnist
    dask_store, local_store = ResultsStore(tmp_path / "dask"), ResultsStore(tmp_path / "local")
    on_dask = run_many(CLUSTER_CONFIGS, data, store=dask_store, scheduler=dask_cluster.scheduler_address,
                       progress=False)
    local = run_many(CLUSTER_CONFIGS, data, store=local_store, workers=2, progress=False)
    for config, a, b in zip(CLUSTER_CONFIGS, on_dask, local):
        assert_same_run(a, b)
        assert_same_run(dask_store.get(config), b)  # stored on this machine


def test_cluster_workers_load_mnist_once_and_get_other_data_once(dask_cluster, tmp_path, small_mnist,
                                                                  monkeypatch):
    distributed = require_distributed()
    with distributed.Client(dask_cluster.scheduler_address) as client:
        client.run(_count_pixel_conversions)
        configs = [tiny(seed=s) for s in range(6)]
        run_many(configs, store=ResultsStore(tmp_path / "a"), scheduler=dask_cluster.scheduler_address,
                 progress=False)
        conversions = client.run(_pixel_conversions)
    # Each worker converts MNIST's two image arrays at most once, however many runs it trained.
    assert all(n <= 2 for n in conversions.values()), conversions

    shared = []
    share = cluster_mod.Cluster.share

    def counted(self, value):
        shared.append(value)
        return share(self, value)

    monkeypatch.setattr(cluster_mod.Cluster, "share", counted)
    run_many(configs, small_mnist, store=ResultsStore(tmp_path / "b"), scheduler=dask_cluster.scheduler_address,
             progress=False)
    assert len(shared) == 1 and shared[0].x_train is small_mnist.x_train


def test_shared_data_outlives_every_worker_that_held_it(dask_cluster):
    # Data scattered to the workers would be lost with them, and the runs that needed it cancelled.
    with cluster_mod.Cluster(dask_cluster.scheduler_address, what="the test") as cluster:
        dask_cluster.wait_for_workers(2, timeout=60)
        shared = cluster.share(np.arange(10))
        cluster.submit("before", np.sum, shared)
        assert list(cluster.results()) == [("before", 45)]
        dead = set(cluster.client.nthreads())
        for pid in cluster.client.run(os.getpid).values():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while len(set(cluster.client.nthreads()) - dead) < 2:
            assert time.monotonic() < deadline, "the nannies did not restart the workers"
            time.sleep(0.1)
        for n in range(4):
            cluster.submit(n, np.sum, shared, key="after")
        assert sorted(cluster.results()) == [(n, 45) for n in range(4)]


def test_cluster_sends_tasks_in_order_no_more_than_its_threads(dask_cluster, monkeypatch):
    with cluster_mod.Cluster(dask_cluster.scheduler_address, what="the test") as cluster:
        dask_cluster.wait_for_workers(2, timeout=60)
        sent, on_cluster = [], []
        submit = cluster.client.submit

        def record(function, *args, **kwargs):
            on_cluster.append(sum(not f.done() for f in cluster._futures))
            sent.append(args[1][0])  # call_with_shared(function, args, kwargs): the task's first argument
            return submit(function, *args, **kwargs)

        monkeypatch.setattr(cluster.client, "submit", record)
        for n in range(6):
            cluster.submit(n, time.sleep, 0.2 * n)
        assert sorted(item for item, _ in cluster.results()) == list(range(6))
    assert sent == [0.2 * n for n in range(6)]
    assert max(on_cluster) == 1  # two threads: at most one other task when one is sent


def _blamed(n, log, times):
    """Append n to log; for the first ``times`` calls of n, fail as the scheduler fails a task whose workers died."""
    import distributed

    with open(log, "a") as f:
        f.write(f"{n}\n")
    if Path(log).read_text().split().count(str(n)) <= times:
        raise distributed.KilledWorker(f"task {n}", SimpleNamespace(address="tcp://a-worker"), 1)
    return n


def test_a_task_given_up_for_dead_workers_is_tried_again_alone_after_the_others(dask_cluster, tmp_path):
    log = tmp_path / "log"
    with cluster_mod.Cluster(dask_cluster.scheduler_address, what="the test") as cluster:
        dask_cluster.wait_for_workers(2, timeout=60)
        for n, times in [(0, 0), (1, 1), (2, 2), (3, 0), (4, 0)]:
            cluster.submit(n, _blamed, n, str(log), times)
        outcomes = dict(cluster.results())
    distributed = require_distributed()
    assert [outcomes[n] for n in (0, 1, 3, 4)] == [0, 1, 3, 4]  # 1 was only waiting where another died
    assert isinstance(outcomes[2], distributed.KilledWorker)  # 2 kills its workers when alone too
    calls = log.read_text().split()
    assert sorted(calls[:5]) == list("01234") and sorted(calls[5:]) == ["1", "2"]


def _keywords(**kwargs):
    return kwargs


def test_cluster_keywords_reach_the_function(dask_cluster):
    # retries, workers, priority: also Client.submit's own keywords, which must not take them.
    with cluster_mod.Cluster(dask_cluster.scheduler_address, what="the test") as cluster:
        shared = cluster.share("text")
        cluster.submit("k", _keywords, retries=0, workers="none", priority=-1, text=shared)
        assert list(cluster.results()) == [("k", {"retries": 0, "workers": "none", "priority": -1,
                                                  "text": "text"})]


def _count_pixel_conversions():
    import ex3lib.data

    real = getattr(ex3lib.data, "_real_pixels_to_float", ex3lib.data.pixels_to_float)
    ex3lib.data._real_pixels_to_float = real
    ex3lib.data._conversions = 0

    def counting(*args, **kwargs):
        ex3lib.data._conversions += 1
        return real(*args, **kwargs)

    ex3lib.data.pixels_to_float = counting


def _pixel_conversions():
    import ex3lib.data

    return ex3lib.data._conversions


def test_scheduler_from_the_environment_read_at_each_call(dask_cluster, store, small_mnist, monkeypatch,
                                                         capfd):
    monkeypatch.setenv("EX3_SCHEDULER", dask_cluster.scheduler_address)
    run_many([tiny()], small_mnist, store=store, progress=False)
    assert f"to train on the Dask cluster at {dask_cluster.scheduler_address}" in capfd.readouterr().err
    monkeypatch.setenv("EX3_SCHEDULER", "")
    run_many([tiny(seed=1)], small_mnist, store=store, progress=False)
    assert "to train in this process" in capfd.readouterr().err


def _unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_a_clear_error(store, small_mnist, monkeypatch):
    require_distributed()
    monkeypatch.setattr(cluster_mod, "CONNECT_TIMEOUT", 1.0)
    address = f"tcp://127.0.0.1:{_unused_port()}"
    with pytest.raises(ConnectionError, match=rf"cannot reach the Dask scheduler at '{address}' "
                                              rf"\(from run_many\(scheduler=...\)\) within 1 s"):
        run_many([tiny()], small_mnist, store=store, scheduler=address, progress=False)
    monkeypatch.setenv("EX3_SCHEDULER", address)
    with pytest.raises(ConnectionError, match=r"\(from EX3_SCHEDULER\)"):
        run_many([tiny()], small_mnist, store=store, progress=False)
    # Nothing to train: the scheduler is not asked. scheduler=False: local whatever the variable says.
    run_many([tiny()], small_mnist, store=store, scheduler=False, workers=1, progress=False)
    run_many([tiny()], small_mnist, store=store, progress=False)


def test_scheduler_without_dask_says_how_to_install_it(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"run_many\(scheduler=...\) names a Dask scheduler, which needs "
                                          r"Dask distributed: pip install -r requirements-dask.txt"):
        run_many([tiny()], store=store, scheduler="tcp://127.0.0.1:8786", progress=False)
    monkeypatch.setenv("EX3_SCHEDULER", "tcp://127.0.0.1:8786")
    with pytest.raises(ImportError, match="EX3_SCHEDULER names a Dask scheduler"):
        run_many([tiny()], store=store, progress=False)


@pytest.mark.parametrize("scheduler", ["", "  ", 8786, True])
def test_bad_scheduler_argument(store, scheduler):
    with pytest.raises(TypeError, match="scheduler must be a Dask scheduler's address"):
        run_many([tiny()], store=store, scheduler=scheduler, progress=False)




def test_progress_lines(store, small_mnist, monkeypatch, capfd):
    monkeypatch.setenv("EX3_CHAPTER", "sgd")
    monkeypatch.delenv("EX3_PROGRESS", raising=False)
    run_many([tiny()], small_mnist, store=store, workers=1, progress=False)
    capfd.readouterr()
    with pytest.raises(RuntimeError):
        run_many([tiny(), tiny(seed=1), tiny(), tiny(layers=(784, 32, 5))], small_mnist, store=store,
                 workers=1, progress=False)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 4, lines
    assert lines[0] == "sgd: 3 runs, 1 stored, 2 to train in this process"
    assert lines[1].startswith(f"sgd: 1/2 {runner_mod._describe(tiny(seed=1))}: ") and lines[1].endswith(" s")
    assert lines[2].startswith(f"sgd: 2/2 {runner_mod._describe(tiny(layers=(784, 32, 5)))} failed in "
                               f"training: ValueError: data.y_train must hold labels from 0 to 4")
    assert lines[3].startswith("sgd: 1 trained in ") and lines[3].endswith(" s of training), 1 failed")

    run_many([tiny(), tiny(seed=1), tiny()], small_mnist, store=store, progress=False)
    assert capfd.readouterr().err == "sgd: 2 runs, all stored\n"
    monkeypatch.setenv("EX3_PROGRESS", "0")
    run_many([tiny(), tiny(seed=2)], small_mnist, store=store, workers=1, progress=False)
    assert capfd.readouterr().err == ""
    monkeypatch.delenv("EX3_CHAPTER")
    monkeypatch.setenv("EX3_PROGRESS", "1")
    run_many([tiny()], small_mnist, store=store, progress=False)
    assert capfd.readouterr().err == "run_many: 1 run, all stored\n"


def test_progress_lines_on_two_workers(store, small_mnist, monkeypatch, capfd):
    monkeypatch.setenv("EX3_CHAPTER", "decay")
    run_many([tiny(seed=s) for s in range(3)], small_mnist, store=store, workers=2, progress=False)
    lines = capfd.readouterr().err.splitlines()
    assert lines[0] == "decay: 3 runs, 0 stored, 3 to train on 2 workers"
    assert sorted(line.split(" ", 2)[1] for line in lines[1:4]) == ["1/3", "2/3", "3/3"]
    assert lines[4].startswith("decay: 3 trained in ") and len(lines) == 5


def test_progress_variable_must_be_0_or_1(store, monkeypatch):
    monkeypatch.setenv("EX3_PROGRESS", "yes")
    with pytest.raises(ValueError, match="EX3_PROGRESS must be 1 .* or 0 .*; got 'yes'"):
        run_many([tiny()], store=store, progress=False)


def test_progress_in_a_kernel_goes_to_the_terminal_not_the_notebook(tmp_path, store, small_mnist):
    """As in ``jupyter-book build``: the lines reach the build's stderr, the cell's output stays clean."""
    jupyter_client = pytest.importorskip("jupyter_client")
    store.put(tiny(), run(tiny(), small_mnist, progress=False))
    np.savez(tmp_path / "small.npz", **{name: getattr(small_mnist, name) for name in runner_mod._DATA_FIELDS})
    code = textwrap.dedent(f"""
        import numpy as np, ex3lib
        from ex3lib.data import MNIST
        small = MNIST(**np.load({str(tmp_path / "small.npz")!r}))
        config = ex3lib.RunConfig(**{TINY!r})
        store = ex3lib.ResultsStore({str(store.root)!r})
        ex3lib.run_many([config, config.replace(seed=1)], small, store=store, workers=1, progress=False)
        print("cell done")
    """)
    # The build's environment: the kernel is not under pytest (ipykernel would not redirect its output).
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(EX3_CHAPTER="chapter", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    env.pop("EX3_PROGRESS", None)
    km = jupyter_client.KernelManager(kernel_name="python3")
    with open(tmp_path / "terminal", "w") as terminal:
        km.start_kernel(env=env, stderr=terminal)
    try:
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=120)
        outputs = []
        reply = kc.execute_interactive(code, timeout=300, output_hook=outputs.append)
        kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", reply["content"]
    shown = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    assert shown == "cell done\n"
    terminal = (tmp_path / "terminal").read_text()
    assert "chapter: 2 runs, 1 stored, 1 to train in this process\n" in terminal
    assert f"chapter: 1/1 {runner_mod._describe(tiny(seed=1))}: " in terminal


def test_history_type_is_checked(store):
    failure = runner_mod._store(store, tiny(), {"not": "a history"}, "0" * 64)
    assert str(failure) == "in training: TypeError: the run returned a dict, not an ex3lib.History"
    assert len(store) == 0


@pytest.fixture
def no_kept_workers():
    """No workers kept from an earlier call before the test, and none left after it."""
    runner_mod._warm.close()
    yield runner_mod._warm
    runner_mod._warm.close()


def _gone(pid, timeout=20.0):
    """Whether process ``pid`` has exited (and been reaped, or was not our child) within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            with open(f"/proc/{pid}/stat") as stat:  # a zombie counts as gone
                if stat.read().split(") ")[-1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def test_workers_on_the_default_mnist_are_kept_for_the_next_call(store, mnist, no_kept_workers, monkeypatch):
    # A chapter calls run_many several times; its workers start once (2-3 s
    # each time otherwise) and exit after WARM_SECONDS idle.
    first = [tiny(seed=1), tiny(seed=2)]
    run_many(first, store=store, workers=2, progress=False)
    pids = no_kept_workers.pids()
    assert len(pids) == 2
    monkeypatch.setattr(runner_mod, "WARM_SECONDS", 0.5)
    second = [tiny(seed=3), tiny(seed=4), tiny(seed=5)]
    histories = run_many(second, store=store, workers=2, progress=False)
    assert no_kept_workers.pids() == pids, "the same two processes trained the second call's runs"
    for config, history in zip(second, histories):
        assert_same_run(history, run(config, mnist, progress=False))
        assert config in store
    assert all(_gone(pid) for pid in pids), "they exit once idle for WARM_SECONDS"
    assert no_kept_workers.pids() == []


@pytest.mark.parametrize("noticed", [True, False])
def test_a_kept_worker_that_died_while_idle_is_replaced(store, no_kept_workers, noticed):
    # Whether or not its pool has noticed the death before the next call
    # submits a run to it, that run is trained (on a new worker).
    run_many([tiny(seed=1), tiny(seed=2)], store=store, workers=2, progress=False)
    dead, alive = no_kept_workers.pids()
    os.kill(dead, signal.SIGKILL)
    if noticed:
        assert _gone(dead)
    configs = [tiny(seed=3), tiny(seed=4), tiny(seed=5)]
    run_many(configs, store=store, workers=2, progress=False)
    assert all(config in store for config in configs)
    pids = no_kept_workers.pids()
    assert alive in pids and dead not in pids and len(pids) == 2


def test_kept_workers_ignore_an_interrupt_sent_to_their_caller(store, no_kept_workers, capfd):
    # Ctrl-C, or a Jupyter kernel's interrupt or shutdown, signals the caller's whole
    # process group; the caller stops its workers itself when it has to.
    run_many([tiny(seed=1), tiny(seed=2)], store=store, workers=2, progress=False)
    pids = no_kept_workers.pids()
    for pid in pids:
        os.kill(pid, signal.SIGINT)
    assert not any(_gone(pid, timeout=2.0) for pid in pids)
    run_many([tiny(seed=3), tiny(seed=4)], store=store, workers=2, progress=False)
    assert no_kept_workers.pids() == pids
    assert "KeyboardInterrupt" not in capfd.readouterr().err


def test_workers_for_other_data_are_not_kept(store, small_mnist, no_kept_workers):
    run_many([tiny(seed=1), tiny(seed=2)], small_mnist, store=store, workers=2, progress=False)
    assert no_kept_workers.pids() == []


def test_kept_workers_exit_with_the_process_that_started_them(tmp_path):
    # Killed (here: exiting without any clean-up), the caller cannot tell its
    # kept workers to stop; they notice it is gone and exit.
    script = tmp_path / "caller.py"
    pid_file = tmp_path / "pids"
    script.write_text(textwrap.dedent(f"""
        import os
        from pathlib import Path
        from ex3lib import RunConfig, ResultsStore, runner
        if __name__ == "__main__":
            configs = [RunConfig(**{TINY!r}, seed=s) for s in (1, 2)]
            runner.run_many(configs, store=ResultsStore({str(tmp_path / "results")!r}), workers=2, progress=False)
            Path({str(pid_file)!r}).write_text(" ".join(map(str, runner._warm.pids())))
            os._exit(0)
    """))
    # Output to a file, not a pipe: workers that outlived the caller would hold a pipe open.
    with open(tmp_path / "output", "w") as output:
        done = subprocess.run([sys.executable, str(script)], stdout=output, stderr=subprocess.STDOUT, timeout=300,
                              env={**os.environ, "EX3_PROGRESS": "0"})
    assert done.returncode == 0, (tmp_path / "output").read_text()
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert len(pids) == 2
    assert all(_gone(pid) for pid in pids)


def test_kept_workers_are_not_used_after_the_source_changed(store, no_kept_workers, monkeypatch):
    # They imported the code as it was: an edit since (seen as another size or
    # time of a source file) starts new ones, which import the code as it is.
    run_many([tiny(seed=1), tiny(seed=2)], store=store, workers=2, progress=False)
    before = no_kept_workers.pids()
    stamp = runner_mod._source_stamp()
    assert stamp is not None and len(before) == 2
    monkeypatch.setattr(runner_mod, "_source_stamp", lambda: (*stamp, ("edited.py", 1, 1)))
    run_many([tiny(seed=3), tiny(seed=4)], store=store, workers=2, progress=False)
    after = no_kept_workers.pids()
    assert len(after) == 2 and not set(after) & set(before)
    assert all(_gone(pid) for pid in before)
