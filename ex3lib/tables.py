"""Tables the chapters show: our runs beside the report's numbers, as pandas Stylers ready to glue.

Every function takes runs (lists of :class:`ex3lib.History`) and returns a
``pandas.io.formats.style.Styler`` (its ``.data`` is the DataFrame); the
numbers come from :mod:`ex3lib.experiments` and :mod:`ex3lib.analysis`, the
report's from :mod:`ex3lib.report`.

>>> glue("tab_sgd_table2", tables.sgd_table2(runs), display=False)    # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .experiments import (by_setting, failed, fate, finals, mean_std, runs_at, seeds_or_each, seeds_text, setting_label,
                          summarise)
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


def _fate_text(h) -> str:
    # An overflow whose last loss is still finite blew up beyond the divergence bound.
    if fate(h) == "overflow" and np.isfinite(h.final_loss):
        return f"blew up (loss {h.final_loss:.3g})"
    return FATES[fate(h)]


def collapse(histories):
    """Each seed of a failing setting: how it ended, where, its last loss and accuracy, and the library's reason."""
    return _frame({
        "seed": [int(h.config["seed"]) for h in histories],
        "fate": [_fate_text(h) for h in histories],
        "stopped at epoch": [f"{h.epoch[-1]:.3f}" for h in histories],
        "final loss": [f"{h.final_loss:.5f}" if np.isfinite(h.final_loss) else "nan" for h in histories],
        "final test accuracy": [f"{h.final_accuracy:.4f}" for h in histories],
        "what the library recorded": [h.reason if h.diverged else "not flagged" for h in histories],
    }).style.hide(axis="index")


def scientific(frame, counts=(), plain=()):
    """``frame`` styled with two significant decimals in scientific notation, except ``counts``
    (thousands separators) and ``plain`` columns (as they are)."""
    fmt = {c: "{:.2e}" for c in frame.columns if c not in counts and c not in plain}
    fmt.update({c: "{:,}" for c in counts})
    return frame.style.format(fmt)


def decay_table1(decay_runs, constant_runs):
    """The report's Table 1 beside the decay's runs (mean ± std) and the constant rate η₀ at the same m and seeds.

    One row per decay setting, indexed by (η0, η_N, m); "failed" counts the
    seeds that :func:`ex3lib.experiments.failed`; where a seed's loss is not
    finite every seed's value is listed.  Returns a DataFrame.
    """
    rows = []
    for hs in by_setting(decay_runs).values():
        cfg = hs[0].config
        lr, lr_final, m = cfg["learning_rate"], cfg["lr_final"], cfg["batch_size"]
        report = TABLE1.get((lr, lr_final, m))
        const = runs_at(constant_runs, learning_rate=lr, batch_size=m)
        rows.append({
            "η0": lr, "η_N": lr_final, "m": m,
            "report avg loss": "—" if report is None else f"{report[0]:.3f}",
            "ours avg loss": seeds_or_each(finals(hs, "loss"), 3),
            "report test acc": "—" if report is None else f"{report[1]:.3f}",
            "ours test acc": seeds_or_each(finals(hs), 4),
            "failed": f"{sum(map(failed, hs))}/{len(hs)}",
            f"constant η={lr:g} avg loss": seeds_or_each(finals(const, "loss"), 3),
            f"constant η={lr:g} test acc": seeds_or_each(finals(const), 4),
            "constant failed": f"{sum(map(failed, const))}/{len(const)}",
        })
    return _frame(rows).set_index(["η0", "η_N", "m"])


def schedules_table(groups, late_start):
    """Per group of runs (one schedule, several seeds): final loss and accuracy, and the late zig-zag.

    The zig-zag is :func:`ex3lib.analysis.late_wiggle` after ``late_start``,
    mean |step| and largest drop of the test accuracy in percentage points.
    Returns a DataFrame indexed by schedule.
    """
    from .analysis import late_wiggle
    from .plots import schedule_label

    return _frame({
        "schedule": [schedule_label(hs[0].config) for hs in groups],
        "m": [hs[0].config["batch_size"] for hs in groups],
        "avg loss": [seeds_or_each(finals(hs, "loss"), 4) for hs in groups],
        "test acc": [seeds_or_each(finals(hs), 4) for hs in groups],
        "late mean |step| of test acc (pp)": [f"{100 * np.mean([late_wiggle(h, late_start)[0] for h in hs]):.2f}"
                                              for hs in groups],
        "late largest drop (pp)": [f"{100 * np.mean([late_wiggle(h, late_start)[1] for h in hs]):.2f}"
                                   for hs in groups],
    }).set_index("schedule")


