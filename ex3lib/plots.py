"""Figures shared by the chapters: one idea per figure, the same colour for the same method throughout."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import PercentFormatter

from .experiments import seed_stats

# One colour per learning rate and one per method, so a reader can follow them across chapters.
LR_COLOURS = {0.1: "tab:red", 0.01: "tab:blue", 0.001: "tab:green", 0.0001: "tab:purple"}
METHOD_COLOURS = {"forward": "tab:blue", "backward": "tab:green", "central": "tab:red",
                  "SGD": "tab:gray", "momentum": "tab:orange", "Nesterov": "tab:brown",
                  "AdaGrad": "tab:purple", "RMSProp": "tab:pink", "Adam": "tab:olive"}


def colour_for(learning_rate=None, method=None):
    """The book's colour for a learning rate or a method name (None if it has none)."""
    if method is not None:
        return METHOD_COLOURS.get(method.split()[0])
    return LR_COLOURS.get(learning_rate)


def plot_metric(ax, histories, metric="test_accuracy", *, label=None, colour=None, spread=True):
    """Mean curve of ``metric`` against epoch over ``histories`` (seeds), with their min-max band.

    Histories that stopped early (diverged) are drawn up to where they stopped.
    The untrained point (epoch 0) is plotted for accuracy and for the training
    loss, which is measured there (unlike the report's figures, which plot 0).
    """
    if not histories:
        raise ValueError("histories must hold at least one History")
    n = min(len(h.epoch) for h in histories)
    epoch = histories[0].epoch[:n]
    values = np.array([getattr(h, metric)[:n] for h in histories], dtype=float)
    mean = values.mean(axis=0)
    line, = ax.plot(epoch, mean, label=label, color=colour)
    if spread and len(histories) > 1:
        ax.fill_between(epoch, values.min(axis=0), values.max(axis=0), color=line.get_color(),
                        alpha=0.2, linewidth=0)
    ax.set_xlabel("epoch")
    if metric == "test_accuracy":
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylabel("test accuracy")
    elif metric == "loss":
        ax.set_ylabel("training loss (mean cross-entropy)")
    elif metric == "test_loss":
        ax.set_ylabel("test loss (mean cross-entropy)")
    ax.grid(alpha=0.3)
    return line


