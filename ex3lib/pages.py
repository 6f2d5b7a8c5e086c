"""Explorers for the static pages: each chapter's grid of real runs, driven in the browser without a kernel.

A reader of the built book selects a setting with sliders and buttons and the
figure shows that setting's stored runs; nothing is computed in the browser
and nothing is fetched from outside the site.  Each grid is declared once here
(:data:`GRIDS`), trained through :func:`ex3lib.run_many` and the results store
(a rebuild reuses the runs, a library change recomputes them, and cells that
coincide with a chapter's own runs are the same stored runs), and turned into
a page element by one function, :func:`explorer`, that every experiment chapter
calls.  The gradients chapter's explorer shows an
:class:`ex3lib.gradcheck.HSweep` instead of runs.

The figures are Plotly's (its JavaScript, ``plotly.min.js``, ships in the
``plotly`` wheel; the book's Sphinx extension copies it into the site's
``_static`` folder and loads it on the pages that hold an explorer).  The
element is plain HTML: the data as JSON in a ``<script
type="application/json">``, the figure's first state, the controls, a line
of text with the selected run's numbers, and the script that wires them
(``ex3lib/pages.js``, the same for every explorer).  The HTML holds no
``$``, which the book's dollar-maths would take for TeX.

:func:`summary_html` writes the same kind of figure for a sweep's points.

Examples
--------
>>> sorted(GRIDS)
['adaptive', 'decay', 'momentum', 'sgd']
>>> len(GRIDS["sgd"].configs())
63
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from .data import N_TRAIN, VALIDATION_SIZE
from .experiments import failed, fate
from .training import History, RunConfig

#: The figure library's script as the pages load it (from the site's ``_static`` folder).
PLOTLY_JS = "plotly.min.js"

_SCRIPT = "pages.js"


def plotly_js_path() -> Path:
    """Where the installed ``plotly`` wheel keeps ``plotly.min.js`` (what the book copies into ``_static``)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise FileNotFoundError(f"the plotly package has no {PLOTLY_JS} at {path}; reinstall plotly "
                                f"(pip install -r requirements.txt)")
    return path


@dataclass(frozen=True)
class Axis:
    """One control of an explorer: a label and its choices, each a text and the config fields it sets."""

    label: str
    choices: tuple
    control: str = "slider"  # "slider" (ordered values) or "buttons" (named choices)

    @classmethod
    def over(cls, name: str, label: str, values, control="slider") -> "Axis":
        """An axis over one config field: ``Axis.over("batch_size", "m", [1, 10, 100])``."""
        return cls(label, tuple((f"{v:g}", {name: v}) for v in values), control)

    @property
    def texts(self) -> list[str]:
        return [text for text, _ in self.choices]


@dataclass(frozen=True)
class Grid:
    """An explorer's grid: every combination of two axes, each cell one run, drawn against a baseline run.

    ``rows`` and ``columns`` are the two axes (the rows and columns of the map
    of final test accuracy); ``base`` the config fields every cell shares;
    ``baseline`` the fields that turn a cell into the run it is drawn against
    (grey in the figure), described by ``baseline_label``; ``start`` the
    fields of the cell shown first (the chapter's headline setting).
    """

    name: str
    title: str
    rows: Axis
    columns: Axis
    base: dict = field(default_factory=dict)
    baseline: dict = field(default_factory=dict)
    baseline_label: str = ""
    start: dict = field(default_factory=dict)

    def cell(self, i: int, j: int) -> RunConfig:
        """The run at row choice ``i`` and column choice ``j``."""
        return RunConfig(**{**self.base, **self.rows.choices[i][1], **self.columns.choices[j][1]})

    def baseline_of(self, config: RunConfig) -> RunConfig:
        """The run a cell is drawn against."""
        return config.replace(**self.baseline)

    def cells(self) -> list[RunConfig]:
        """Every cell, row by row."""
        return [self.cell(i, j) for i in range(len(self.rows.choices)) for j in range(len(self.columns.choices))]

    def configs(self) -> list[RunConfig]:
        """Every run the explorer shows (cells and baselines), each once, cells first."""
        out = list(dict.fromkeys(self.cells()))
        out += [b for b in dict.fromkeys(self.baseline_of(c) for c in out) if b not in set(out)]
        return out

    def at_scale(self, train_size=None) -> "Grid":
        """The same grid with every run on the first ``train_size`` training images (None: all of them), for a
        chapter run at a smaller scale (its ``train_size`` parameter)."""
        return replace(self, base={**self.base, "train_size": train_size})


