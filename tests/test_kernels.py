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


# Short runs through every tile: layer widths with a 32-column chunk and a tail
# (72 = 64 + 8), 16-column chunks and a tail (40), batches of 1, an odd size
# (the error sent back sample by sample) and blocks of 5 and 8.
TILE_RUNS = [dict(optimiser="sgd", batch_size=m) for m in (1, 7, 10, 100)] + [
    dict(optimiser="sgd", momentum=0.9, batch_size=10), dict(optimiser="sgd", momentum=0.9, batch_size=1),
    dict(optimiser="adam", batch_size=3, bias=True), dict(optimiser="rmsprop", batch_size=10, dtype="float32")]


def tile_arrays(runs):
    """Histories and parameters of short runs through every tile, with the tiles this process compiled."""
    data = ex3lib.load_mnist()
    arrays = {}
    for i, hyper in enumerate(runs):
        config = ex3lib.RunConfig(layers=(784, 72, 40, 10), train_size=600, epochs=1, log_every=300,
                                  learning_rate=0.01, **hyper)
        net = ex3lib.MLP(config.layers, bias=config.bias, dtype=np.dtype(config.dtype), seed=0)
        hist = ex3lib.train(net, data, config, progress=False)
        arrays.update({f"{i} {key}": getattr(hist, key) for key in ("loss", "test_loss", "test_accuracy")})
        arrays[f"{i} params"] = net.params
    return arrays


# The other tile width needs another process: the width is fixed when the kernels are imported.
TILE_PROBE = """
import json, sys, numpy as np, ex3lib
sys.path.insert(0, sys.argv[3])
from test_kernels import tile_arrays
from ex3lib.kernels.target import WIDE_TILES
np.savez(sys.argv[1], **tile_arrays(json.loads(sys.argv[2])))
print(json.dumps({"wide": WIDE_TILES, "cache": str(ex3lib.kernels.cache_dir())}))
"""