def loss_and_accuracy(histories, *, title=None, figsize=(9, 3.6)):
    """Two panels, training loss and test accuracy against epoch (the report's Fig. 2 and 6)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    plot_metric(left, histories, "loss")
    plot_metric(right, histories, "test_accuracy")
    if title:
        fig.suptitle(title)
    return fig


def curves(groups, *, figsize=(9, 3.6), acc_ylim=None, acc_xlim=None, loss_label=None, legend=None,
           title=None):
    """Training loss (left, log scale) and test accuracy (right) of several groups of runs.

    Parameters
    ----------
    groups : list of tuple
        ``(histories, label, colour, linestyle)`` per group (the seeds of one
        setting, drawn as mean and min-max band); ``linestyle`` None for solid.
    acc_ylim, acc_xlim : (low, high), optional
        Limits of the accuracy panel.
    loss_label : str, optional
        A y label for the loss panel other than :func:`plot_metric`'s.
    legend : dict or "figure", optional
        Keyword arguments of the accuracy panel's legend (at the lower right),
        or ``"figure"`` for one legend below both panels.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = curves([(runs, "SGD η=0.1 m=10", colour_for(method="SGD"), None)])  # doctest: +SKIP
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    for histories, label, colour, linestyle in groups:
        for ax, metric in ((left, "loss"), (right, "test_accuracy")):
            line = plot_metric(ax, histories, metric, label=label, colour=colour)
            if linestyle:
                line.set_linestyle(linestyle)
    left.set_yscale("log")
    if loss_label:
        left.set_ylabel(loss_label)
    if acc_ylim is not None:
        right.set_ylim(*acc_ylim)
    if acc_xlim is not None:
        right.set_xlim(*acc_xlim)
    if legend == "figure":
        fig.legend(*right.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    else:
        right.legend(loc="lower right", **(legend or {}))
    if title:
        fig.suptitle(title)
    return fig


def late_limits(groups, start=1, low_pad=0.005, high_pad=0.003):
    """Accuracy limits that fit every run's test accuracy from epoch ``start`` on, padded."""
    late = [h.test_accuracy[h.epoch >= start] for hs in groups for h in hs]
    return (max(min(np.nanmin(a) for a in late) - low_pad, 0.0), min(max(np.nanmax(a) for a in late) + high_pad, 1.0))


def accuracy(groups, *, xlim=None, figsize=(7.5, 3.8)):
    """Test accuracy of several groups ``(histories, label, colour, linestyle)`` in one panel, zoomed on epochs ≥ 1."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    for histories, label, colour, linestyle in groups:
        line = plot_metric(ax, histories, "test_accuracy", label=label, colour=colour)
        if linestyle:
            line.set_linestyle(linestyle)
    ax.set_ylim(*late_limits([g[0] for g in groups]))
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def _each_seed(ax, histories, colour, label):
    # Mean and min-max band over seeds; each seed, × where it stopped, when a run stopped early.
    if any(h.diverged for h in histories):
        for i, h in enumerate(histories):
            ax.plot(h.epoch, h.test_accuracy, color=colour, lw=1, alpha=0.8,
                    label=f"{label} (each seed; × = stopped)" if i == 0 else None)
            if h.diverged:
                ax.plot(h.epoch[-1], h.test_accuracy[-1], "x", color=colour, ms=8, mew=2)
    else:
        plot_metric(ax, histories, "test_accuracy", colour=colour, label=label)


def accuracy_grid(histories, learning_rates, batch_sizes):
    """The report's Fig. 7: test accuracy per learning rate, a column per batch size, full and zoomed rows.

    A setting is drawn as mean and band over its seeds, or seed by seed with
    × where a run stopped when one of them diverged.  The zoomed row starts at
    the worst final accuracy of a setting with no failed seed, rounded down
    to 5 %, at most 85 %.
    """
    from .analysis import ok_settings

    ok = ok_settings(histories)
    zoom_low = min(0.85, np.floor(20 * min(a.min() for a in ok.values())) / 20) if ok else 0.0
    fig, axes = plt.subplots(2, len(batch_sizes), figsize=(4 * len(batch_sizes), 6.2), sharex=True,
                             squeeze=False, layout="constrained")
    for j, m in enumerate(batch_sizes):
        for row in range(2):
            ax = axes[row, j]
            for lr in learning_rates:
                runs = [h for h in histories if h.config["learning_rate"] == lr and h.config["batch_size"] == m]
                _each_seed(ax, runs, colour_for(lr), f"η = {lr:g}")
            ax.set_ylim((0.0, 1.0) if row == 0 else (zoom_low, 1.0))
            if j > 0:
                ax.set_ylabel("")
            if row == 0:
                ax.set_xlabel("")
                ax.set_title(f"m = {m}")
        axes[0, j].legend(loc="lower right", fontsize=7)
    axes[1, 0].set_ylabel("test accuracy (zoomed)")
    return fig


def by_batch_size(panels, batch_sizes, *, ylim, figsize, title=None, legend="first"):
    """One panel of test-accuracy curves per batch size.

    ``panels(m)`` lists the ``(histories, label, colour, linestyle, alpha)`` to
    draw at batch size m.  ``legend`` is ``"first"`` (in the first panel) or
    ``"figure"`` (one legend below the panels).
    """
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=figsize, sharey=True, layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, batch_sizes):
        for histories, label, colour, linestyle, alpha in panels(m):
            line = plot_metric(ax, histories, "test_accuracy", label=label, colour=colour)
            if linestyle:
                line.set_linestyle(linestyle)
            if alpha is not None:
                line.set_alpha(alpha)
        ax.set_title(title(m) if title else f"m={m}")
        ax.set_ylim(*ylim)
    return fig, axes


def long_run(long_runs, epochs, long_epochs, colour, label):
    """The report's Fig. 3: the test accuracy of each seed and their mean over a long run, from epoch 0.5."""
    fig, ax = plt.subplots(figsize=(9, 3.6), layout="constrained")
    for i, h in enumerate(long_runs):
        ax.plot(h.epoch, h.test_accuracy, color=colour, alpha=0.35, lw=0.9, label="each seed" if i == 0 else None)
    plot_metric(ax, long_runs, "test_accuracy", colour=colour, spread=False,
                label=f"{label}, mean of {len(long_runs)} seeds")
    ax.axvspan(epochs, long_epochs, color="0.9", zorder=0, label=f"epochs {epochs}–{long_epochs}")
    late = np.concatenate([h.test_accuracy[h.epoch >= 1] for h in long_runs])
    if late.size:  # empty only if every seed stopped within the first epoch
        ax.set_ylim(late.min() - 0.005, min(1.0, late.max() + 0.005))
    ax.set_xlim(0.5, long_epochs)
    ax.set_xticks(range(1, long_epochs + 1))
    ax.legend(loc="lower right", fontsize=8)
    return fig


def overflow(ks, loss, n_updates, label):
    """Test loss of reruns stopped ``ks`` updates in, against updates before the loss became nan (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    ax.semilogy(np.array(ks) - n_updates, loss, "o-", color=colour_for(0.1), label=label)
    ax.set_xlabel(f"updates before the loss became nan (at update {n_updates:,})")
    ax.set_ylabel("test loss (mean cross-entropy, nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def message(text, figsize=(7, 1.5)):
    """A figure that only says ``text``: what a chapter shows where its parameters leave nothing to plot."""
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.axis("off")
    return fig


def accuracy_vs_ratio(settings):
    """Final test accuracy against the step per sample η/m; ``settings`` maps (η, m) to final accuracies.

    Colour: η; marker: m; error bar: ± one std over seeds; dots: single seeds;
    settings with equal η/m are dodged sideways.
    """
    markers = {1: "o", 10: "s", 100: "^"}
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for (lr, m), a in settings.items():
        r = lr / m * {1: 0.8, 10: 1.0, 100: 1.25}.get(m, 1.0)
        ax.errorbar(r, a.mean(), yerr=seed_stats(a)[1] if len(a) > 1 else None, fmt=markers.get(m, "D"),
                    color=colour_for(lr), ms=7, capsize=3, label=f"η = {lr:g}, m = {m}")
        ax.plot(np.full(len(a), r), a, ".", color=colour_for(lr), alpha=0.5, ms=4)
    ax.set_xscale("log")
    ax.set_xlabel("η / m, step per sample seen (Eq. 4)")
    ax.set_ylabel("final test accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=2, loc="lower right")
    return fig


def schedules(items, epochs):
    """The learning rate in force during each epoch for each ``(Schedule, label, colour, linestyle)``."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    for sched, label, colour, ls in items:
        ax.stairs([sched.learning_rate_at(k) for k in range(epochs)], np.arange(epochs + 1), baseline=None,
                  color=colour, linestyle=ls, linewidth=1.8, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate η_k")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3, which="both")
    return fig


LAYER_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")


def effective_steps(runs, layer_names):
    """Median (solid) and 10th/90th percentiles (dotted) of each layer's effective step, a panel per method.

    ``runs`` maps a method name to its runs; the first (seed 0) is drawn, from
    its first logged point on.
    """
    fig, axes = plt.subplots(1, len(runs), figsize=(12, 3.8), layout="constrained")
    for ax, (name, hs) in zip(axes, runs.items()):
        h = hs[0]
        steps = np.array(h.extra["effective_step"])  # (points, layers, percentiles 10/50/90)
        for l, (lname, c) in enumerate(zip(layer_names, LAYER_COLOURS)):
            ax.plot(h.epoch[1:], steps[1:, l, 1], color=c, label=lname, marker="o", markersize=3)
            for q in (0, 2):
                ax.plot(h.epoch[1:], steps[1:, l, q], color=c, linestyle=":", linewidth=1)
        ax.set_title(f"{name} η={h.config['learning_rate']:g} m={h.config['batch_size']} (seed 0)")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes:
        ax.set_ylabel("effective step per unit gradient")
    axes[0].legend(loc="upper right", title="layer")
    return fig


def pixel_steps(history, activity):
    """AdaGrad's final first-layer step by pixel: as an image, and against how often the pixel is non-zero."""
    from matplotlib.colors import LogNorm

    step = np.array(history.extra["first_layer_step_by_input"])
    never = activity == 0
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained",
                                      gridspec_kw={"width_ratios": [1, 1.4]})
    im = left.imshow(np.where(never, np.nan, step).reshape(28, 28), cmap="viridis", norm=LogNorm())
    left.set_title("first-layer step by pixel\n(white: pixel always 0)")
    left.set_xticks([])
    left.set_yticks([])
    fig.colorbar(im, ax=left, label="mean effective step")
    right.scatter(activity[~never], step[~never], s=6, color=colour_for(method="AdaGrad"))
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("fraction of training images in which the pixel is non-zero")
    right.set_ylabel("mean effective step of its 300 weights")
    cfg = history.config
    right.set_title(f"AdaGrad η={cfg['learning_rate']:g} m={cfg['batch_size']}, after {cfg['epochs']} epochs")
    right.grid(alpha=0.3)
    return fig


def digits(images, labels, n_cols=10):
    """A grid of images (rows of 784 pixels in [0, 1]), each titled with its label."""
    n = len(images)
    n_cols = min(n_cols, n)
    n_rows = -(-n // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.95 * n_cols, 1.1 * n_rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels):
        ax.imshow(image.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{label}", fontsize=9)
    return fig


def class_balance(train_counts, test_counts):
    """Share of each digit in the training and test sets (bars), against perfect balance (10 %)."""
    digits_ = np.arange(len(train_counts))
    n_train, n_test = int(train_counts.sum()), int(test_counts.sum())
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    width = 0.4
    ax.bar(digits_ - width / 2, 100 * train_counts / n_train, width, label=f"training ({n_train:,} images)",
           color="tab:gray")
    ax.bar(digits_ + width / 2, 100 * test_counts / n_test, width, label=f"test ({n_test:,} images)",
           color="tab:cyan")
    ax.axhline(10, color="k", lw=0.8, ls="--", label="perfect balance (10%)")
    ax.set_xticks(digits_)
    ax.set_xlabel("digit (class)")
    ax.set_ylabel("share of the images (%)")
    ax.set_ylim(0, 14)
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    return fig


def layer_names(layers):
    """Display names of a network's layers: input, hidden 1..L-1 (ReLU), output (softmax)."""
    return (["input\n(pixels)"] + [f"hidden {l}\nReLU" for l in range(1, len(layers) - 1)]
            + ["output\nsoftmax"])


def network(net):
    """The architecture of an :class:`ex3lib.MLP`: a box per layer (area grows with its width), an arrow per weight matrix."""
    layers, shapes, names = net.layers, [w.shape for w in net.weights], layer_names(net.layers)
    fig, ax = plt.subplots(figsize=(9, 3.8), layout="constrained")
    x_pos = np.arange(len(layers)) * 2.2
    heights = 3.0 * np.sqrt(np.array(layers) / max(layers))
    for x, n, h, name in zip(x_pos, layers, heights, names):
        colour = "tab:gray" if name.startswith("input") else ("tab:purple" if name.startswith("output")
                                                               else "tab:blue")
        ax.add_patch(plt.Rectangle((x - 0.35, -h / 2), 0.7, h, facecolor=colour, alpha=0.25,
                                   edgecolor=colour, lw=1.5))
        ax.text(x, 0, f"{n:,}", ha="center", va="center", fontsize=12, fontweight="bold")
        ax.text(x, -1.75, name, ha="center", va="top", fontsize=9)
    for l, ((n_in, n_out), x0, x1, h0, h1) in enumerate(zip(shapes, x_pos[:-1], x_pos[1:], heights[:-1],
                                                          heights[1:]), start=1):
        for f0, f1 in ((0.45, 0.45), (-0.45, -0.45), (0.45, -0.45), (-0.45, 0.45)):
            ax.plot([x0 + 0.35, x1 - 0.35], [f0 * h0, f1 * h1], color="0.6", lw=0.6)
        ax.annotate("", xy=(x1 - 0.4, 1.75), xytext=(x0 + 0.4, 1.75),
                    arrowprops=dict(arrowstyle="->", color="k", lw=1))
        ax.text((x0 + x1) / 2, 1.9, f"$W_{l}$: {n_in}×{n_out}\n= {n_in * n_out:,}", ha="center",
                va="bottom", fontsize=9)
    ax.set_xlim(x_pos[0] - 1, x_pos[-1] + 1)
    ax.set_ylim(-2.6, 2.7)
    ax.axis("off")
    ax.set_title(f"{'-'.join(map(str, layers))} network: {net.n_params:,} weights, no biases", fontsize=11)
    return fig


GRADCHECK_METHODS = ("forward", "backward", "central")


def gradcheck_bars(summary, report, title):
    """Mean and median relative error of each finite difference beside the report's means (log axis).

    ``summary`` is :func:`ex3lib.gradcheck.summary` (``mean_<method>``,
    ``median_<method>``); ``report[method]`` the report's mean.
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.6), layout="constrained")
    width, xs = 0.26, np.arange(len(GRADCHECK_METHODS))
    kinds = [("report (Fig. 4), mean", [report[m] for m in GRADCHECK_METHODS], dict(hatch="//", alpha=0.45)),
             ("ours, mean", [summary[f"mean_{m}"] for m in GRADCHECK_METHODS], dict(alpha=1.0)),
             ("ours, median", [summary[f"median_{m}"] for m in GRADCHECK_METHODS], dict(alpha=0.7, hatch=".."))]
    for i, (label, values, style) in enumerate(kinds):
        bars = ax.bar(xs + (i - 1) * width, values, width, color=[colour_for(method=m) for m in GRADCHECK_METHODS],
                      edgecolor="black", linewidth=0.6, **style)
        for b, v in zip(bars, values):
            ax.annotate(f"{v:.1e}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
        ax.bar([np.nan], [np.nan], color="white", edgecolor="black", label=label,
               **{k: v for k, v in style.items() if k == "hatch"})
    ax.set_xticks(xs, GRADCHECK_METHODS)
    ax.set_yscale("log")
    ax.set_ylabel("relative error (dimensionless)")
    ax.set_title(title)
    ax.set_ylim(1e-6, 1.0)
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax.grid(alpha=0.3, axis="y")
    return fig


REL_ERROR_BINS = np.logspace(-8, 0, 65)


def rel_errors(check, report=None, figsize=(7.5, 3.6)):
    """Histogram of the relative errors of a :class:`ex3lib.gradcheck.GradCheck`, one line per method.

    Log axis; errors below 1e-8 are counted in the first bin; dotted lines at
    the ``report``'s mean for each method, if given.
    """
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    bins = REL_ERROR_BINS
    for m in GRADCHECK_METHODS:
        r = check.rel_error(m)
        ax.hist(np.clip(r, bins[0], None), bins=bins, histtype="step", linewidth=1.5, color=colour_for(method=m),
                label=f"{m}: median {np.median(r):.1e}, mean {r.mean():.1e}")
        if report is not None:
            ax.axvline(report[m], color=colour_for(method=m), linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("relative error |g_num − g_ana| / max(|g_num|, |g_ana|)")
    ax.set_ylabel("number of weights")
    ax.set_title(f"{int(check.informative('central').sum()):,} informative weights, h = {check.h:g}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return fig


def h_sweep(sweep, h):
    """Median (left, with guides of slope 1, 2 and −1) and mean (right) relative error against the step.

    ``sweep`` is an :class:`ex3lib.gradcheck.HSweep`; the dashed line marks ``h``.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained", sharey=True)
    for ax, values, title in ((axes[0], sweep.median, "median over informative weights"),
                              (axes[1], sweep.mean, "mean over informative weights (h_sweep)")):
        for m in GRADCHECK_METHODS:
            ax.loglog(sweep.hs, values[m], marker=".", color=colour_for(method=m), label=m)
        ax.axvline(h, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel("finite-difference step h")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.invert_xaxis()
    for (top, bottom, n), scale, power, text, at in (
            ((-1, -3, 5), 1.5e-4, 1, "slope 1", (2e-3, 1.5e-5)),
            ((np.log10(3e-2), np.log10(3e-3), 5), 1e-7, 2, "slope 2", (3e-3, 9e-9)),
            ((-7, -10, 5), 3e-5, -1, "slope −1 (∝ 1/h)", (1e-9, 1.5e-4))):
        guide = np.logspace(top, bottom, n)
        axes[0].loglog(guide, scale * (guide / 1e-2) ** power if power > 0 else scale * (1e-8 / guide),
                       color="0.3", linestyle=":", linewidth=1.5)
        axes[0].annotate(text, at, fontsize=8, color="0.3", ha="left", va="top")
    for ax in axes:
        ax.text(h, 0.02, f" report's h = {h:g}", transform=ax.get_xaxis_transform(), fontsize=8, ha="left")
    axes[0].set_ylabel("relative error (dimensionless)")
    axes[0].legend(title="difference", fontsize=8)
    return fig


def schedule_label(config) -> str:
    """``"constant η = 0.1"`` or ``"decay η = 0.1 → 0.001"`` for a run's configuration (a dict)."""
    if config["schedule"] == "constant":
        return f"constant η = {config['learning_rate']:g}"
    return f"decay η = {config['learning_rate']:g} → {config['lr_final']:g}"


def schedule_style(config, linestyles):
    """Colour by the initial learning rate, line style by the final one: ``linestyles[η_N]``
    (``linestyles[None]`` for a constant rate; dash-dot for a final rate it lacks)."""
    final = None if config["schedule"] == "constant" else config["lr_final"]
    return colour_for(learning_rate=config["learning_rate"]), linestyles.get(final, "-.")


def combined(comb_ok, decay_ok, batch_sizes, momentum, title):
    """Test accuracy of the decay with plain SGD and with momentum, a panel per batch size where either survived.

    ``comb_ok[m]``/``decay_ok[m]`` are the runs that did not fail; ``title(m)`` titles a panel.
    """
    shown = [m for m in batch_sizes if comb_ok[m] or decay_ok[m]]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(4 * max(len(shown), 1) + 1, 3.6), sharey=True,
                             layout="constrained", squeeze=False)
    for ax, m in zip(axes[0], shown):
        if decay_ok[m]:
            plot_metric(ax, decay_ok[m], "test_accuracy", label=f"SGD + decay m={m}", colour=colour_for(method="SGD"))
        if comb_ok[m]:
            plot_metric(ax, comb_ok[m], "test_accuracy", label=f"momentum α={momentum:g} + decay m={m}",
                        colour=colour_for(method="momentum"))
        ax.set_title(title(m))
        ax.set_ylim(0.9, 1.0)
        ax.legend(loc="lower right", fontsize="small")
    return fig


def _method_style(name):
    """Colour and line style of a protocol method: the method's colour, dashed with decay."""
    return colour_for(method=name), "--" if "decay" in name else "-"


def lr_sensitivity(tables, selected, declared=None):
    """Final validation accuracy against η for each method (``tables[name]``: :func:`ex3lib.protocol.lr_sensitivity`).

    ``selected[name]`` is the η the protocol picked, ringed; failed runs are
    crosses, drawn at the bottom edge when they ended below ``low`` (chance level).
    ``declared``, the (lowest, highest) η of the declared grid, is shaded, so
    that the points of a grid extended past its edges stand out.
    """
    low = 0.85
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    if declared is not None:
        ax.axvspan(*declared, color="0.93", zorder=0, label="declared grid")
    for name, table in tables.items():
        colour, linestyle = _method_style(name)
        bad = table["failed"].to_numpy()
        ok = table[~bad]
        ax.plot(ok["learning_rate"], ok["mean"], linestyle, color=colour, marker="o", markersize=4, label=name)
        ax.plot(table["learning_rate"][bad], np.maximum(table["mean"][bad], low + 0.002), "x", color=colour,
                markersize=9, mew=2, clip_on=False)
        pick = table[table["learning_rate"] == selected[name]]
        ax.plot(pick["learning_rate"], pick["mean"], "o", markersize=12, mfc="none", mec=colour, mew=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate η (η₀ with decay)")
    ax.set_ylabel("final validation accuracy")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(low, 1.0)
    ax.legend(loc="lower center", ncols=3, fontsize="small")
    return fig


def seed_strip(runs, metric="test_accuracy", level=0.95):
    """Every seed's final ``metric`` (dots) of each method (``runs[name]``), with the mean and its CI (bar)."""
    from .protocol import seed_summary

    fig, ax = plt.subplots(figsize=(8, 0.55 * len(runs) + 1.2), layout="constrained")
    for k, (name, hs) in enumerate(runs.items()):
        values = np.array([float(getattr(h, metric)[-1]) for h in hs])
        s = seed_summary(values, level)
        colour, _ = _method_style(name)
        ax.plot(values, np.full(values.size, k), "o", color=colour, alpha=0.6, markersize=5)
        ax.errorbar([s.mean], [k], xerr=[[s.mean - s.ci[0]], [s.ci[1] - s.mean]], fmt="|", color="black",
                    markersize=14, capsize=4)
    ax.set_yticks(range(len(runs)), list(runs))
    ax.invert_yaxis()
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_xlabel(f"final test accuracy (each seed; black: mean and {100 * level:g} % confidence interval)")
    return fig


def sharpness(measurements):
    """λ_max of the Hessian at the end of training against m, one panel per group (equal η/m, equal η)."""
    groups = list(dict.fromkeys(r["group"] for r in measurements))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.6), layout="constrained",
                             sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        rows = [r for r in measurements if r["group"] == group]
        ms = sorted({r["batch_size"] for r in rows})
        ax.plot([r["batch_size"] for r in rows], [r["top_eigenvalue"] for r in rows], "o", color="tab:gray",
                alpha=0.6, label="each seed")
        ax.plot(ms, [np.exp(np.mean([np.log(r["top_eigenvalue"]) for r in rows if r["batch_size"] == m]))
                     for m in ms], "-", color="black", label="geometric mean")
        for m in ms:
            lr = next(r["learning_rate"] for r in rows if r["batch_size"] == m)
            top = max(r["top_eigenvalue"] for r in rows if r["batch_size"] == m)
            ax.annotate(f"η={lr:g}", (m, top), textcoords="offset points", xytext=(0, 6), ha="center",
                        fontsize="small")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(min(ms) / 1.8, max(ms) * 1.8)  # room for the η labels at both ends
        ax.margins(y=0.2)
        ax.set_xlabel("batch size m")
        ax.set_title(group)
    axes[0][0].set_ylabel("λ_max of the training loss's Hessian")
    axes[0][0].legend(loc="upper left", fontsize="small")
    return fig


def line_losses(lines):
    """Training loss along the line (1 − α) w_small + α w_large (``lines[label]``: a hessian.LineLosses)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
    for label, line in lines.items():
        ax.plot(line.alphas, line.loss, marker=".", label=label)
    ax.axvline(0, color="tab:gray", lw=0.8, ls=":")
    ax.axvline(1, color="tab:gray", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("α (0: the small-batch solution, 1: the large-batch one)")
    ax.set_ylabel("training loss (mean cross-entropy)")
    ax.legend(loc="upper center", fontsize="small")
    return fig


def against_updates(groups, *, figsize=(10, 3.6), acc_ylim=None):
    """Training loss (left) and test accuracy (right) against the number of updates (``extra["updates_at"]``).

    ``groups`` as :func:`curves`: ``(histories, label, colour, linestyle)``; each seed is drawn.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize, layout="constrained")
    for histories, label, colour, linestyle in groups:
        for i, h in enumerate(histories):
            updates = np.asarray(h.extra["updates_at"], dtype=float)
            for ax, metric in ((left, "loss"), (right, "test_accuracy")):
                ax.plot(updates, getattr(h, metric), linestyle or "-", color=colour, alpha=0.8,
                        label=label if i == 0 else None)
    left.set_yscale("log")
    left.set_ylabel("training loss (mean cross-entropy)")
    right.set_ylabel("test accuracy")
    right.yaxis.set_major_formatter(PercentFormatter(1.0))
    if acc_ylim:
        right.set_ylim(*acc_ylim)
    for ax in (left, right):
        ax.set_xlabel("updates")
    right.legend(loc="lower right", fontsize="small")
    return fig