#: Learning rates of the explorers: a log grid with steps of about half a decade.
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0)

#: The grids of the experiment chapters' explorers, 10 epochs and one seed per cell, as the report's runs.
GRIDS = {g.name: g for g in (
    Grid("sgd", "SGD: learning rate η × batch size m",
         Axis.over("learning_rate", "η", LEARNING_RATES),
         Axis.over("batch_size", "m", (1, 2, 5, 10, 20, 50, 100)),
         baseline={"learning_rate": 0.1, "batch_size": 10},
         baseline_label="η = 0.1, m = 10 (the report's reference setting)",
         start={"learning_rate": 0.1, "batch_size": 10}),
    Grid("decay", "Linear decay at m = 10: initial η₀ × final η_N",
         Axis.over("learning_rate", "η₀", (0.01, 0.03, 0.1, 0.3)),
         Axis.over("lr_final", "η_N", (1e-4, 1e-3, 3e-3)),
         base={"schedule": "linear_decay", "batch_size": 10},
         baseline={"schedule": "constant", "lr_final": None},
         baseline_label="the constant η₀",
         start={"learning_rate": 0.1, "lr_final": 1e-3}),
    Grid("momentum", "Momentum at m = 10: α × η",
         Axis.over("momentum", "α", (0.0, 0.5, 0.9, 0.95, 0.99)),
         Axis.over("learning_rate", "η", LEARNING_RATES[:7]),
         base={"batch_size": 10},
         baseline={"momentum": 0.0},
         baseline_label="plain SGD (α = 0) at the same η",
         start={"momentum": 0.9, "learning_rate": 0.01}),
    # Under the protocol chapter's validation split: these runs are its tuning grid.
    Grid("adaptive", "Methods at m = 10: method × η",
         Axis("method", (("SGD", {"optimiser": "sgd"}), ("momentum α=0.9", {"optimiser": "sgd", "momentum": 0.9}),
                         ("AdaGrad", {"optimiser": "adagrad"}), ("RMSProp", {"optimiser": "rmsprop"}),
                         ("Adam", {"optimiser": "adam"})), control="buttons"),
         Axis.over("learning_rate", "η", LEARNING_RATES[:7]),
         base={"batch_size": 10, "validation_size": VALIDATION_SIZE},
         baseline={"optimiser": "sgd", "momentum": 0.0},
         baseline_label="plain SGD at the same η",
         start={"optimiser": "adam", "learning_rate": 1e-3}),
)}


def grid(name: str) -> Grid:
    """The explorer grid called ``name`` (one of :data:`GRIDS`)."""
    if name not in GRIDS:
        import difflib

        near = difflib.get_close_matches(str(name), GRIDS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"no explorer grid {name!r}{hint}; the grids are {', '.join(sorted(GRIDS))}")
    return GRIDS[name]


