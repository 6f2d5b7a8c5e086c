"""Seconds per training epoch of ex3lib against a plain-NumPy implementation, and ex3lib's start-up cost.

Run from the project root::

    python benchmarks/bench_epoch.py [--repeat R] [--json PATH] [--quick] [--optimisers-only]

What is measured
----------------
One epoch is the 60,000 MNIST training images in their stored order, float64,
plain SGD with learning rate 0.01, the report's 784-300-100-100-10 network
without biases, starting from ``ex3lib.MLP(seed=0)``'s weights, at batch
sizes m = 1, 10 and 100.

* ex3lib: ``ex3lib.train(..., epochs=1, log_every=60000, progress=False)`` on a
  fresh network.  ``History.time[0]`` is taken after the initial evaluation and
  ``History.time[1]`` after the epoch plus one test-set evaluation, so the epoch
  time is ``time[1] - time[0]`` minus the time of that test evaluation, measured
  separately right afterwards (the fastest of three, which if anything
  overstates ex3lib's epoch time).
* NumPy: :func:`ex3lib.reference.sgd_epoch`, the straightforward vectorised
  implementation (the library's readable reference of the network), on the same data and weights.  At m = 1 it runs only on the
  first ``--numpy-samples`` images (6,000 by default) and the time is scaled to
  60,000; the output marks every extrapolated number.
* Every optimiser: one epoch of SGD, momentum and Nesterov (α = 0.9),
  AdaGrad, RMSProp and Adam at learning rate 0.001 and each m, as the ratio of
  its time to plain SGD's at the same m in the same run (the targets of
  ``OPTIMISER_TARGETS``). At m = 1 they train on the first 20,000 images
  (Adam's on-line epoch alone takes about 20 s), scaled to an epoch.
* Start-up: a fresh interpreter that imports ex3lib and trains on 64 synthetic
  samples, once with ``NUMBA_CACHE_DIR`` pointing at an empty folder (first
  compile) and once more with the same folder (a second process, warm cache).

Every measurement is repeated ``--repeat`` times and the minimum kept;
ex3lib and NumPy runs alternate within each repeat so that their ratio is
taken under the same machine load.  BLAS and OpenMP pools are pinned to one
thread (ex3lib's kernels are single-threaded by design), so both sides use
one core.  The numerical agreement of the NumPy reference with ex3lib is
checked before anything is timed.

NumPy gets the BLAS kernels OpenBLAS picks for this CPU: ``OPENBLAS_CORETYPE``
and ``OPENBLAS_L2_SIZE``, which some machines set to work around old OpenBLAS
builds and which force older, slower kernels, are removed from this process's
environment before NumPy loads (``--keep-blas-env`` keeps them).  The report
names the kernel OpenBLAS actually ran (threadpoolctl), so a ratio is never
taken against a handicapped baseline without saying so.

The exit status is 0 whether or not the targets are met; it is non-zero
only when something fails to run.
"""

import os
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Variables that force OpenBLAS onto a given (older) kernel; see the module docstring.
FORCED_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REMOVED_BLAS_ENV = {}
if __name__ == "__main__":
    # Set before NumPy is imported: BLAS reads these once, when it loads.  (Only
    # when run as the benchmark: a test that imports this file keeps its environment.)
    for _var in THREAD_VARS:
        os.environ[_var] = "1"
    if "--keep-blas-env" not in sys.argv[1:]:
        REMOVED_BLAS_ENV = {v: os.environ.pop(v) for v in FORCED_BLAS_VARS if v in os.environ}

import argparse
import json
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_info

import ex3lib
from ex3lib import reference

