"""The collected results of a sweep: ``results.csv``, ``summary.png`` and ``summary.html``.

The CSV has one row per point of the grid, in grid order, and the figure each
chosen metric against the first swept parameter. Which glued values become
columns and which are plotted, the notebook says in its ``ex3`` metadata
(``sweep_results``, ``sweep_metrics``).
"""

from __future__ import annotations

import ast
import contextlib
import csv
import difflib
import io
import json
import math
from pathlib import Path
from typing import NamedTuple

from ..sysutil import atomic_write
from .grid import Sweep, SweepError

__all__ = ["check_metrics", "default_metrics", "glued_names", "write_csv", "write_summary_figure",
           "write_summary_html"]


def _cell(value):
    """A value as a CSV cell: NaN as ``nan``, lists and dicts as JSON, None as empty."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return "" if value is None else value


def _notebook_meta(sweep: Sweep) -> dict:
    """The notebook's ``ex3`` metadata: ``sweep_results`` (CSV columns) and ``sweep_metrics`` (figure)."""
    meta = json.loads(sweep.notebook.read_text(encoding="utf-8")).get("metadata", {})
    return meta.get("ex3") or {}


def write_csv(sweep: Sweep, records: dict, path: Path, all_results: bool = False) -> Path:
    """One row per point of the grid, in grid order: parameters, status, glued results, seconds, error.

    The results are the glued names the notebook lists in its ``ex3.sweep_results``
    metadata (all its glued scalars if it lists none, or with ``all_results``); every
    point's JSON record keeps all of them. A glued name equal to a parameter's
    becomes the column ``result.<name>``. The file is written atomically.

    Parameters
    ----------
    sweep : Sweep
    records : dict
        Point name -> record, for the points that have one; the others are ``pending``.
    path : pathlib.Path
        The CSV file, ``<out>/<chapter>/results.csv``.
    all_results : bool
        Every glued scalar as a column, whatever the notebook lists.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    declared = [] if all_results else list(_notebook_meta(sweep).get("sweep_results") or [])
    result_names = list(declared)
    if not declared:
        for point in sweep.points:
            for name in (records.get(point.name) or {}).get("results", {}):
                if name not in result_names:
                    result_names.append(name)
    param_names = list(sweep.swept) + [n for n in sweep.fixed if n not in sweep.swept]
    header = ["point", "status", *param_names, *result_names, "seconds", "attempts", "error"]
    taken = set(header[:2 + len(param_names)])
    clash = [n for n in result_names if n in taken]
    if clash:  # a glued name equal to a parameter name: keep both apart
        header = header[:2 + len(param_names)] + [f"result.{n}" if n in clash else n
                                                  for n in result_names] + header[-3:]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for point in sweep.points:
        record = records.get(point.name)
        status = "pending" if record is None else record.get("status", "failed")
        results = (record or {}).get("results", {})
        writer.writerow([point.name, status, *(_cell(point.parameters.get(n)) for n in param_names),
                         *(_cell(results.get(n)) for n in result_names),
                         "" if record is None else _cell(round(record.get("seconds", math.nan), 2)),
                         "" if record is None else record.get("attempts", ""),
                         "" if record is None else (record.get("error") or "")])
    atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")
    return path


def _numeric(value) -> bool:
    """Whether ``value`` is a number that can be plotted (bools are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def default_metrics(sweep: Sweep, records: dict) -> list:
    """The notebook's ``ex3.sweep_metrics`` metadata, else its first (up to four) numeric results.

    Parameters
    ----------
    sweep : Sweep
    records : dict
        Point name -> record.

    Returns
    -------
    list of str
        Glued names.
    """
    named = _notebook_meta(sweep).get("sweep_metrics")
    if named:
        return list(named)
    names = []
    for record in records.values():
        for name, value in record.get("results", {}).items():
            if _numeric(value) and name not in names:
                names.append(name)
    return names[:4]


def glued_names(sweep: Sweep) -> tuple[set, bool]:
    """The names the notebook's code glues, and whether it also glues names only known when it runs.

    A ``glue("name", ...)`` (or ``myst_nb.glue``) call with a literal name
    counts; one whose name is computed (``glue(f"acc_{m}", ...)``), or a cell
    that is not plain Python, makes the second value True. The notebook's
    ``ex3.sweep_results`` and ``ex3.sweep_metrics`` metadata count as glued.

    Parameters
    ----------
    sweep : Sweep

    Returns
    -------
    names : set of str
    dynamic : bool
    """
    nb = json.loads(sweep.notebook.read_text(encoding="utf-8"))
    meta = (nb.get("metadata") or {}).get("ex3") or {}
    names = {str(n) for key in ("sweep_results", "sweep_metrics") for n in (meta.get(key) or [])}
    dynamic = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        # IPython magics and shell lines are no Python; they never glue.
        lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            dynamic = True
            continue
        for node in ast.walk(tree):
            func = getattr(node, "func", None)
            if not isinstance(node, ast.Call) or getattr(func, "id", getattr(func, "attr", None)) != "glue":
                continue
            first = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.add(first.value)
            else:
                dynamic = True
    return names, dynamic


def check_metrics(sweep: Sweep, metrics) -> None:
    """Refuse ``--metric`` names the notebook does not glue, before the sweep touches any file.

    Parameters
    ----------
    sweep : Sweep
    metrics : list of str or None
        The requested metrics; None for the default.

    Raises
    ------
    SweepError
        ``metrics`` is not a list of names, or names one the notebook cannot
        glue (with a did-you-mean). A notebook that computes some glued names
        at run time is checked again when the figure is drawn.
    """
    if metrics is None:
        return
    if isinstance(metrics, str) or not isinstance(metrics, (list, tuple)) or not metrics:
        raise SweepError(f"metrics must be a non-empty list of glued names, got {metrics!r}")
    bad_type = [m for m in metrics if not isinstance(m, str) or not m]
    if bad_type:
        raise SweepError(f"--metric must name a glued value, got {bad_type[0]!r}")
    names, dynamic = glued_names(sweep)
    if dynamic:
        return
    unknown = [m for m in metrics if m not in names]
    if unknown:
        problems = []
        for m in unknown:
            close = difflib.get_close_matches(m, sorted(names), n=1)
            problems.append(f"--metric {m!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise SweepError(f"{'; '.join(problems)}: {sweep.notebook} glues no such value; it glues: "
                         f"{', '.join(sorted(names)) or 'nothing'}. Nothing was run or changed.")


def write_summary_figure(sweep: Sweep, records: dict, path: Path, metrics=None):
    """Each metric against the first swept parameter, one line per setting of the others.

    Only the points that finished ok are drawn; a glued ``<metric>_std`` becomes
    an error bar. With no such point, or (by default) no numeric metric, no
    figure is made and an old one at ``path`` is removed. A requested metric
    that no ok point glued as a number is an error, and an old figure is kept.

    Parameters
    ----------
    sweep : Sweep
    records : dict
        Point name -> record.
    path : pathlib.Path
        The PNG file, ``<out>/<chapter>/summary.png``.
    metrics : list of str, optional
        Glued names to plot; default :func:`default_metrics`.

    Returns
    -------
    pathlib.Path or None
        ``path``, or None if there was nothing to draw.

    Raises
    ------
    SweepError
        Some of the requested ``metrics`` are glued as a number by no point
        that finished ok; ``path`` is left as it was.
    """
    from matplotlib.figure import Figure

    metrics = _drawn_metrics(sweep, records, path, metrics)
    if metrics is None:
        return None
    series = _series(sweep, records, metrics)
    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    xs = series.x_values if series.numeric_x else list(range(len(series.x_values)))
    for ax, metric in zip(axes, metrics):
        for key, values in series.groups.items():
            ys, errs = values[metric]
            keep = [i for i, y in enumerate(ys) if y is not None]
            label = ", ".join(f"{n} = {series.choices[k][i]}" for k, (n, i) in enumerate(zip(series.others, key)))
            ax.errorbar([xs[i] for i in keep], [ys[i] for i in keep],
                        yerr=None if errs is None else [errs[i] for i in keep], fmt="o-", capsize=3,
                        label=label or None)
        if series.log_x:
            ax.set_xscale("log")
        if series.x_name and not series.numeric_x:
            ax.set_xticks(range(len(series.x_values)), [str(v) for v in series.x_values])
        ax.set_xlabel(series.x_name or "")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
        if series.others:
            ax.legend(fontsize=7)
    fig.suptitle(series.title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))
    return path


