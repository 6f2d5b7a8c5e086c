"""Where a build's training time went, part of the book by part, read from a results store.

Usage::

    python benchmarks/build_costs.py [STORE] [--train-size N] [--workers W]

``STORE`` is the results store a build filled (default: the default store,
``$EX3_RESULTS_DIR`` or the user cache folder). Run it after a cold build
(a build that started from an empty store), so that the store holds the
book's runs and nothing else; runs of other ex3lib versions are ignored.

Each run of the store is put in one part of the book, by the library's own
declarations of the runs (so nothing here lists settings by hand):

* the explorer grids (:data:`ex3lib.pages.GRIDS`; the sharpness runs the SGD
  grid holds count here, as the grid trains them);
* the protocol chapter's runs on the validation split (its tuning beyond the
  methods' explorer, and the ten seeds of each selected setting);
* the sharpness runs (:func:`ex3lib.protocol.sharpness_runs`) that are not
  grid cells: the SGD chapter's own seeds 1 and 2 at those settings, which it
  trains with ``keep_params`` for the protocol chapter;
* the batch-size schedules (:func:`ex3lib.protocol.schedule_runs`'s growing batch);
* the chapters' own runs: everything else (the report's tables and figures,
  the 3-seed comparisons).

For each part it prints the runs, their training seconds (each run's own
wall-clock time on its worker, the store's ``seconds``), the same runs' time
if every update rule cost what plain SGD costs at the same batch size on the
same number of images (plain SGD's median seconds per epoch in this store,
times the epochs each run trained), and the least wall-clock time those
seconds can take on ``--workers`` cores. A run's first logging window that
took more than 3 s longer than its median window is counted apart, as the
kernels' first compilation (each worker compiles them once in a cold build).

The Hessian measurements, the gradient checks, notebook start-up and the
chapters' other cells are not runs, so they are not here: the build's own
log and wall time give those.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

from ex3lib import RunConfig, protocol
from ex3lib.pages import GRIDS
from ex3lib.store import ResultsStore

PARTS = ("explorer grids", "protocol: validation split", "sharpness runs", "batch-size schedules",
         "chapters' own runs")
#: A first logging window this much longer (s) than the run's median window is taken for the first compilation.
COMPILE_EXCESS = 3.0


def declared_parts(store: ResultsStore, train_size=None) -> dict[str, str]:
    """Store key -> part, for the runs the library declares (the chapters' own runs are not declared here)."""
    parts = {}
    for g in GRIDS.values():
        for config in protocol.keep_sharpness_params(g.at_scale(train_size).configs()):
            parts.setdefault(store.key(config), "explorer grids")
    for config in protocol.sharpness_runs(train_size=train_size):
        parts.setdefault(store.key(config), "sharpness runs")
    for config in protocol.schedule_runs(train_size=train_size)["growing batch"]:
        parts.setdefault(store.key(config), "batch-size schedules")
    return parts


def part_of(key: str, config: RunConfig, declared: dict[str, str]) -> str:
    if key in declared:
        return declared[key]
    if config.validation_size:
        return "protocol: validation split"
    return "chapters' own runs"


def first_compile(history) -> float:
    """Seconds of the run's first logging window beyond its median window, if over :data:`COMPILE_EXCESS`."""
    windows = [b - a for a, b in zip(history.time[:-1], history.time[1:])]
    if len(windows) < 3:
        return 0.0
    excess = windows[0] - statistics.median(windows)
    return float(excess) if excess > COMPILE_EXCESS else 0.0


def _images(history) -> int:
    """The number of training images the run trained on."""
    return int(history.extra.get("n_train") or 0)


def _plain_sgd(config: RunConfig) -> bool:
    return (config.optimiser == "sgd" and config.momentum == 0 and config.schedule == "constant"
            and config.batch_schedule == "constant")


def costs(store: ResultsStore, train_size=None) -> tuple[dict, float, dict]:
    """``(by part: [runs, seconds, seconds at plain SGD's cost], first compile seconds, plain SGD s/epoch)``."""
    declared = declared_parts(store, train_size)
    runs = []
    for config, history in store.histories():
        compile_s = first_compile(history)
        epochs = float(history.epoch[-1])
        runs.append((part_of(store.key(config), config, declared), config, history, compile_s, epochs))
    per_epoch = defaultdict(list)
    for _, config, history, compile_s, epochs in runs:
        if _plain_sgd(config) and not history.diverged and epochs > 0:
            per_epoch[(config.batch_size, _images(history))].append((history.seconds - compile_s) / epochs)
    sgd = {k: statistics.median(v) for k, v in per_epoch.items()}
    table = {part: [0, 0.0, 0.0] for part in PARTS}
    for part, config, history, compile_s, epochs in runs:
        seconds = history.seconds - compile_s
        like_sgd = sgd.get((config.batch_size, _images(history)))
        row = table[part]
        row[0] += 1
        row[1] += seconds
        row[2] += epochs * like_sgd if like_sgd is not None and config.batch_schedule == "constant" else seconds
    return table, sum(r[3] for r in runs), sgd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", nargs="?", help="results store folder (default: the default store)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="the chapters' train_size, for a store filled at a smaller scale (default: all images)")
    parser.add_argument("--workers", type=int, default=2, help="cores the runs were spread over (default 2)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.train_size is not None and args.train_size < 1:
        parser.error(f"--train-size must be at least 1, got {args.train_size}")
    store = ResultsStore(args.store)
    if args.store is not None and not store.root.is_dir():
        parser.error(f"no results store at {store.root}")
    table, compile_s, sgd = costs(store, args.train_size)
    n_runs = sum(r[0] for r in table.values())
    if n_runs == 0:
        print(f"{store.root} holds no run of this ex3lib version", file=sys.stderr)
        return 1
    w = args.workers
    print(f"Runs of this ex3lib version in {store.root}: {n_runs}")
    print(f"| part | runs | training core-s | at plain SGD's cost | least wall time on {w} cores (min) |")
    print("|---|---|---|---|---|")
    for part, (n, seconds, like_sgd) in table.items():
        print(f"| {part} | {n} | {seconds:,.0f} | {like_sgd:,.0f} | {seconds / w / 60:.1f} |")
    total, total_sgd = sum(r[1] for r in table.values()), sum(r[2] for r in table.values())
    print(f"| all | {n_runs} | {total:,.0f} | {total_sgd:,.0f} | {total / w / 60:.1f} |")
    print(f"\nFirst compilation of the kernels (first windows beyond their median), not counted above: "
          f"{compile_s:,.0f} core-s.")
    print("Plain SGD, s per epoch by (m, training images): "
          + ", ".join(f"({m}, {n:,}) {s:.3f}" for (m, n), s in sorted(sgd.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