def explorer(name: str, *, sweep=None, h=None, data=None, store=None, train_size=None):
    """The static-page explorer of a chapter, as an HTML element the notebook displays.

    ``name`` is a grid of :data:`GRIDS` (its missing runs are trained with
    :func:`ex3lib.run_many` first, ``data`` and ``store`` passed on, each on
    the first ``train_size`` training images, None for all: the chapter's
    scale, :meth:`Grid.at_scale`), or ``"gradients"`` with the chapter's
    ``sweep`` (an :class:`ex3lib.gradcheck.HSweep` with histograms) and its
    step ``h`` selected first.
    """
    from IPython.display import HTML

    if name == "gradients":
        if sweep is None:
            raise TypeError("explorer('gradients') needs sweep=, the chapter's gradcheck.h_sweep(...)")
        return HTML(element(gradients_payload(sweep, h)))
    from .runner import run_many

    g = grid(name).at_scale(train_size)
    configs = g.configs()
    histories = run_many(configs, data, store=store, progress=False)
    return HTML(element(runs_payload(g, dict(zip(configs, histories)))))


def show(name: str, enabled: bool = True, **kwargs) -> None:
    """Display a chapter's :func:`explorer`, or the line that says it was skipped (its ``explorer`` parameter False)."""
    from IPython.display import display

    from .book import skip

    if enabled:
        display(explorer(name, **kwargs))
    else:
        skip("The explorer", "explorer = False")


def _finite(values) -> list:
    """Floats for JSON: non-finite values become null (a gap in the figure)."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=float).tolist()]


def _run_record(history: History) -> dict:
    acc, loss = float(history.test_accuracy[-1]), float(history.loss[-1])
    return {"config": history.config, "epoch": _finite(history.epoch), "loss": _finite(history.loss),
            "accuracy": _finite(history.test_accuracy), "final_accuracy": acc if math.isfinite(acc) else None,
            "final_loss": loss if math.isfinite(loss) else None, "failed": failed(history),
            "fate": fate(history), "reason": history.reason}


def runs_payload(g: Grid, runs: dict) -> dict:
    """What an explorer page element carries for grid ``g``: the runs by config, as JSON-ready data.

    ``runs`` maps every config of ``g.configs()`` to its history.  Failed runs
    (:func:`ex3lib.experiments.failed`) have no colour on the map and are
    marked with a cross; their final accuracy is still shown on hover.
    """
    missing = [c for c in g.configs() if c not in runs]
    if missing:
        raise ValueError(f"runs lacks {len(missing)} of the {len(g.configs())} runs of grid {g.name!r}, "
                         f"e.g. {missing[0]}")
    keys = {c: f"r{k}" for k, c in enumerate(g.configs())}
    cells = g.cells()
    n_cols = len(g.columns.choices)
    records = {keys[c]: _run_record(runs[c]) for c in g.configs()}
    grid_cells = [{"run": keys[c], "baseline": keys[g.baseline_of(c)]} for c in cells]
    at = [[records[grid_cells[i * n_cols + j]["run"]] for j in range(n_cols)] for i in range(len(g.rows.choices))]
    acc = np.array([[np.nan if r["final_accuracy"] is None else r["final_accuracy"] for r in row] for row in at])
    bad = np.array([[r["failed"] for r in row] for row in at])
    start = _start_cell(g, cells)
    first = cells[0]
    images = _images_text(first)
    caption = (f"{g.title}: {len(cells)} stored runs, one per cell, each {first.epochs} epochs of seed "
               f"{first.seed} on {images}; in grey, {g.baseline_label}.")
    return {"kind": "runs", "name": g.name, "title": g.title, "caption": caption, "train_size": first.train_size,
            "baseline_label": g.baseline_label,
            "axes": [{"label": a.label, "choices": a.texts, "control": a.control, "value": v}
                     for a, v in ((g.rows, start[0]), (g.columns, start[1]))],
            "cells": grid_cells, "runs": records,
            "figure": json.loads(_runs_figure(g, acc, bad).to_json())}


def _images_text(config: RunConfig) -> str:
    """Which training images a run trained on, e.g. ``"the first 50,000 training images (the last 10,000
    held out for validation)"``."""
    n_fit = N_TRAIN - config.validation_size
    n = n_fit if config.train_size is None else config.train_size
    if n == N_TRAIN:
        return "all training images"
    held = (f" (the last {config.validation_size:,} held out for validation)" if config.validation_size else "")
    return f"the first {n:,} training images{held}"


