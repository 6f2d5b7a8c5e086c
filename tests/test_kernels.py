"""The kernels package: its on-disk cache follows every kernel file, and each rule rounds as written."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ex3lib
from ex3lib import kernels

PACKAGE = Path(ex3lib.__file__).resolve().parent

# One process: the loss and gradient of a small network (compiled or loaded
# from the cache), and whether the kernel came from the cache.
PROBE = """
import json, numpy as np, ex3lib
rng = np.random.default_rng(0)
x = np.where(rng.random((12, 784)) < 0.2, rng.random((12, 784)), 0.0)
loss, grads = ex3lib.MLP((784, 16, 10), seed=0).loss_and_grad(x, np.arange(12) % 10)
stats = ex3lib.kernels.loss_and_grad.stats
print(json.dumps({"loss": loss, "grad": [float(g.sum()) for g in grads], "hits": sum(stats.cache_hits.values()),
                  "cache": str(ex3lib.kernels.cache_dir())}))
"""


def _probe(src, cache):
    env = {**os.environ, "PYTHONPATH": str(src), "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=src, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editing_a_helper_in_one_kernel_file_recompiles_the_kernels_that_use_it(tmp_path):
    # Numba's own cache checks only the file that defines a kernel: after an
    # edit of simd.py, loss_and_grad (evaluation.py, which inlines simd.py's
    # helpers through backward.py and tiles.py) would be loaded stale.  The
    # cache folder named by the fingerprint of every kernel file prevents that.
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "ex3lib", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    first = _probe(src, cache)
    again = _probe(src, cache)
    assert again["hits"] > 0 and again["cache"] == first["cache"], "an unchanged package reuses its cache"
    assert again["grad"] == first["grad"] and again["loss"] == first["loss"]

    # An edit of a helper the gradient tiles use: vadd now subtracts.
    simd = src / "ex3lib" / "kernels" / "simd.py"
    text = simd.read_text()
    assert text.count("return builder.fadd(args[0], args[1])") == 1
    simd.write_text(text.replace("return builder.fadd(args[0], args[1])", "return builder.fsub(args[0], args[1])"))
    edited = _probe(src, cache)
    assert edited["cache"] != first["cache"], "the edit moves the kernels to a new cache folder"
    assert edited["hits"] == 0, "every kernel is compiled afresh"
    assert edited["loss"] == first["loss"], "the forward pass does not use vadd"
    assert edited["grad"] != first["grad"], "loss_and_grad runs the edited helper, not stale machine code"


def test_the_cache_folder_is_named_by_the_fingerprint_of_the_kernel_files():
    folder = kernels.cache_dir()
    assert folder is not None and folder.is_dir()
    assert folder.name == f"ex3-kernels-{kernels.kernel_fingerprint()[:20]}"
    assert len(kernels.kernel_fingerprint()) == 64


def test_kernel_modules_are_in_the_results_fingerprint():
    # A kernel edit must also invalidate the stored results of training runs.
    from ex3lib.fingerprint import run_sources
    files = {p.name for p in (PACKAGE / "kernels").glob("*.py")}
    assert {f"kernels/{name}" for name in files} <= set(run_sources())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fma_rounds_once_in_the_widest_type(dtype):
    from numba import njit

    from ex3lib.kernels.simd import fma

    @njit
    def f(a, b, c):
        return fma(a, b, c)

    a, b, c = dtype(1 + 2.0**-30), dtype(1 - 2.0**-30), dtype(-1.0)
    # (1 + e)(1 - e) - 1 = -e², exact with one rounding, 0 with two (in float64).
    assert f(1 + 2.0**-30, 1 - 2.0**-30, -1.0) == -(2.0**-60)
    assert isinstance(f(a, b, c), (float, np.floating))
    assert f(dtype(2), dtype(3), dtype(1)) == 7


def test_rsqrt_is_one_over_sqrt_to_a_few_ulp():
    # AdaGrad's and RMSProp's step divides by sqrt(G + eps); the kernels use
    # this division-free form, which must agree with 1/sqrt to rounding.
    from numba import njit

    from ex3lib.kernels.simd import rsqrt

    @njit
    def many(x, out):
        for i in range(x.shape[0]):
            out[i] = rsqrt(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([10.0 ** rng.uniform(-323, 308, 200_000),                 # subnormal to huge
                        rng.uniform(0.5, 2.0, 10_000), 2.0 ** np.arange(-1074, 1024, 1.0),
                        [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]])
    out = np.empty_like(x)
    many(x, out)
    want = 1.0 / np.sqrt(x)
    rel = np.abs(out - want) / want
    assert rel.max() <= 4 * np.finfo(float).eps, (rel.max(), x[rel.argmax()])
    special = np.array([0.0, np.inf])
    many(special, out[:2])
    assert out[0] == np.inf and out[1] == 0.0


def test_a_new_cache_folder_prunes_all_but_the_newest_old_ones(tmp_path, monkeypatch):
    import numba

    for i in range(5):
        old = tmp_path / f"ex3-kernels-old{i}"
        old.mkdir()
        os.utime(old, (1_000_000 + i, 1_000_000 + i))
    (tmp_path / "someone-elses").mkdir()
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path))
    folder = kernels.cache_dir()
    assert folder.parent == tmp_path
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([folder.name, "ex3-kernels-old2", "ex3-kernels-old3", "ex3-kernels-old4",
                           "someone-elses"])
    assert kernels.cache_dir() == folder and len(list(tmp_path.iterdir())) == 5, "an existing folder prunes nothing"
