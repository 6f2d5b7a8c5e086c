"""Interactive explorers for the chapters: sliders that retrain the network and redraw its curves,
and a step slider that redoes the gradient check of one sample."""

from __future__ import annotations

import matplotlib.pyplot as plt

from ._validate import check_int, did_you_mean
from .optimisers import OPTIMISERS
from .plots import plot_metric
from .training import History, RunConfig, run

CONTROLS = ("learning_rate", "batch_size", "epochs", "momentum", "nesterov", "lr_final", "optimiser")


def _widget(name, base, max_epochs, batch_sizes):
    import ipywidgets as w

    style = {"description_width": "initial"}
    common = dict(continuous_update=False, style=style)
    if name == "learning_rate":
        return w.FloatLogSlider(value=base.learning_rate, base=10, min=-4, max=0, step=0.25,
                                description="learning rate η", readout_format=".4f", **common)
    if name == "lr_final":
        return w.FloatLogSlider(value=base.lr_final, base=10, min=-5, max=0, step=0.25,
                                description="final learning rate η_N", readout_format=".5f", **common)
    if name == "batch_size":
        value = base.batch_size if base.batch_size in batch_sizes else batch_sizes[0]
        return w.SelectionSlider(options=list(batch_sizes), value=value, description="batch size m", **common)
    if name == "epochs":
        return w.IntSlider(value=min(base.epochs, max_epochs), min=1, max=max_epochs,
                           description="epochs", **common)
    if name == "momentum":
        return w.FloatSlider(value=base.momentum, min=0.0, max=0.99, step=0.01, description="momentum α",
                             **common)
    if name == "nesterov":
        return w.Checkbox(value=base.nesterov, description="Nesterov", style=style)
    if name == "optimiser":
        return w.Dropdown(options=list(OPTIMISERS), value=base.optimiser, description="optimiser", style=style)
    raise ValueError(f"controls must be taken from {', '.join(CONTROLS)}; got {name!r}")


def _show(out, fig):
    # Replace what the output widget shows by the figure, then free it.
    from IPython.display import display

    out.clear_output(wait=True)
    with out:
        display(fig)
    plt.close(fig)


def explorer(data, base: RunConfig, *, controls=("learning_rate", "batch_size", "epochs"),
             max_epochs=5, batch_sizes=(1, 2, 5, 10, 20, 50, 100), reference=None):
    """Sliders for the ``controls`` of ``base``; each change retrains and redraws loss and accuracy.

    Nothing is trained until a control moves, so building the explorer costs
    nothing in a headless run (the chapter's own figures show the default
    setting).  One epoch at m = 10 retrains in about 1-2 s.

    Parameters
    ----------
    data : MNIST-like object
    base : RunConfig
        The starting setting; the controls change its fields.
    controls : sequence of str
        Which fields get a control, from ``learning_rate``, ``batch_size``,
        ``epochs``, ``momentum``, ``nesterov``, ``lr_final``, ``optimiser``.
    reference : History, optional
        Drawn in grey behind every retrained curve, for comparison.

    Returns
    -------
    ipywidgets.VBox
    """
    import ipywidgets as w

    if not isinstance(base, RunConfig):
        raise TypeError(f"base must be a RunConfig, got {type(base).__name__}")
    if isinstance(controls, str) or not isinstance(controls, (list, tuple)):
        raise TypeError(f"controls must be a list of names from {', '.join(CONTROLS)}, got {controls!r}")
    for name in controls:
        if name not in CONTROLS:
            raise ValueError(f"controls must be taken from {', '.join(CONTROLS)}; got {name!r}"
                             f"{did_you_mean(name, CONTROLS)}")
    check_int("max_epochs", max_epochs, 1)
    if isinstance(batch_sizes, str) or not isinstance(batch_sizes, (list, tuple)) or not batch_sizes:
        raise TypeError(f"batch_sizes must be a non-empty list of batch sizes, got {batch_sizes!r}")
    for i, m in enumerate(batch_sizes):
        check_int(f"batch_sizes[{i}]", m, 1)
    if reference is not None and not isinstance(reference, History):
        raise TypeError(f"reference must be an ex3lib.History or None, got {type(reference).__name__}")
    knobs = {name: _widget(name, base, max_epochs, batch_sizes) for name in controls}
    out = w.Output()
    status = w.HTML("Move a control to train with that setting.")

    def retrain(_change=None):
        try:
            config = base.replace(**{name: knob.value for name, knob in knobs.items()})
        except (TypeError, ValueError) as exc:
            status.value = f"<b>Not trained:</b> {exc}"
            return
        status.value = f"Training {config.label} for {config.epochs} epoch(s)…"
        hist = run(config, data, progress=False)
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
        for metric, ax in (("loss", left), ("test_accuracy", right)):
            if reference is not None:
                plot_metric(ax, [reference], metric, label="reference", colour="0.7")
            plot_metric(ax, [hist], metric, label=config.label)
        right.legend(loc="lower right")
        _show(out, fig)
        verdict = f"diverged: {hist.reason}" if hist.diverged else f"test accuracy {hist.final_accuracy:.4f}"
        status.value = f"{config.label}: {verdict} ({hist.seconds:.1f} s)"

    for knob in knobs.values():
        knob.observe(retrain, names="value")
    return w.VBox([w.HBox(list(knobs.values())[:3]), w.HBox(list(knobs.values())[3:]), status, out])


def gradcheck_explorer(net, x, y, *, h=1e-8, report=None):
    """A step slider and a layer menu that recompute the gradient check of one sample and redraw its histogram.

    Nothing is computed until a control moves, so building the explorer costs
    nothing in a headless run.  A check of every weight takes well under a
    second.

    Parameters
    ----------
    net : MLP (float64)
    x : ndarray, shape (784,)
        The sample.
    y : int
        Its label.
    h : float
        The slider's starting step.
    report : dict, optional
        The report's mean relative error per method, drawn as dotted lines.

    Returns
    -------
    ipywidgets.VBox

    Examples
    --------
    >>> gradcheck_explorer(MLP(seed=0), data.x_train[0], int(data.y_train[0]))  # doctest: +SKIP
    """
    import ipywidgets as w

    from .gradcheck import gradcheck
    from .plots import rel_errors

    slider = w.FloatLogSlider(value=h, base=10, min=-12, max=-1, step=0.25, description="step h",
                              readout_format=".1e", continuous_update=False)
    menu = w.Dropdown(options=[("all layers", None)] + [(f"layer {l}", l) for l in range(len(net.weights))],
                      value=None, description="layer")
    status = w.HTML("Move the slider or choose a layer to recompute the check.")
    out = w.Output()

    def recheck(_change=None):
        check = gradcheck(net, x, y, h=slider.value, layers=menu.value)
        fig = rel_errors(check, report=report, figsize=(7.5, 3.4))
        _show(out, fig)
        status.value = f"h = {slider.value:.1e}, {int(check.informative('central').sum()):,} informative weights"

    slider.observe(recheck, names="value")
    menu.observe(recheck, names="value")
    return w.VBox([w.HBox([slider, menu]), status, out])