def _start_cell(g: Grid, cells) -> tuple[int, int]:
    """Row and column of the cell shown first: the first that has every field of ``g.start``."""
    for k, c in enumerate(cells):
        if all(getattr(c, name) == value for name, value in g.start.items()):
            return divmod(k, len(g.columns.choices))
    raise ValueError(f"grid {g.name!r} has no cell with {g.start}")


def _accuracy_ticks(nines):
    """Colour-bar ticks of the map (its colour is −log10 of the test error), labelled as accuracies."""
    finite = nines[np.isfinite(nines)]
    if finite.size == 0:
        return [], []
    accs = [a for a in (0.2, 0.5, 0.8, 0.9, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995)
            if finite.min() - 0.05 <= -math.log10(1 - a) <= finite.max() + 0.05]
    return [-math.log10(1 - a) for a in accs], [f"{a:g}" for a in accs]


def _count_range(counts) -> str:
    """``"15,762 to 16,741"`` (or one number when every count is the same)."""
    lo, hi = int(np.min(counts)), int(np.max(counts))
    return f"{lo:,}" if lo == hi else f"{lo:,} to {hi:,}"


def _runs_figure(g: Grid, acc, bad):
    """The explorer's figure before a cell is selected: empty curves, the map of final test accuracy.

    The map's colour is −log10(1 − accuracy), so that 0.97 and 0.98 differ as
    visibly as 0.5 and 0.8; failed runs have no colour and a red cross.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, specs=[[{}, {}], [{"colspan": 2}, None]], row_heights=[0.45, 0.55],
                        vertical_spacing=0.14, horizontal_spacing=0.1,
                        subplot_titles=("training loss", "test accuracy",
                                        "final test accuracy over the grid (click a cell)"))
    grey, blue = "#9a9a9a", "#1f77b4"
    for col, show in ((1, True), (2, False)):  # traces 0, 1 (loss) and 2, 3 (accuracy): baseline, selected
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines", line=dict(color=grey, width=2), name=g.baseline_label,
                                 legendgroup="baseline", showlegend=show), row=1, col=col)
        fig.add_trace(go.Scatter(x=[], y=[], mode="lines+markers", line=dict(color=blue, width=2),
                                 marker=dict(size=4), name="selected", legendgroup="selected", showlegend=show),
                      row=1, col=col)
    rows, cols = g.rows.texts, g.columns.texts
    with np.errstate(divide="ignore", invalid="ignore"):
        nines = np.where(bad | ~np.isfinite(acc), np.nan, -np.log10(np.clip(1 - acc, 1e-6, None)))
    shown = [["" if bad[i, j] or not np.isfinite(acc[i, j]) else f"{acc[i, j]:.3f}" for j in range(len(cols))]
             for i in range(len(rows))]
    hover = [[("n/a" if not np.isfinite(acc[i, j]) else f"{acc[i, j]:.4f}") + (" (failed run)" if bad[i, j] else "")
              for j in range(len(cols))] for i in range(len(rows))]
    tickvals, ticktext = _accuracy_ticks(nines)
    fig.add_trace(go.Heatmap(  # trace 4: the map
        x=cols, y=rows, z=[[None if not np.isfinite(v) else float(v) for v in row] for row in nines],
        text=shown, customdata=hover, texttemplate="%{text}", textfont=dict(size=10), colorscale="Viridis",
        colorbar=dict(title=dict(text="test accuracy", side="right"), tickvals=tickvals, ticktext=ticktext,
                      len=0.5, y=0.27, yanchor="middle"),
        hovertemplate=f"{g.rows.label} = %{{y}}, {g.columns.label} = %{{x}}<br>final test accuracy %{{customdata}}"
                      "<extra></extra>", xgap=1, ygap=1), row=2, col=1)
    fx = [cols[j] for i in range(len(rows)) for j in range(len(cols)) if bad[i, j]]
    fy = [rows[i] for i in range(len(rows)) for j in range(len(cols)) if bad[i, j]]
    fig.add_trace(go.Scatter(  # trace 5: failed runs (diverged, or ended at chance level)
        x=fx, y=fy, mode="markers", marker=dict(symbol="x-thin", size=14, line=dict(color="#b22222", width=2.5)),
        name="failed run (diverged or at chance level)", hoverinfo="skip"), row=2, col=1)
    fig.add_trace(go.Scatter(  # trace 6: the selected cell
        x=[], y=[], mode="markers", marker=dict(symbol="square-open", size=30, color="black", line=dict(width=3)),
        name="selected cell", hoverinfo="skip", showlegend=False), row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    # Full labels at every tick (0.5, 0.2, 0.1, ...): Plotly's default labels the
    # ticks between powers of ten with their first digit alone ("5", "2").
    fig.update_yaxes(type="log", tickformat="~g", row=1, col=1)
    fig.update_xaxes(title_text=g.columns.label, type="category", row=2, col=1)
    fig.update_yaxes(title_text=g.rows.label, type="category", row=2, col=1)
    fig.update_layout(height=760, margin=dict(l=60, r=20, t=40, b=50), template="plotly_white",
                      legend=dict(orientation="h", x=0, y=1.1, xanchor="left", yanchor="bottom"),
                      clickmode="event")
    return fig


def gradients_payload(sweep, h=None) -> dict:
    """What the gradients chapter's explorer carries: the sweep's relative-error histograms and medians per step.

    ``sweep`` is an :class:`ex3lib.gradcheck.HSweep` (with ``bins`` and
    ``counts``); ``h``, the step selected first, must be one of its steps
    (the closest is taken; the first step if None).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .gradcheck import METHODS

    if sweep.counts is None:
        raise ValueError("the sweep has no histograms (counts is None): compute it with gradcheck.h_sweep")
    hs = np.asarray(sweep.hs, dtype=float)
    start = 0 if h is None else int(np.argmin(np.abs(np.log10(hs) - math.log10(h))))
    centres = np.sqrt(sweep.bins[:-1] * sweep.bins[1:])
    colours = {"forward": "#1f77b4", "backward": "#ff7f0e", "central": "#2ca02c"}
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("relative errors at the selected h", "median relative error against h"))
    for m in METHODS:  # traces 0-2: the histograms at the selected step
        fig.add_trace(go.Scatter(x=centres.tolist(), y=[], mode="lines", line=dict(shape="hvh", color=colours[m]),
                                 name=m, legendgroup=m), row=1, col=1)
    for m in METHODS:  # traces 3-5: the median against h
        fig.add_trace(go.Scatter(x=hs.tolist(), y=_finite(sweep.median[m]), mode="lines+markers",
                                 marker=dict(size=4), line=dict(color=colours[m]), name=m, legendgroup=m,
                                 showlegend=False, hovertemplate=f"{m}: h = %{{x:.1e}}, median %{{y:.2e}}"
                                                                 "<extra></extra>"), row=1, col=2)
    fig.add_trace(go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False,  # trace 6
                             marker=dict(symbol="circle-open", size=14, color="black", line=dict(width=2))),
                  row=1, col=2)
    fig.update_xaxes(type="log", exponentformat="power", dtick=2,
                     title_text="relative error |g_num − g_ana| / max(|g_num|, |g_ana|)", row=1, col=1)
    fig.update_yaxes(title_text="number of weights", row=1, col=1)
    fig.update_xaxes(type="log", autorange="reversed", exponentformat="power", dtick=2,
                     title_text="finite-difference step h", row=1, col=2)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=2)
    fig.update_layout(height=430, margin=dict(l=60, r=20, t=40, b=60), template="plotly_white",
                      legend=dict(orientation="h", x=0, y=1.12, xanchor="left", yanchor="bottom"))
    caption = (f"The three finite differences at {hs.size} steps h from {hs.max():.0e} to {hs.min():.0e}, "
               f"on one network and sample; the informative weights (a non-zero analytical or numerical "
               f"gradient) number {_count_range(sweep.informative)}, as the step h changes.")
    return {"kind": "gradients", "name": "gradients", "title": "Finite differences: the step h", "caption": caption,
            "axes": [{"label": "h", "choices": [f"{v:.1e}" for v in hs], "control": "slider", "value": start}],
            "hs": hs.tolist(), "methods": list(METHODS),
            "counts": {m: np.asarray(sweep.counts[m]).astype(int).tolist() for m in METHODS},
            "median": {m: _finite(sweep.median[m]) for m in METHODS},
            "mean": {m: _finite(sweep.mean[m]) for m in METHODS},
            "informative": np.asarray(sweep.informative).astype(int).tolist(),
            "figure": json.loads(fig.to_json())}


