"""Hyperparameter sweeps over a chapter notebook, executed with papermill.

A sweep expands a grid of notebook parameters into points, executes the
notebook once per point with papermill and collects each point's glued values
(``myst_nb.glue`` scalars) into one CSV and a summary figure::

    python -m ex3lib.sweep book/sgd.ipynb -p learning_rate 0.1,0.01 -p batch_size 1,10,100
    python -m ex3lib.sweep book/sgd.ipynb --grid sweeps/table2.yaml

For a chapter ``book/sgd.ipynb`` the sweep writes into ``runs/sgd/``:

- ``<point>.ipynb``: the executed notebook of each point (with its error, if it failed);
- ``<point>.json``: the point's record (parameters, status, glued results, error,
  seconds), written last: a point is complete when its record says so;
- ``results.csv``: one row per point of the grid (``ok``, ``failed`` or ``pending``);
- ``summary.png``: the chosen metrics against the swept parameters.

Points run in parallel, one per CPU by default, each in its own process (papermill
starts a kernel per point); with ``--scheduler tcp://HOST:PORT`` (or
``$EX3_SWEEP_SCHEDULER``) they run on a Dask distributed cluster instead. A
point that fails is recorded with its error and the others go on; the exit
status is 1 if any failed. Rerunning the same sweep skips the points that are
complete for the same parameters, the same notebook and the same ex3lib source,
and runs the rest: a sweep killed mid-way loses no completed point. Every file
is written to a temporary name and renamed, so no file is ever half-written.

The grid is checked against the parameters the notebook declares (papermill's
notebook inspection of its ``parameters`` cell) before anything runs: an
unknown name or a value of the wrong type is refused with a message naming it.

The package, one concern a module:

- :mod:`~ex3lib.sweep.grid`: parsing ``-p`` values and grid files, checking
  them against the notebook's parameters, :func:`make_sweep`;
- :mod:`~ex3lib.sweep.point`: executing one point with papermill, its record,
  and whether it is complete;
- :mod:`~ex3lib.sweep.runner`: :func:`run_sweep`, on local processes or Dask;
- :mod:`~ex3lib.sweep.results`: ``results.csv`` and ``summary.png``;
- :mod:`~ex3lib.sweep.cli`: the command line (:func:`main`).

>>> from ex3lib.sweep import make_sweep, run_sweep
>>> sweep = make_sweep("book/sgd.ipynb", {"learning_rate": [0.1, 0.01]}, {"epochs": 1})  # doctest: +SKIP
>>> run_sweep(sweep).exit_code                                                           # doctest: +SKIP
0
"""

from .cli import SCHEDULER_ENV_VAR, build_parser, main
from .grid import (Point, Sweep, SweepError, declared_parameters, make_sweep, parse_values, point_name,
                   read_grid_file)
from .point import (RECORD_VERSION, SweepFolder, execute_point, glued_values, point_identity, point_status,
                    record_checksum, record_problem)
from .results import (check_metrics, default_metrics, glued_names, write_csv, write_summary_figure,
                      write_summary_html)
from .runner import DEFAULT_OUT, SweepResult, run_sweep

__all__ = [
    "DEFAULT_OUT", "RECORD_VERSION", "SCHEDULER_ENV_VAR", "Point", "Sweep", "SweepError", "SweepFolder",
    "SweepResult", "build_parser", "check_metrics", "declared_parameters", "default_metrics", "execute_point",
    "glued_names", "glued_values", "main", "make_sweep", "parse_values", "point_identity", "point_name",
    "point_status", "read_grid_file", "record_checksum", "record_problem", "run_sweep", "write_csv",
    "write_summary_figure",
    "write_summary_html",
]