def _run_text(histories) -> str:
    # How the first run of a setting ended, in a table cell.
    h = histories[0]
    overflow = "nan" if not np.isfinite(h.final_loss) else "blew up"
    return {"dead": f"dead at epoch {h.epoch[-1]:.1f}", "overflow": f"{overflow} at epoch {h.epoch[-1]:.2f}",
            "chance": "collapsed (chance level)", "trained": ""}[fate(h)]


def _report_sgd(lr, m) -> str:
    row = TABLE2.get((lr, m))
    return "–" if row is None else f"{row[1]:.3f}"


def momentum_grid(rows, momentum):
    """Momentum beside SGD on each setting (rows of :func:`ex3lib.analysis.versus`), with the report's SGD accuracy."""
    return _frame({
        "η": [r["learning_rate"] for r in rows], "m": [r["batch_size"] for r in rows],
        "η/(1−α)": [r["learning_rate"] / (1 - momentum) for r in rows],
        "momentum loss": [f"{r['loss']:.3g}" if np.isfinite(r["loss"]) else "nan" for r in rows],
        "momentum accuracy": [f"{r['accuracy']:.4f}" for r in rows],
        "momentum time (s)": [f"{r['seconds']:.0f}" for r in rows],
        "momentum run": [_run_text(r["runs"]) for r in rows],
        "SGD accuracy": [f"{r['base_accuracy']:.4f}" for r in rows],
        "SGD time (s)": [f"{r['base_seconds']:.0f}" for r in rows],
        "report SGD accuracy": [_report_sgd(r["learning_rate"], r["batch_size"]) for r in rows],
    }).style.hide(axis="index").format({"η/(1−α)": "{:g}", "η": "{:g}"})


def momentum_pairs(rows):
    """Momentum at η beside SGD at η/(1−α) (rows of :func:`ex3lib.analysis.versus` with that match)."""
    frame = _frame([{"m": r["batch_size"], "momentum η": r["learning_rate"], "SGD η = η/(1−α)": r["base_learning_rate"],
                     "momentum accuracy": r["accuracy"], "SGD accuracy": r["base_accuracy"]} for r in rows])
    if len(frame):
        frame["difference"] = [r["difference"] for r in rows]
    return frame.style.hide(axis="index").format({"momentum η": "{:g}", "SGD η = η/(1−α)": "{:g}",
                                                  "momentum accuracy": "{:.4f}", "SGD accuracy": "{:.4f}",
                                                  "difference": "{:+.4f}"})


def nesterov(rows):
    """Nesterov beside classical momentum on each setting (rows of :func:`ex3lib.analysis.versus`, base = classical)."""
    frame = _frame({
        "η": [r["learning_rate"] for r in rows], "m": [r["batch_size"] for r in rows],
        "classical accuracy": [r["base_accuracy"] for r in rows], "Nesterov accuracy": [r["accuracy"] for r in rows],
        "classical loss": [r["base_loss"] for r in rows], "Nesterov loss": [r["loss"] for r in rows],
        "Nesterov run": [_run_text(r["runs"]) for r in rows],
        "difference": [r["difference"] for r in rows]})
    return frame.style.hide(axis="index").format(
        {"η": "{:g}", "classical accuracy": "{:.4f}", "Nesterov accuracy": "{:.4f}", "classical loss": "{:.3g}",
         "Nesterov loss": "{:.3g}", "difference": "{:+.4f}"}, na_rep="nan")


def _loss_cell(histories) -> str:
    a = finals(histories, "loss")
    if not np.all(np.isfinite(a)) or a.max() > 1e3:  # a blown-up seed: no meaningful mean
        return "nan" if not np.all(np.isfinite(a)) else f"{a.max():.3g} (max)"
    return seeds_text(a, 3)