def _control(k: int, axis: dict, element_id: str) -> str:
    label = html.escape(axis["label"])
    if axis["control"] == "slider":
        n = len(axis["choices"])
        value = html.escape(axis["choices"][axis["value"]])
        return (f'<label class="ex3-control">{label} <input type="range" min="0" max="{n - 1}" step="1" '
                f'value="{axis["value"]}" data-axis="{k}" aria-label="{label}"> '
                f'<output id="{element_id}-out{k}">{value}</output></label>')
    buttons = "".join(
        f'<button type="button" data-axis="{k}" data-index="{i}" aria-pressed="{str(i == axis["value"]).lower()}">'
        f'{html.escape(text)}</button>' for i, text in enumerate(axis["choices"]))
    return f'<span class="ex3-control" role="group" aria-label="{label}">{label} {buttons}</span>'


_STYLE = """<style>
.ex3-explorer{border:1px solid #ddd;border-radius:6px;padding:.6em .8em;margin:1em 0;overflow-x:auto}
.ex3-explorer .ex3-controls{display:flex;flex-wrap:wrap;gap:.4em 1.5em;align-items:center;margin:.3em 0}
.ex3-explorer input[type=range]{width:14em;vertical-align:middle}
.ex3-explorer button{margin:0 .15em;padding:.1em .6em;border:1px solid #999;border-radius:4px;background:#fff;
cursor:pointer}
.ex3-explorer button[aria-pressed=true]{background:#1f77b4;color:#fff;border-color:#1f77b4}
.ex3-explorer .ex3-explorer-caption{font-size:.9em;color:#555;margin:0 0 .3em}
.ex3-explorer .ex3-explorer-readout{font-variant-numeric:tabular-nums;margin:.3em 0;min-height:1.5em}
.ex3-explorer .ex3-explorer-plot{min-width:560px}
</style>"""