EPOCH = 60_000
LEARNING_RATE = 0.01
BATCH_SIZES = (1, 10, 100)
#: m -> (least NumPy/ex3lib ratio, most ex3lib seconds per epoch) that count as a pass.
TARGETS = {1: (12.0, 2.5), 10: (3.0, 1.2), 100: (1.2, 0.8)}
#: The optimiser table: every update rule, timed against plain SGD at the same m in the same run.
OPTIMISERS = {"SGD": {}, "momentum": {"momentum": 0.9}, "Nesterov": {"momentum": 0.9, "nesterov": True},
              "AdaGrad": {"optimiser": "adagrad"}, "RMSProp": {"optimiser": "rmsprop"},
              "Adam": {"optimiser": "adam"}}
OPTIMISER_LEARNING_RATE = 0.001
#: name -> {m: the most seconds per epoch it may take, as a multiple of SGD's}.
OPTIMISER_TARGETS = {"momentum": {1: 1.4, 10: 1.4, 100: 1.4}, "Nesterov": {1: 1.4, 10: 1.4, 100: 1.4},
                     "AdaGrad": {1: 2.0, 10: 2.0, 100: 2.0}, "RMSProp": {1: 2.0, 10: 2.0, 100: 2.0},
                     "Adam": {10: 2.5, 100: 2.5}}
#: Images the optimiser table trains on at m = 1 (scaled to an epoch): Adam's on-line epoch takes ~20 s.
OPTIMISER_SAMPLES_M1 = 20_000
#: Tolerance of :func:`check_against_ex3lib`: max-norm relative error per array.
CHECK_RTOL = 1e-10
#: A train() call that is slower than this in the warm-cache process must have compiled.
WARM_COMPILE_SUSPECT_S = 2.0

STARTUP_SNIPPET = """
import json, time
t0 = time.perf_counter()
import ex3lib
t1 = time.perf_counter()
import numpy as np
rng = np.random.default_rng(0)
x = np.where(rng.random((64, 784)) < 0.2, rng.random((64, 784)), 0.0)
y = rng.integers(0, 10, 64)
class Data:
    x_train = x_test = x
    y_train = y_test = y
t2 = time.perf_counter()
ex3lib.train(ex3lib.MLP(seed=0), Data, learning_rate=0.01, batch_size=8, epochs=1,
             log_every=64, progress=False)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "train_s": t3 - t2}))
"""


def blas_info():
    """What NumPy's BLAS is and runs: library, version, kernel ("architecture") and threads."""
    return [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for d in threadpool_info() if d.get("user_api") == "blas"]


def describe_blas(info):
    found = "; ".join(f"{d['internal_api']} {d['version']}, {d['architecture']} kernels, "
                      f"{d['num_threads']} thread(s)" for d in info) or "no BLAS found by threadpoolctl"
    if REMOVED_BLAS_ENV:
        removed = ", ".join(f"{k}={v}" for k, v in REMOVED_BLAS_ENV.items())
        return f"NumPy's BLAS: {found} (removed for this run: {removed}; --keep-blas-env keeps them)."
    forced = {v: os.environ[v] for v in FORCED_BLAS_VARS if v in os.environ}
    if forced:
        kept = ", ".join(f"{k}={v}" for k, v in forced.items())
        return (f"NumPy's BLAS: {found}. WARNING: {kept} kept (--keep-blas-env): NumPy may run slower "
                "kernels than this CPU supports, which flatters the ratios.")
    return f"NumPy's BLAS: {found}."


def log(msg):
    """Progress goes to stderr so that stdout holds only the report."""
    print(msg, file=sys.stderr, flush=True)


def kernels_sha256():
    """The fingerprint of the kernel files (:func:`ex3lib.kernels.kernel_fingerprint`)."""
    return ex3lib.kernels.kernel_fingerprint()