def combined(comb_runs, decay_runs, batch_sizes):
    """Momentum with the linear decay beside the decay with plain SGD (ours and the report's Table 1), per batch size."""
    rows = []
    for m in batch_sizes:
        c, d = runs_at(comb_runs, batch_size=m), runs_at(decay_runs, batch_size=m)
        cfg = d[0].config if d else c[0].config
        rep = TABLE1.get((cfg["learning_rate"], cfg["lr_final"], m))
        rows.append({"m": m, "momentum + decay loss": _loss_cell(c), "momentum + decay accuracy": seeds_text(finals(c), 4),
                     "failed seeds": f"{sum(map(failed, c))}/{len(c)}", "SGD + decay accuracy": seeds_text(finals(d), 4),
                     "SGD failed seeds": f"{sum(map(failed, d))}/{len(d)}",
                     "report SGD + decay accuracy": "–" if rep is None else f"{rep[1]:.3f}"})
    return _frame(rows).style.hide(axis="index")


def report_accuracy(config) -> str:
    """The report's published test accuracy for a run's setting (Table 2 or Table 1), or "–" if it has none."""
    if config["optimiser"] != "sgd" or config["momentum"] != 0.0:
        return "–"
    if config["schedule"] == "constant":
        hit = TABLE2.get((config["learning_rate"], config["batch_size"]))
    else:
        hit = TABLE1.get((config["learning_rate"], config["lr_final"], config["batch_size"]))
    return f"{hit[1]:.3f}" if hit else "–"


def adagrad_grid(rows):
    """AdaGrad beside SGD on each setting (rows of :func:`ex3lib.analysis.versus`), with the report's SGD accuracy."""
    return _frame({
        "η": [r["learning_rate"] for r in rows], "m": [r["batch_size"] for r in rows],
        "AdaGrad loss": [f"{r['loss']:.3f}" for r in rows], "AdaGrad accuracy": [f"{r['accuracy']:.4f}" for r in rows],
        "AdaGrad time (s)": [f"{r['seconds']:.0f}" for r in rows],
        "SGD accuracy (ours)": [f"{r['base_accuracy']:.4f}" for r in rows],
        "SGD accuracy (report)": [_report_sgd(r["learning_rate"], r["batch_size"]) for r in rows],
    }).style.hide(axis="index").format({"η": "{:g}"})


def lr_sensitivity(claim):
    """The spread of final accuracy over η per batch size, AdaGrad against SGD (:func:`ex3lib.claims.adagrad_no_tuning`)."""
    ranges = claim.numbers["ranges"]
    frame = _frame({"m": list(ranges), "AdaGrad: accuracy range over η": [a for a, _ in ranges.values()],
                    "SGD: accuracy range over η": [s for _, s in ranges.values()]})
    return frame.style.hide(axis="index").format({c: "{:.4f}" for c in frame.columns[1:]})


def methods(runs):
    """Each method's runs (``runs[name]``, one setting, several seeds): final loss and accuracy (mean ± std),
    seeds and seconds per run, beside the report's time per run of its C code."""
    rows = []
    for name, hs in runs.items():
        cfg = hs[0].config
        rows.append({"method": name, "η": cfg["learning_rate"], "m": cfg["batch_size"],
                     "final loss": seeds_text(finals(hs, "loss")), "test accuracy": seeds_text(finals(hs), 4),
                     "seeds": len(hs), "time per run (s)": f"{np.mean([h.seconds for h in hs]):.0f}",
                     "report's time per run (s)": f"{SECONDS_PER_RUN[0]:,}–{SECONDS_PER_RUN[1]:,}"})
    return _frame(rows).style.hide(axis="index").format({"η": "{:g}"})


def verdicts(claims):
    """The verdict table of :func:`ex3lib.claims.table`, left-aligned."""
    from .claims import table

    return table(claims).style.hide(axis="index").set_properties(**{"text-align": "left"})


def layers(net):
    """The weight matrices of an :class:`ex3lib.MLP`: name, which layers they join, shape and parameters, and the total."""
    from .plots import layer_names

    names, shapes = layer_names(net.layers), [w.shape for w in net.weights]
    frame = _frame({
        "weights": [f"W{l}" for l in range(1, len(shapes) + 1)],
        "from → to": [f"{names[l - 1].splitlines()[0]} → {names[l].splitlines()[0]}" for l in range(1, len(shapes) + 1)],
        "shape": [f"{n_in} × {n_out}" for n_in, n_out in shapes],
        "parameters": [int(n_in * n_out) for n_in, n_out in shapes],
    })
    frame.loc[len(frame)] = ["total", "", "", int(net.n_params)]
    return frame.style.hide(axis="index").format({"parameters": "{:,}"})