def test_wide_and_narrow_tiles_give_the_same_bits(tmp_path):
    # The tiles for 32 vector registers and for 16 sum the same terms in the
    # same order: every history and parameter is the same bits with either.
    # This process's width runs here (its kernels are compiled already, or
    # cached), the other width in a process of its own.
    from ex3lib.kernels.target import WIDE_TILES

    here = {"wide": WIDE_TILES, "cache": str(kernels.cache_dir())}, tile_arrays(TILE_RUNS)
    other = "narrow" if WIDE_TILES else "wide"
    out = subprocess.run([sys.executable, "-c", TILE_PROBE, str(tmp_path / "other.npz"), json.dumps(TILE_RUNS),
                          str(Path(__file__).resolve().parent)], env={**os.environ, "EX3_TILES": other},
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with np.load(tmp_path / "other.npz") as saved:
        there = json.loads(out.stdout.strip().splitlines()[-1]), dict(saved)
    (wide, a), (narrow, b) = (here, there) if WIDE_TILES else (there, here)
    assert wide["wide"] and not narrow["wide"]
    assert wide["cache"] != narrow["cache"], "the two widths never share compiled code"
    assert sorted(a) == sorted(b) and len(a) == 4 * len(TILE_RUNS)
    for key in a:
        assert a[key].dtype == b[key].dtype
        assert a[key].tobytes() == b[key].tobytes(), key


def test_the_tile_width_follows_the_cpu_unless_ex3_tiles_names_one(monkeypatch):
    from ex3lib.kernels import target

    real = target.compile_features()
    assert real and all(f[0] in "+-" for f in real)
    if os.environ.get("EX3_TILES", "auto").strip().lower() in ("", "auto"):
        assert target.WIDE_TILES == ("+avx512f" in real)
    monkeypatch.setattr(target, "compile_features", lambda: ["+avx2", "+avx512f", "+fma"])
    for setting, width in (("", "wide"), ("auto", "wide"), ("narrow", "narrow"), (" Wide ", "wide")):
        monkeypatch.setenv("EX3_TILES", setting)
        assert target.tile_width() == width
    monkeypatch.setattr(target, "compile_features", lambda: ["+avx2", "-avx512f", "+fma"])
    monkeypatch.delenv("EX3_TILES")
    assert target.tile_width() == "narrow"
    monkeypatch.setenv("EX3_TILES", "avx512")
    with pytest.raises(ValueError, match=r"EX3_TILES='avx512' is not one of auto, wide, narrow"):
        target.tile_width()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_rule_gives_the_same_bits_on_a_vector_as_on_each_weight(dtype):
    # The kernels apply the rules of kernels/updates.py to Vecs of eight
    # lanes: the same functions, lane by lane, must give the scalar bits,
    # including the flush of subnormal states, NaN, infinities and signed zeros,
    # and a partial last vector must leave what lies past its lanes alone. A
    # float32 vector is widened and computes in float64, as a float32 weight does.
    from numba import njit

    from ex3lib.kernels import updates
    from ex3lib.kernels.simd import vstore
    from ex3lib.kernels.updates import load as vload

    @njit
    def vector(w, s1, s2, g, n, k):
        out_w, out_a, out_b = w.copy(), s1.copy(), s2.copy()
        for lo in range(0, n, 8):
            m = min(n - lo, 8)
            W, A, B, G = vload(w, lo, m), vload(s1, lo, m), vload(s2, lo, m), vload(g, lo, m)
            if k == 0:
                vstore(out_w, lo, m, updates.sgd_rule(W, G, 0.1))
            elif k == 1:
                W, A = updates.momentum_rule(W, A, 0.1 * G, 0.9)
            elif k == 2:
                W, A = updates.nesterov_rule(W, A, 0.1 * G, 0.9)
            elif k == 3:
                W, A = updates.adagrad_rule(W, A, G, 0.1, 1e-8)
            elif k == 4:
                W, A = updates.rmsprop_rule(W, A, G, 0.1, 0.9, 1e-8)
            else:
                W, A, B = updates.adam_rule(W, A, B, G, 0.1, 0.9, 0.999, 1e-8, 3.0)
            if k > 0:
                vstore(out_w, lo, m, W)
                vstore(out_a, lo, m, A)
                vstore(out_b, lo, m, B)
        return out_w, out_a, out_b

    @njit
    def scalar(w, s1, s2, g, n, k):
        out_w, out_a, out_b = w.copy(), s1.copy(), s2.copy()
        for i in range(n):
            if k == 0:
                out_w[i] = updates.sgd_rule(w[i], g[i], 0.1)
            elif k == 1:
                out_w[i], out_a[i] = updates.momentum_rule(w[i], s1[i], 0.1 * g[i], 0.9)
            elif k == 2:
                out_w[i], out_a[i] = updates.nesterov_rule(w[i], s1[i], 0.1 * g[i], 0.9)
            elif k == 3:
                out_w[i], out_a[i] = updates.adagrad_rule(w[i], s1[i], g[i], 0.1, 1e-8)
            elif k == 4:
                out_w[i], out_a[i] = updates.rmsprop_rule(w[i], s1[i], g[i], 0.1, 0.9, 1e-8)
            else:
                out_w[i], out_a[i], out_b[i] = updates.adam_rule(w[i], s1[i], s2[i], g[i], 0.1, 0.9, 0.999, 1e-8, 3.0)
        return out_w, out_a, out_b

    rng = np.random.default_rng(0)
    n = 8 * 40 + 5  # a partial last vector, with 3 more elements after it
    tiny = np.nextafter(0.0, 1.0)
    special = np.array([0.0, -0.0, tiny, -tiny, 1e-310, np.inf, -np.inf, np.nan, 1e300, 2.2250738585072014e-308])
    w = rng.normal(size=n + 3)
    g = rng.normal(size=n + 3) * 10.0 ** rng.integers(-320, 2, n + 3)
    g[:special.size] = special
    s1 = np.abs(rng.normal(size=n + 3)) * 10.0 ** rng.integers(-320, 1, n + 3)  # states near the subnormals
    s2 = np.abs(rng.normal(size=n + 3)) * 10.0 ** rng.integers(-320, 1, n + 3)
    s1[special.size:2 * special.size] = np.abs(special)
    w[2 * special.size:3 * special.size] = special
    with np.errstate(over="ignore"):  # float32: the largest specials become inf, which is one more case
        w, g, s1, s2 = (a.astype(dtype) for a in (w, g, s1, s2))
    flushed = 0
    for k in range(6):
        for state in (s1, -s1) if k in (1, 2) else (s1,):  # a velocity has either sign
            v_out, s_out = vector(w, state, s2, g, n, k), scalar(w, state, s2, g, n, k)
            for a, b in zip(v_out, s_out):
                assert a.dtype == b.dtype == dtype and a.tobytes() == b.tobytes(), f"rule {k}"
            flushed += int(np.sum((state[:n] != 0) & (s_out[1][:n] == 0)))
    # A float32 state is never below float64's smallest normal, where flush acts.
    assert flushed > 0 or dtype == np.float32, "some subnormal states were flushed, lane by lane as one by one"


def test_inv_sqrt_is_one_over_sqrt_to_4e_14_and_exact_outside_its_range():
    # AdaGrad and RMSProp divide by sqrt(G + eps) through inv_sqrt: a float32
    # first guess and one Newton step in float64. Within its range it must be
    # 1/sqrt to 4e-14 relative (one step squares the guess's 1.5e-7); outside
    # it, and for 0, inf and NaN, the exact IEEE 1/sqrt, lane by lane.
    from numba import njit

    from ex3lib.kernels.simd import vload, vstore
    from ex3lib.kernels.updates import GUESS_HIGH, GUESS_LOW, inv_sqrt

    @njit(error_model="numpy")
    def scalar(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = inv_sqrt(x[i])
        return out

    @njit(error_model="numpy")
    def vector(x):
        out = np.empty_like(x)
        for i in range(0, x.size, 8):
            vstore(out, i, x.size - i, inv_sqrt(vload(x, i, x.size - i)))
        return out

    rng = np.random.default_rng(1)
    inside = np.exp(rng.uniform(np.log(GUESS_LOW), np.log(GUESS_HIGH), 400_000))
    inside[:4] = [GUESS_LOW, GUESS_HIGH, 1.0, 4.0]
    exact = 1.0 / np.sqrt(inside)
    for f in (scalar, vector):
        got = f(inside)
        assert np.max(np.abs(got - exact) / exact) <= 4e-14
    assert np.max(np.abs(scalar(inside) - exact) / exact) > 1e-15, "the guess is refined once, not exact"

    outside = np.array([0.0, 5e-324, 1e-310, 1e-300, GUESS_LOW / 2, GUESS_HIGH * 2, 1e300, np.inf, np.nan, -1.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        want = 1.0 / np.sqrt(outside)
    # Alone, and mixed into vectors of in-range lanes: each lane is its own.
    mixed = inside[:80].copy()
    mixed[::8] = outside[:10]
    with np.errstate(divide="ignore", invalid="ignore"):
        want_mixed = np.where(np.isin(np.arange(80) % 8, [0]), 1.0 / np.sqrt(mixed), scalar(mixed))
    for f in (scalar, vector):
        assert np.array_equal(f(outside), want, equal_nan=True)
        assert np.array_equal(f(mixed).view(np.uint64), want_mixed.view(np.uint64))
    assert np.array_equal(vector(inside[:1000]).view(np.uint64), scalar(inside[:1000]).view(np.uint64))



def _deferred_rows_case(kind, seed=0, n_in=40, n_out=37, most_behind=12):
    """An optimiser of ``kind`` with random float64 weights and state, and rows behind by 0 to 12 steps.

    With ``most_behind`` over 12, about half the rows are behind by 13 to ``most_behind`` steps instead.
    """
    from ex3lib.optimisers import make_optimiser

    rng = np.random.default_rng(seed)
    name, hyper = {kernels.MOMENTUM: ("sgd", {"momentum": 0.9}),
                   kernels.NESTEROV: ("sgd", {"momentum": 0.5, "nesterov": True}),
                   kernels.RMSPROP: ("rmsprop", {})}[kind]
    opt = make_optimiser(name, **hyper)
    params = rng.normal(size=n_in * n_out + 5)
    state = opt.init(params)
    for a in (state.velocity, state.sum_sq):
        a[:] = rng.normal(size=a.size) * 10.0 ** rng.integers(-310, 0, a.size)
    state.sum_sq[:] = np.abs(state.sum_sq)
    step = most_behind + 8
    behind = rng.integers(0, 13, n_in)
    if most_behind > 12:
        far = rng.random(n_in) < 0.5
        behind[far] = rng.integers(13, most_behind + 1, far.sum())
    updated_at = step - behind
    rows = np.sort(rng.choice(n_in, 25, replace=False))
    return opt, state, params, updated_at, rows, step, rng


def _flushed(x):
    """``x`` with the non-zero values below the smallest normal float64 set to +0 (the kernels' ``flush``)."""
    return np.where((np.abs(x) < kernels.updates.SMALLEST_NORMAL) & (x != 0), 0.0, x)


#: Rows behind by up to 12 steps, and by up to 128 (where α^k takes more
#: squarings, and more of the small accumulators decay below the smallest
#: normal, to 0).
BEHIND = [12, 128]


@pytest.mark.parametrize("most_behind", BEHIND)
def test_an_online_rmsprop_step_that_catches_its_rows_up_gives_the_bits_of_catching_up_first(most_behind):
    # On-line RMSProp leaves the accumulators of rows whose input was 0 for
    # its step to decay in its own pass (rmsprop_rows_online): the same bits
    # as catch_up_rows followed by step_rows, for rows behind by 0 to 12
    # steps or up to 128, with subnormal accumulators flushed.
    opt, state, params, updated_at, rows, step, rng = _deferred_rows_case(kernels.RMSPROP, most_behind=most_behind)
    n_out = 37
    error = rng.normal(size=(1, n_out))
    inputs = rng.normal(size=rows.size)
    results = []
    for in_step in (False, True):
        p, sum_sq, at = params.copy(), state.sum_sq.copy(), updated_at.copy()
        arrays = opt.arrays(state._replace(sum_sq=sum_sq), 0.01)
        how = kernels.Stepping(kernels.RULE, arrays, p, 0.25, (1.0, 1.0), step + 1)
        if in_step:
            kernels.updates.rmsprop_rows_online(how, 5, n_out, rows, rows.size, error[0], inputs, at)
        else:
            kernels.updates.catch_up_rows(arrays, p, 5, n_out, rows, rows.size, at, step)
            kernels.step_rows(how, 5, n_out, rows, rows.size, error, inputs, True)
        results.append((p, sum_sq))
    behind = step - updated_at[rows]
    assert (behind == 0).any() and (behind > 1).any()
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()
    assert not np.array_equal(results[0][1], state.sum_sq) and not np.array_equal(results[0][0], params)


@pytest.mark.parametrize("most_behind", BEHIND)
@pytest.mark.parametrize("kind", [kernels.MOMENTUM, kernels.NESTEROV])
def test_momentum_rows_catch_up_with_one_rounding_whoever_compiles_the_kernel(kind, most_behind):
    # catch_up_rows moves a weight by -v * shift with one fused multiply-add.
    # Written as w - v * shift it was fused only when Numba compiled it for a
    # fastmath caller (whose flags it inherits), and rounded twice when called
    # from Python first: the bits depended on who compiled it.
    from fractions import Fraction

    from numba import njit

    power = njit(lambda a, k: a**k)  # the kernel's α^k, as Numba computes it
    n_out = 301
    opt, state, params, updated_at, rows, step, _ = _deferred_rows_case(kind, seed=1, n_out=n_out,
                                                                        most_behind=most_behind)
    behind = step - updated_at[rows]
    if most_behind > 12:
        assert (behind > 64).any() and ((0 < behind) & (behind <= 12)).any()
    w0, v0 = params.copy(), state.velocity.copy()
    kernels.updates.catch_up_rows(opt.arrays(state, 0.01), params, 5, n_out, rows, rows.size, updated_at, step)
    a = opt.momentum
    twice = 0
    for j, k in zip(rows, behind):
        span = slice(5 + j * n_out, 5 + (j + 1) * n_out)
        if k == 0:
            assert params[span].tobytes() == w0[span].tobytes()
            assert state.velocity[span].tobytes() == v0[span].tobytes()
            continue
        shift = a * (1.0 - power(a, k)) / (1.0 - a)
        if kind == kernels.NESTEROV:
            shift *= a
        once = np.array([float(Fraction(w) - Fraction(v) * Fraction(shift)) for w, v in zip(w0[span], v0[span])])
        assert params[span].tobytes() == once.tobytes(), f"row {j}, {k} steps behind"
        assert state.velocity[span].tobytes() == _flushed(v0[span] * power(a, k)).tobytes(), f"row {j}, {k} behind"
        twice += int(np.sum(once != w0[span] - v0[span] * shift))
    if most_behind == BEHIND[0]:  # (with half the rows far behind, Nesterov's happen to round alike)
        assert twice > 0, "two roundings give other bits somewhere, so the test can tell"
    assert (updated_at[rows] == step).all()


@pytest.mark.parametrize("most_behind", BEHIND)
def test_rmsprop_rows_catch_up_by_a_power_of_their_decay(most_behind):
    # RMSProp's accumulator of a row k steps behind decays by β₂^k, flushed
    # to 0 below the smallest normal; its weights do not move.
    from numba import njit

    power = njit(lambda a, k: a**k)
    opt, state, params, updated_at, rows, step, _ = _deferred_rows_case(kernels.RMSPROP, seed=2,
                                                                        most_behind=most_behind)
    n_out = 37
    behind = step - updated_at[rows]
    w0, g0 = params.copy(), state.sum_sq.copy()
    kernels.updates.catch_up_rows(opt.arrays(state, 0.01), params, 5, n_out, rows, rows.size, updated_at, step)
    assert params.tobytes() == w0.tobytes()
    for j, k in zip(rows, behind):
        span = slice(5 + j * n_out, 5 + (j + 1) * n_out)
        expected = g0[span] if k == 0 else _flushed(g0[span] * power(opt.b2, k))
        assert state.sum_sq[span].tobytes() == expected.tobytes(), f"row {j}, {k} steps behind"
    assert (state.sum_sq != g0).any() and (state.sum_sq == 0).any() and (g0 != 0).all()
