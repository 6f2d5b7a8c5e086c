"""Tables the chapters show: our runs beside the report's numbers, as pandas Stylers ready to glue.

Every function takes runs (lists of :class:`ex3lib.History`) and returns a
``pandas.io.formats.style.Styler`` (its ``.data`` is the DataFrame); the
numbers come from :mod:`ex3lib.experiments` and :mod:`ex3lib.analysis`, the
report's from :mod:`ex3lib.report`.

>>> glue("tab_sgd_table2", tables.sgd_table2(runs), display=False)    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .experiments import failed, fate, finals, mean_std, runs_at, seeds_or_each, seeds_text, setting_label, summarise
from .report import SECONDS_PER_RUN, TABLE1, TABLE2


def _frame(rows, **kwargs):
    import pandas as pd

    return pd.DataFrame(rows, **kwargs)


def sgd_table2(histories):
    """The report's Table 2 beside ours: final loss and accuracy (mean ± std), seconds and diverged seeds per setting."""
    summary = summarise(histories)
    for name in ("learning_rate", "batch_size"):
        if name not in summary:  # summarise leaves out a field that does not vary
            summary[name] = histories[0].config[name]
    rows = []
    for _, r in summary.iterrows():
        lr, m = float(r["learning_rate"]), int(r["batch_size"])
        rep_loss, rep_acc, rep_sec = TABLE2.get((lr, m), (None, np.nan, np.nan))
        rows.append({"η": f"{lr:g}", "m": m, "loss (ours)": mean_std(r["loss_mean"], r["loss_std"]),
                     "loss (report)": "nan" if rep_loss is None else f"{rep_loss:g}",
                     "test accuracy (ours)": mean_std(r["accuracy_mean"], r["accuracy_std"]),
                     "test accuracy (report)": f"{rep_acc:.3f}", "time s (ours)": f"{r['seconds_mean']:.1f}",
                     "time s (report)": f"{rep_sec:,.0f}", "diverged": f"{int(r['diverged'])} of {int(r['seeds'])}"})
    return _frame(rows).style.hide(axis="index")


FATES = {"overflow": "overflow (nan)", "dead": "dead network", "chance": "ran to the end", "trained": "ran to the end"}


def collapse(histories):
    """Each seed of a failing setting: how it ended, where, its last loss and accuracy, and the library's reason."""
    return _frame({
        "seed": [int(h.config["seed"]) for h in histories],
        "fate": [FATES[fate(h)] for h in histories],
        "stopped at epoch": [f"{h.epoch[-1]:.3f}" for h in histories],
        "final loss": [f"{h.final_loss:.5f}" if np.isfinite(h.final_loss) else "nan" for h in histories],
        "final test accuracy": [f"{h.final_accuracy:.4f}" for h in histories],
        "what the library recorded": [h.reason if h.diverged else "not flagged" for h in histories],
    }).style.hide(axis="index")
