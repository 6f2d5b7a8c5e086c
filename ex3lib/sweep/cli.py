"""The command line: ``python -m ex3lib.sweep NOTEBOOK -p NAME VALUES ...`` (also ``ex3-sweep``).

Exit status: 0 all points ok, 1 some failed, 2 the grid was refused, 130
interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .grid import Sweep, SweepError, declared_parameters, make_sweep, parse_values, read_grid_file
from .point import PARAMETERS_CHANGED, SweepFolder, point_identity, point_status
from .results import check_metrics
from .runner import DEFAULT_OUT, run_sweep

__all__ = ["SCHEDULER_ENV_VAR", "build_parser", "main"]

SCHEDULER_ENV_VAR = "EX3_SWEEP_SCHEDULER"


class _HelpFormatter(argparse.HelpFormatter):
    """Wrapped description and options, the epilog's example lines kept as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (``python -m ex3lib.sweep --help`` shows it).

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="python -m ex3lib.sweep",
        description="Execute a chapter notebook with papermill over a grid of its parameters, in "
                    "parallel, and collect the values it glues into one CSV and a summary figure "
                    "(OUT/<chapter>/results.csv, summary.png). Rerunning skips the points already "
                    "complete. Exit status: 0 all points ok, 1 some failed, 2 the grid was refused, "
                    "130 interrupted.",
        epilog="examples:\n"
               "  python -m ex3lib.sweep book/sgd.ipynb --grid sweeps/table2.yaml\n"
               "  python -m ex3lib.sweep book/sgd.ipynb -p learning_rate 0.1,0.01 -p batch_size 10,100 \\\n"
               "      -p epochs 1 -p learning_rates [] -p long_epochs 0\n"
               "the parameters a notebook declares: papermill --help-notebook NOTEBOOK")
    parser.formatter_class = _HelpFormatter
    parser.add_argument("notebook", type=Path, help="the chapter notebook, e.g. book/sgd.ipynb")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUES"),
                        help="a parameter and its values, comma-separated (0.1,0.01 sweeps two values; "
                             "one value fixes it; [0.1,0.01] is one list); repeatable")
    parser.add_argument("--grid", type=Path, metavar="FILE",
                        help="a YAML file with 'grid' (name: [values]) and 'parameters' (name: value); "
                             "-p options override it")
    parser.add_argument("--out", type=Path, default=Path(DEFAULT_OUT),
                        help="output folder; the sweep writes into OUT/<chapter>/ (default: runs)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local worker processes (default: one per CPU)")
    parser.add_argument("--scheduler", default=os.environ.get(SCHEDULER_ENV_VAR) or None,
                        metavar="ADDRESS",
                        help=f"a Dask distributed scheduler, e.g. tcp://host:8786, to run the points "
                             f"on (default: ${SCHEDULER_ENV_VAR}, else local processes)")
    parser.add_argument("--retries", type=int, default=2,
                        help="retries of a point whose kernel did not start or died (default: 2)")
    parser.add_argument("--start-timeout", type=float, default=120.0,
                        help="seconds a kernel may take to start (default: 120)")
    parser.add_argument("--metric", action="append", default=None,
                        help="a glued value to plot in summary.png (repeatable; default: the notebook's "
                             "ex3.sweep_metrics metadata, else its first numeric results)")
    parser.add_argument("--all-results", action="store_true",
                        help="every value the notebook glues as a CSV column (default: the ones its "
                             "ex3.sweep_results metadata lists, if any)")
    parser.add_argument("--force", action="store_true",
                        help="run every point again, even complete ones, and replace the records of "
                             "points that ran with other parameters (refused without it)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the grid and list its points and their state; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    """Run the sweep command; the console script ``ex3-sweep``.

    ``-p`` options override the grid file's entries of the same name; a ``-p``
    with one value fixes the parameter, with several sweeps it.

    Parameters
    ----------
    argv : list of str, optional
        The arguments; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 all points ok, 1 some failed, 2 the grid or an
        option was refused (the message is on stderr), 130 interrupted.

    Examples
    --------
    >>> main(["book/sgd.ipynb", "-p", "learning_rate", "0.1,0.01", "--dry-run"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        grid, fixed = read_grid_file(args.grid) if args.grid else ({}, {})
        declared = declared_parameters(args.notebook) if args.parameter else {}
        for name, text in args.parameter:
            kind = (declared.get(name) or {}).get("inferred_type_name")
            values = parse_values(text, kind)
            grid.pop(name, None)
            fixed.pop(name, None)
            if len(values) == 1:
                fixed[name] = values[0]
            else:
                grid[name] = values
        sweep = make_sweep(args.notebook, grid, fixed)
        if args.dry_run:
            check_metrics(sweep, args.metric)
            return _dry_run(sweep, args.out, args.force)
        result = run_sweep(sweep, out=args.out, workers=args.workers, scheduler=args.scheduler,
                           retries=args.retries, start_timeout=args.start_timeout, force=args.force,
                           metrics=args.metric, all_results=args.all_results,
                           progress=not args.no_progress)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return result.exit_code


def _dry_run(sweep: Sweep, out, force=False) -> int:
    """``--dry-run``: list the points and whether each is complete; run nothing."""
    root = Path(out) / sweep.chapter
    outputs = SweepFolder(root)
    identity = point_identity(sweep.notebook.read_bytes())
    print(f"{sweep.notebook}: {len(sweep.points)} point(s) -> {root}/")
    for point in sweep.points:
        state, why = point_status(outputs.read_record(point), point, identity, outputs)
        if why == PARAMETERS_CHANGED and not force:
            why += "; the sweep refuses to replace it without --force"
        print(f"  {point.name}: {'complete' if state == 'done' else 'to run'}"
              + (f" ({why})" if why else ""))
    return 0

