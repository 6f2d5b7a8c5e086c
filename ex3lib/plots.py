"""Figures shared by the chapters: one idea per figure, the same colour for the same method throughout."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import PercentFormatter

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