def element(payload: dict) -> str:
    """The page element of an explorer: controls, readout, figure, its data and the script that wires them.

    The result holds no ``$`` (the book's dollar-maths would read it as TeX)
    and no ``</`` inside the JSON (which would end its script element).
    """
    element_id = f"ex3-explorer-{payload['name']}"
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    data = data.replace("</", "<\\/").replace("$", "\\u0024")
    script = resources.files("ex3lib").joinpath(_SCRIPT).read_text(encoding="utf-8")
    controls = "".join(_control(k, axis, element_id) for k, axis in enumerate(payload["axes"]))
    out = (f'{_STYLE}<div class="ex3-explorer" id="{element_id}" data-kind="{payload["kind"]}">'
           f'<p class="ex3-explorer-caption">{html.escape(payload["caption"])}</p>'
           f'<div class="ex3-controls">{controls}</div>'
           f'<p class="ex3-explorer-readout" aria-live="polite">This explorer needs the book\'s '
           f'{PLOTLY_JS} (it runs on the built site; in Jupyter, use the live explorer below).</p>'
           f'<div class="ex3-explorer-plot"></div>'
           f'<script type="application/json" class="ex3-explorer-data">{data}</script>'
           f'<script>{script}</script></div>')
    if "$" in out:
        raise ValueError("an explorer's HTML must not hold '$' (the book's dollar-maths would take it for TeX)")
    return out