def write_summary_html(sweep: Sweep, records: dict, path: Path, metrics=None):
    """The interactive version of :func:`write_summary_figure`: ``summary.html`` with ``plotly.min.js`` beside it.

    The same metrics against the first swept parameter; the other swept
    parameters become buttons or sliders that select one setting (drawn in
    colour, with its error bars; every other setting in grey), and values show
    on hover. It is an explorer of :mod:`ex3lib.pages` and opens from disk
    with no network. Nothing to draw removes an old page, as for the figure.
    """
    from .. import pages

    metrics = _drawn_metrics(sweep, records, path, metrics)
    if metrics is None:
        return None
    series = _series(sweep, records, metrics)
    payload = pages.curves_payload(
        "sweep", f"sweep of {sweep.notebook.name}", series.title, series.x_name or "point",
        series.x_values if series.x_name else [0], metrics,
        [(n, series.choices[k]) for k, n in enumerate(series.others)],
        {key: {m: values[m] for m in metrics} for key, values in series.groups.items()}, log_x=series.log_x)
    return pages.write_page(path, f"sweep of {sweep.notebook.name}", [payload])


class _Series(NamedTuple):
    x_name: str | None
    x_values: list
    numeric_x: bool
    log_x: bool
    others: list
    choices: list  # the values of each other swept parameter
    groups: dict  # index of each other parameter's value -> {metric: (ys or None per x, errs or None)}
    title: str