def time_ex3lib(data, test_sparse, m, n, learning_rate=LEARNING_RATE, **hyper):
    """One ex3lib epoch over the first ``n`` images at batch size ``m``; seconds scaled to 60,000 images.

    ``hyper``: the optimiser and its hyper-parameters (default plain SGD).
    """
    net = ex3lib.MLP(seed=0)
    t = time.perf_counter()
    hist = ex3lib.train(net, data, learning_rate=learning_rate, batch_size=m, epochs=1,
                        log_every=n, train_size=None if n >= EPOCH else n, progress=False, **hyper)
    call_s = time.perf_counter() - t
    if hist.diverged or len(hist.time) != 2:
        raise RuntimeError(f"ex3lib run at m={m} did not log exactly one epoch: {hist.reason or hist.time}")
    eval_s = min(_timed(net.evaluate_sparse, test_sparse) for _ in range(3))
    window_s = float(hist.time[1] - hist.time[0])
    return {"epoch_s": (window_s - eval_s) * EPOCH / n, "samples": n, "window_s": window_s,
            "test_eval_s": eval_s, "train_call_s": call_s, "loss": float(hist.loss[1])}


def time_numpy(x, y, weights0, m, n):
    """One NumPy-reference epoch over the first ``n`` images at batch size ``m``; seconds scaled to 60,000."""
    weights = [w.copy() for w in weights0]
    t = time.perf_counter()
    loss = reference.sgd_epoch(weights, x, y, LEARNING_RATE, m, n_samples=n)
    run_s = time.perf_counter() - t
    return {"epoch_s": run_s * EPOCH / n, "samples": n, "run_s": run_s, "loss": loss}


def _timed(fn, *args):
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def time_startup(cache_dir=None):
    """Wall time of a fresh interpreter that imports ex3lib and trains briefly, plus its own in-process split.

    ``cache_dir`` becomes ``NUMBA_CACHE_DIR``; None keeps this process's environment.
    """
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(cache_dir)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", STARTUP_SNIPPET], env=env, check=True,
                         capture_output=True, text=True)
    wall_s = time.perf_counter() - t
    inner = json.loads(out.stdout.strip().splitlines()[-1])
    return {"process_s": wall_s, "import_s": inner["import_s"], "train_s": inner["train_s"],
            "import_and_train_s": inner["import_s"] + inner["train_s"]}


def best(runs):
    """Per key, the minimum over the repeats (the least disturbed run)."""
    return {key: min(r[key] for r in runs) for key in runs[0]} if runs else None


def verdict(ratio, ex_s, target):
    want_ratio, want_s = target
    failed = [name for name, ok in (("ratio", ratio >= want_ratio), ("time", ex_s <= want_s)) if not ok]
    return "pass" if not failed else f"FAIL ({', '.join(failed)})"


def initial_weights(seed=0):
    """The weights of ``ex3lib.MLP(seed=seed)`` (Glorot uniform), as independent C-contiguous arrays."""
    return [np.array(w, dtype=np.float64, order="C") for w in ex3lib.MLP(seed=seed).weights]