def _interval(summary) -> str:
    """``"0.9753 [0.9735, 0.9770]"``: a seed summary's mean and confidence interval."""
    return f"{summary.mean:.4f} [{summary.ci[0]:.4f}, {summary.ci[1]:.4f}]"


def protocol_methods(selected, runs, level=0.95):
    """The protocol's comparison: each method's setting selected on validation (``selected[name]``: its
    tuning runs) and its test accuracy over every seed (``runs[name]``), with the confidence interval."""
    from .protocol import seed_summary

    rows = []
    for name, hs in runs.items():
        test = seed_summary(finals(hs), level)
        validation = seed_summary(finals(hs, "validation_accuracy"), level)
        rows.append({"method": name, "selected setting": setting_label(hs[0].config),
                     "validation accuracy (selection)": f"{finals(selected[name], 'validation_accuracy')[0]:.4f}",
                     f"validation accuracy, mean [{100 * level:g} % CI]": _interval(validation),
                     f"test accuracy, mean [{100 * level:g} % CI]": _interval(test),
                     "seeds": len(hs), "failed": f"{sum(map(failed, hs))}/{len(hs)}"})
    return _frame(rows).style.hide(axis="index")


def time_to_target(runs, targets):
    """Epochs, updates and seconds until each method's runs first reach each target test accuracy.

    Means over the seeds that reach it; "reached" counts them (a run that never
    reaches a target counts as not reaching it).
    """
    from .protocol import time_to_target as first_reach

    rows = []
    for name, hs in runs.items():
        row = {"method": name}
        for target in targets:
            hits = [t for t in (first_reach(h, target) for h in hs) if t.reached]
            key = f"{100 * target:g} %"
            row[f"{key}: reached"] = f"{len(hits)}/{len(hs)}"
            row[f"{key}: epochs"] = f"{np.mean([t.epochs for t in hits]):.1f}" if hits else "never"
            row[f"{key}: updates"] = f"{np.mean([t.updates for t in hits]):,.0f}" if hits else "never"
            row[f"{key}: s"] = f"{np.mean([t.seconds for t in hits]):.1f}" if hits else "never"
        rows.append(row)
    return _frame(rows).style.hide(axis="index")


def sharpness(measurements):
    """The sharpness measurements by setting: λ_max, ε-sharpness and test accuracy (mean ± std over seeds)."""
    rows = []
    groups = list(dict.fromkeys(r["group"] for r in measurements))
    keys = sorted(dict.fromkeys((r["group"], r["learning_rate"], r["batch_size"]) for r in measurements),
                  key=lambda k: (groups.index(k[0]), k[2]))
    for group, lr, m in keys:
        at = [r for r in measurements if (r["group"], r["learning_rate"], r["batch_size"]) == (group, lr, m)]
        rows.append({"comparison": group, "η": f"{lr:g}", "m": m, "seeds": len(at),
                     "λ_max": seeds_text([r["top_eigenvalue"] for r in at], 1),
                     "ε-sharpness (%)": seeds_text([r["epsilon_sharpness"] for r in at], 3),
                     "training loss": seeds_text([r["loss"] for r in at], 4),
                     "test accuracy": seeds_text([r["test_accuracy"] for r in at], 4)})
    return _frame(rows).style.hide(axis="index")


def batch_schedule(runs):
    """The decay and the growing batch side by side (``runs[name]``): m per epoch, updates, loss, accuracy."""
    rows = []
    for name, hs in runs.items():
        per_epoch = hs[0].extra.get("batch_size")
        rows.append({"schedule": name, "η": setting_label(hs[0].config).split(",")[0],
                     "m by epoch": ", ".join(map(str, per_epoch)) if per_epoch else str(hs[0].config["batch_size"]),
                     "updates": f"{np.mean([h.extra['updates'] for h in hs]):,.0f}",
                     "final loss": seeds_text(finals(hs, "loss")), "test accuracy": seeds_text(finals(hs), 4),
                     "seeds": len(hs)})
    return _frame(rows).style.hide(axis="index")
