"""The NumPy baseline of benchmarks/bench_epoch.py (ex3lib.reference) must compute what ex3lib computes."""

import importlib.util
from pathlib import Path

import ex3lib

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_epoch.py"


def _load_benchmark():
    # benchmarks/ is a folder of scripts, not a package, so load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_epoch", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_numpy_reference_matches_ex3lib():
    """Loss, gradients (m = 1, 10, 100) and 20 SGD steps of the reference agree with ex3lib to 1e-10."""
    bench = _load_benchmark()
    data = ex3lib.load_mnist()
    worst = bench.check_against_ex3lib(data.x_train[:1000], data.y_train[:1000], train_samples=200)
    assert all(err <= 1e-10 for err in worst.values()), worst