def _rel_err(a, b):
    """Max-norm relative error of ``a`` against the reference ``b``.

    Element-wise relative error would be meaningless for gradients that are
    (nearly) 0, where the two implementations' different summation orders
    leave differences of a few ulps of the larger terms.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


def check_against_ex3lib(x, y, *, seed=0, batch_sizes=(1, 10, 100), train_samples=200,
                         learning_rate=0.01, rtol=CHECK_RTOL):
    """Compare this reference with ex3lib on the data ``(x, y)``; raise AssertionError on a mismatch.

    Checks (1) the loss and every weight gradient of :func:`ex3lib.reference.loss_and_grad`
    against :meth:`ex3lib.MLP.loss_and_grad` on the first batch of each size in
    ``batch_sizes``, at the initial weights and again after the SGD run below,
    and (2) the weights after :func:`sgd_epoch` over the first
    ``train_samples`` rows with batch size 10
    (:func:`ex3lib.reference.sgd_epoch`) against :func:`ex3lib.train` on
    the same rows (the change of the weights, which is what the update rule
    and the batch order determine).  Every
    comparison must agree to ``rtol`` in max-norm relative error.

    Returns
    -------
    dict
        The largest relative error of each kind: ``loss``, ``grad``, ``weights``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    worst = {"loss": 0.0, "grad": 0.0, "weights": 0.0}

    def compare(kind, what, mine, theirs):
        err = _rel_err(mine, theirs)
        worst[kind] = max(worst[kind], err)
        if not err <= rtol:
            raise AssertionError(f"NumPy reference disagrees with ex3lib: {what} has relative error "
                                 f"{err:.3g} > {rtol:g}")

    def compare_grads(net, weights, label):
        for m in batch_sizes:
            xb, yb = x[:m], y[:m]
            loss, grads, _ = reference.loss_and_grad(weights, xb, yb)
            ex_loss, ex_grads = net.loss_and_grad(xb, yb)
            compare("loss", f"loss ({label}, batch of {m})", loss, ex_loss)
            for l, (g, ex_g) in enumerate(zip(grads, ex_grads)):
                compare("grad", f"gradient of layer {l + 1} ({label}, batch of {m})", g, ex_g)

    net = ex3lib.MLP(seed=seed)
    weights = initial_weights(seed)
    compare_grads(net, weights, "initial weights")

    k = min(train_samples, x.shape[0])
    split = max(k // 2, 1)
    data = _Split(x[:k], y[:k], x[:split], y[:split])
    ex3lib.train(net, data, learning_rate=learning_rate, batch_size=10, epochs=1, log_every=k,
                 progress=False)
    reference.sgd_epoch(weights, x, y, learning_rate, 10, n_samples=k)
    # The updates are tiny next to the weights, so compare what SGD changed.
    for l, (w, ex_w, w0) in enumerate(zip(weights, net.weights, initial_weights(seed))):
        compare("weights", f"change of layer {l + 1} weights over {k} samples of SGD", w - w0, ex_w - w0)
    compare_grads(net, weights, f"after {k} samples of SGD")
    return worst


class _Split:
    """The minimal dataset object :func:`ex3lib.train` accepts."""

    def __init__(self, x_train, y_train, x_test, y_test):
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--repeat", type=int, default=3, help="repeats of every measurement; the minimum is kept")
    p.add_argument("--numpy-samples", type=int, default=None, metavar="N",
                   help="images the NumPy reference trains on at every batch size, scaled to a "
                        "60,000-image epoch (default: 6,000 at m=1, all 60,000 otherwise)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=list(BATCH_SIZES), metavar="M")
    p.add_argument("--no-startup", action="store_true", help="skip the compile and start-up measurements")
    p.add_argument("--no-optimisers", action="store_true",
                   help="skip the table of every optimiser's epoch against plain SGD's")
    p.add_argument("--optimisers-only", action="store_true",
                   help="only the optimiser table (no NumPy comparison, no start-up)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repeat, 6,000 images for ex3lib and at most 6,000 (600 at m=1) for "
                        "NumPy, and a warm start-up only (no first compile)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers to this JSON file")
    p.add_argument("--keep-blas-env", action="store_true",
                   help=f"keep {' and '.join(FORCED_BLAS_VARS)} (default: removed, so that NumPy runs the "
                        "kernels OpenBLAS picks for this CPU)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.numpy_samples is not None and not 1 <= args.numpy_samples <= EPOCH:
        p.error(f"--numpy-samples must be from 1 to {EPOCH}")
    if any(m < 1 or m > EPOCH for m in args.batch_sizes):
        p.error(f"--batch-sizes must be from 1 to {EPOCH}")
    if args.quick:
        args.repeat = 1
    if args.optimisers_only and args.no_optimisers:
        p.error("--optimisers-only and --no-optimisers exclude each other")
    return args


def plan_samples(args):
    """Images each side trains on, per batch size."""
    plan = {}
    for m in args.batch_sizes:
        if args.numpy_samples is not None:
            n_np = args.numpy_samples
        elif args.quick:
            n_np = 600 if m == 1 else 6_000
        else:
            n_np = 6_000 if m == 1 else EPOCH
        n_opt = 6_000 if args.quick else (OPTIMISER_SAMPLES_M1 if m == 1 else EPOCH)
        plan[m] = {"ex3lib": 6_000 if args.quick else EPOCH, "numpy": max(n_np, m), "optimisers": n_opt}
    return plan


def main(argv=None):
    t_start = time.perf_counter()
    args = parse_args(argv)
    plan = plan_samples(args)
    sha_before = kernels_sha256()

    log("loading MNIST and checking the NumPy reference against ex3lib ...")
    data = ex3lib.load_mnist()
    x, y = data.x_train, data.y_train
    check = check_against_ex3lib(x[:1000], y[:1000])
    log(f"  agreement (max-norm relative error): {check}")

    log("warming up (kernel cache load or compile, CSR conversion of the data) ...")
    weights0 = initial_weights(0)
    test_sparse = ex3lib.MLP(seed=0).sparse(data.x_test, data.y_test)
    for m in args.batch_sizes:
        if not args.optimisers_only:
            time_ex3lib(data, test_sparse, m, max(1_000, m))
            time_numpy(x, y, weights0, m, max(200, m))
        if not args.no_optimisers:
            for name, hyper in OPTIMISERS.items():
                time_ex3lib(data, test_sparse, m, max(1_000, m), OPTIMISER_LEARNING_RATE, **hyper)

    runs = {m: {"ex3lib": [], "numpy": []} for m in args.batch_sizes}
    opt_runs = {m: {name: [] for name in OPTIMISERS} for m in args.batch_sizes}
    startup = {"cold": [], "warm": []}
    for r in range(args.repeat):
        for m in args.batch_sizes:
            if not args.optimisers_only:
                # Alternate which side goes first so neither always inherits the other's cache state.
                order = ("ex3lib", "numpy") if r % 2 == 0 else ("numpy", "ex3lib")
                for side in order:
                    if side == "ex3lib":
                        res = time_ex3lib(data, test_sparse, m, plan[m]["ex3lib"])
                    else:
                        res = time_numpy(x, y, weights0, m, plan[m]["numpy"])
                    runs[m][side].append(res)
                log(f"[repeat {r + 1}/{args.repeat}] m={m}: ex3lib {runs[m]['ex3lib'][-1]['epoch_s']:.3f} "
                    f"s/epoch, NumPy {runs[m]['numpy'][-1]['epoch_s']:.3f} s/epoch")
            if not args.no_optimisers:
                names = list(OPTIMISERS) if r % 2 == 0 else list(OPTIMISERS)[::-1]
                for name in names:
                    opt_runs[m][name].append(time_ex3lib(data, test_sparse, m, plan[m]["optimisers"],
                                                         OPTIMISER_LEARNING_RATE, **OPTIMISERS[name]))
                log(f"[repeat {r + 1}/{args.repeat}] m={m}: "
                    + ", ".join(f"{name} {opt_runs[m][name][-1]['epoch_s']:.3f}" for name in OPTIMISERS)
                    + " s/epoch")
        if args.no_startup or args.optimisers_only:
            continue
        if args.quick:
            startup["warm"].append(time_startup())
        else:
            with tempfile.TemporaryDirectory(prefix="ex3-numba-cache-") as cache:
                startup["cold"].append(time_startup(cache))
                startup["warm"].append(time_startup(cache))
        log(f"[repeat {r + 1}/{args.repeat}] start-up: "
            + ", ".join(f"{k} {v[-1]['import_and_train_s']:.2f} s" for k, v in startup.items() if v))

    sha_after = kernels_sha256()
    results = {}
    for m in args.batch_sizes:
        if args.optimisers_only:
            continue
        ex, nb = best(runs[m]["ex3lib"]), best(runs[m]["numpy"])
        results[m] = {"ex3lib": ex, "numpy": nb, "ratio": nb["epoch_s"] / ex["epoch_s"],
                      "target": TARGETS.get(m), "runs": runs[m]}
    optimisers = {}
    for m in args.batch_sizes:
        if args.no_optimisers:
            continue
        bests = {name: best(opt_runs[m][name]) for name in OPTIMISERS}
        sgd_s = bests["SGD"]["epoch_s"]
        optimisers[m] = {name: {"best": b, "ratio_to_sgd": b["epoch_s"] / sgd_s,
                                "target": OPTIMISER_TARGETS.get(name, {}).get(m), "runs": opt_runs[m][name]}
                         for name, b in bests.items()}
    cold, warm = best(startup["cold"]), best(startup["warm"])
    total_s = time.perf_counter() - t_start

    blas = blas_info()
    print(render(args, plan, results, optimisers, cold, warm, check, sha_before != sha_after, total_s, blas))
    if args.json:
        payload = {
            "settings": {"epoch_samples": EPOCH, "learning_rate": LEARNING_RATE, "dtype": "float64",
                         "optimiser": "sgd", "order": "sequential", "repeat": args.repeat,
                         "quick": args.quick, "samples": {str(m): plan[m] for m in plan},
                         "thread_env": {v: os.environ[v] for v in THREAD_VARS},
                         "removed_blas_env": REMOVED_BLAS_ENV},
            "results": {str(m): {**v, "target": None if v["target"] is None else
                                 {"ratio": v["target"][0], "ex3lib_s_per_epoch": v["target"][1]}}
                        for m, v in results.items()},
            "optimisers": {"learning_rate": OPTIMISER_LEARNING_RATE, "hyper_parameters": OPTIMISERS,
                           "results": {str(m): v for m, v in optimisers.items()}},
            "startup": {"first_compile": cold, "warm_cache": warm, "runs": startup},
            "check_max_rel_err": check,
            "environment": {"python": platform.python_version(), "numpy": np.__version__,
                            "numba": numba.__version__, "ex3lib": ex3lib.__version__,
                            "machine": platform.machine(), "cpus": os.cpu_count(),
                            "blas": blas,
                            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                            "kernels_sha256_before": sha_before, "kernels_sha256_after": sha_after},
            "total_s": total_s,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def render_optimisers(plan, optimisers):
    """The optimiser table: seconds per epoch and the ratio to plain SGD at the same m, with the targets."""
    names = list(OPTIMISERS)
    lines = [f"Every optimiser, one epoch at learning rate {OPTIMISER_LEARNING_RATE:g} (s/epoch, and the ratio "
             "to plain SGD at the same m in this run; target: the most the ratio may be):", "",
             "| m | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    failed = []
    for m, row in optimisers.items():
        cells = []
        for name in names:
            res = row[name]
            cell = f"{res['best']['epoch_s']:.3f}"
            if name != "SGD":
                cell += f" ({res['ratio_to_sgd']:.2f}x"
                if res["target"] is not None:
                    ok = res["ratio_to_sgd"] <= res["target"]
                    cell += f" ≤ {res['target']:g}: {'pass' if ok else 'FAIL'}"
                    if not ok:
                        failed.append(f"{name} at m={m}")
                cell += ")"
            cells.append(cell)
        mark = "*" if plan[m]["optimisers"] < EPOCH else ""
        lines.append(f"| {m}{mark} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in optimisers:
        if plan[m]["optimisers"] < EPOCH:
            lines.append(f"\\* m={m}: timed on {plan[m]['optimisers']:,} of {EPOCH:,} images and extrapolated "
                         "to a full epoch.")
    lines.append("Optimiser targets: " + ("all met." if not failed else "NOT met for " + ", ".join(failed) + "."))
    return lines


def render(args, plan, results, optimisers, cold, warm, check, kernels_changed, total_s, blas):
    """The markdown report."""
    lines = ["| m | ex3lib s/epoch | NumPy s/epoch | ratio | required ratio | required ex3lib s/epoch | pass/fail |",
             "|---|---|---|---|---|---|---|"] if results else []
    notes = []
    for m, res in results.items():
        ex_s, np_s = res["ex3lib"]["epoch_s"], res["numpy"]["epoch_s"]
        ex_mark = "*" if plan[m]["ex3lib"] < EPOCH else ""
        np_mark = "*" if plan[m]["numpy"] < EPOCH else ""
        for side, mark in (("ex3lib", ex_mark), ("NumPy", np_mark)):
            if mark:
                n = plan[m][side.lower()]
                notes.append(f"\\* m={m}: {side} timed on {n:,} of {EPOCH:,} images and extrapolated "
                             f"(x{EPOCH / n:g}) to a full epoch.")
        if res["target"] is None:
            want_ratio = want_s = ok = "-"
        else:
            want_ratio, want_s = (f"{v:g}" for v in res["target"])
            ok = verdict(res["ratio"], ex_s, res["target"])
        lines.append(f"| {m} | {ex_s:.3f}{ex_mark} | {np_s:.3f}{np_mark} | {res['ratio']:.2f} | "
                     f"{want_ratio} | {want_s} | {ok} |")
    lines += [""] + notes + ([""] if notes else [])
    if optimisers:
        lines += render_optimisers(plan, optimisers) + [""]

    if cold:
        lines.append(f"First compile (empty NUMBA_CACHE_DIR): {cold['import_and_train_s']:.2f} s for "
                     f"`import ex3lib` + a tiny train() call (whole process {cold['process_s']:.2f} s).")
    if warm:
        where = "the default cache, warmed by this run" if args.quick else "the same cache, second process"
        lines.append(f"Start-up with a warm cache ({where}): {warm['import_and_train_s']:.2f} s for "
                     f"`import ex3lib` + the same train() call (whole process {warm['process_s']:.2f} s).")
        lines.append(f"`import ex3lib` alone (fresh process, includes importing NumPy and Numba): "
                     f"{warm['import_s']:.2f} s.")
        if warm["train_s"] > WARM_COMPILE_SUSPECT_S:
            lines.append(f"WARNING: the warm-cache train() call took {warm['train_s']:.1f} s, so it compiled: "
                         "the cache was not reused.")
    lines.append("")

    if results:
        lines += ["Details (best of the repeats):", "",
                  "| m | ex3lib train() call s | ex3lib test eval s | ex3lib epoch loss | NumPy images timed | "
                  "NumPy epoch loss |", "|---|---|---|---|---|---|"]
    for m, res in results.items():
        ex, nb = res["ex3lib"], res["numpy"]
        lines.append(f"| {m} | {ex['train_call_s']:.3f} | {ex['test_eval_s']:.3f} | {ex['loss']:.6f} | "
                     f"{plan[m]['numpy']:,} | {nb['loss']:.6f} |")
    lines += ["",
              f"Threads: {', '.join(f'{v}=1' for v in THREAD_VARS)} set before importing NumPy; "
              "ex3lib's kernels are single-threaded by design.",
              describe_blas(blas),
              f"Timed: float64, plain SGD, learning rate {LEARNING_RATE:g}, sequential order, "
              f"{EPOCH:,} MNIST images per epoch, minimum of {args.repeat} interleaved repeat(s). "
              "ex3lib epoch = History.time[1] - History.time[0] minus one separately timed test-set "
              "evaluation; NumPy epoch = the loop of ex3lib.reference.sgd_epoch.",
              "NumPy reference vs ex3lib (max-norm relative error): "
              f"loss {check['loss']:.1e}, gradients {check['grad']:.1e}, SGD weight changes "
              f"{check['weights']:.1e} (limit {CHECK_RTOL:g}).",
              "The epoch losses differ where the two sides trained on different numbers of images."]
    if kernels_changed:
        lines.append("WARNING: the kernel files changed while the benchmark ran; the numbers may mix versions.")
    lines.append(f"Total benchmark time: {total_s:.1f} s.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