def _drawn_metrics(sweep: Sweep, records: dict, path: Path, metrics):
    """The metrics to draw, or None (and an old file at ``path`` removed) if there is nothing to draw."""
    ok = [p for p in sweep.points if (records.get(p.name) or {}).get("status") == "ok"]
    requested = list(metrics or [])
    metrics = list(metrics or default_metrics(sweep, records))
    metrics = [m for m in metrics if any(_numeric(records[p.name]["results"].get(m)) for p in ok)]
    missing = [m for m in requested if m not in metrics]
    if ok and missing:
        glued = sorted({n for p in ok for n, v in records[p.name]["results"].items() if _numeric(v)})
        raise SweepError(f"no point glued {', '.join(map(repr, missing))} as a number, so {path} was "
                         f"not drawn (an old one is kept); numeric glued values: {', '.join(glued)}")
    if not ok or not metrics:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # an old figure would show results this sweep does not have
        return None
    return metrics


def _series(sweep: Sweep, records: dict, metrics) -> _Series:
    """The points that finished ok, as one series per setting of the swept parameters after the first.

    A glued ``<metric>_std`` (e.g. over seeds) becomes the error bar; a
    point that did not finish ok, or glued no number, is a gap (None).
    """
    ok = [p for p in sweep.points if (records.get(p.name) or {}).get("status") == "ok"]
    names = list(sweep.swept)
    x_name = names[0] if names else None
    others = names[1:]
    x_values = list(sweep.swept.get(x_name, [None]))
    numeric_x = x_name is not None and all(_numeric(v) for v in x_values)
    log_x = numeric_x and all(v > 0 for v in x_values) and max(x_values) / min(x_values) >= 20
    choices = [list(sweep.swept[n]) for n in others]
    groups = {}
    for p in ok:
        key = tuple(choices[k].index(p.swept[n]) for k, n in enumerate(others))
        at = x_values.index(p.swept[x_name]) if x_name else 0
        results = records[p.name]["results"]
        group = groups.setdefault(key, {m: ([None] * len(x_values), [None] * len(x_values)) for m in metrics})
        for m in metrics:
            group[m][0][at] = float(results[m]) if _numeric(results.get(m)) else None
            std = results.get(f"{m}_std")
            group[m][1][at] = float(std) if _numeric(std) and math.isfinite(std) else None
    for group in groups.values():
        for m, (ys, errs) in group.items():
            group[m] = (ys, None if all(e is None for e in errs) else [e if e is not None else 0.0 for e in errs])
    n_bad = len(sweep.points) - len(ok)
    title = (f"sweep of {sweep.notebook.name}: {len(ok)} point(s)"
             + (f" ({n_bad} failed or pending, not shown)" if n_bad else ""))
    return _Series(x_name, x_values, numeric_x, log_x, others, choices, dict(sorted(groups.items())), title)