def curves_payload(name: str, title: str, caption: str, x_label: str, x_values, metrics, controls, groups,
                   log_x=False) -> dict:
    """An explorer of curves: each metric against ``x_values``, for the setting the controls select.

    ``controls`` is a list of ``(label, choices)``; ``groups`` maps each
    combination of choice indices (a tuple) to ``{metric: (ys, errs or
    None)}``.  Every setting is drawn thin and grey, the selected one in
    colour with its error bars.  This is what a sweep's ``summary.html``
    shows (:func:`ex3lib.sweep.write_summary_html`).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x = [v if isinstance(v, (int, float)) else str(v) for v in x_values]
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics), horizontal_spacing=0.08)
    for k, metric in enumerate(metrics):  # traces 0 .. n-1: the selected setting, one per metric
        fig.add_trace(go.Scatter(x=x, y=[], mode="lines+markers", line=dict(color="#1f77b4", width=2.5),
                                 error_y=dict(type="data", array=[], visible=True), showlegend=False,
                                 name=metric, hovertemplate=f"{x_label} = %{{x}}: {metric} %{{y:.4g}}<extra></extra>"),
                      row=1, col=k + 1)
    keys = sorted(groups)
    for key in keys:  # then every setting in grey, for context
        label = ", ".join(f"{lab} = {choices[i]}" for (lab, choices), i in zip(controls, key)) or "all points"
        for k, metric in enumerate(metrics):
            ys, _ = groups[key][metric]
            fig.add_trace(go.Scatter(x=x, y=_finite(ys), mode="lines", line=dict(color="#c8c8c8", width=1),
                                     showlegend=False, name=label, hovertemplate=f"{label}<br>{x_label} = %{{x}}: "
                                     f"{metric} %{{y:.4g}}<extra></extra>"), row=1, col=k + 1)
    for k in range(len(metrics)):
        fig.update_xaxes(title_text=x_label, type="log" if log_x else None, row=1, col=k + 1)
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=50, b=60), template="plotly_white")
    data = {",".join(map(str, key)): {m: {"y": _finite(groups[key][m][0]),
                                          "err": None if groups[key][m][1] is None else _finite(groups[key][m][1])}
                                      for m in metrics} for key in keys}
    return {"kind": "curves", "name": name, "title": title, "caption": caption, "metrics": list(metrics),
            "axes": [{"label": lab, "choices": [str(c) for c in choices],
                      "control": "buttons" if len(choices) <= 6 else "slider", "value": 0}
                     for lab, choices in controls],
            "groups": data, "first": ",".join(map(str, keys[0])) if keys else "",
            "figure": json.loads(fig.to_json())}


def write_page(path, title: str, payloads) -> Path:
    """A standalone HTML page of explorers at ``path``, with ``plotly.min.js`` beside it.

    The page loads nothing from outside its folder.  Both files are written
    whole or not at all (:func:`ex3lib.sysutil.atomic_write`).
    """
    from .sysutil import atomic_write

    path = Path(path)
    script = path.parent / PLOTLY_JS
    source = plotly_js_path().read_bytes()
    if not script.is_file() or script.read_bytes() != source:
        atomic_write(script, lambda f: f.write(source))
    body = "".join(element(p) for p in payloads)
    text = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<script defer src="{PLOTLY_JS}"></script></head>'
            f'<body style="font-family:sans-serif;max-width:1200px;margin:1em auto;padding:0 1em">'
            f'<h1 style="font-size:1.3em">{html.escape(title)}</h1>{body}</body></html>\n')
    atomic_write(path, lambda f: f.write(text), mode="w")
    return path
