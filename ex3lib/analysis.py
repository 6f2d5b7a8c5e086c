"""Statistics of runs that the chapters discuss: the shape of learning curves, collapses, step sizes.

Every function takes histories (lists of :class:`ex3lib.History`, usually the
seeds of one setting) and returns plain numbers, or a dict of them named as
the chapters quote them; none of them trains.  Judgements of the report's
claims built on these numbers are in :mod:`ex3lib.claims`.

>>> curve_shape(runs)["acc_downs"]                                    # doctest: +SKIP
1
"""

from __future__ import annotations

import numpy as np

from .experiments import by_setting, failed, fate, finals, mean_std, seed_stats, setting_label

LN10 = float(np.log(10))


def mean_curve(histories, metric="test_accuracy"):
    """Epochs and the mean of ``metric`` over ``histories`` at the points every one of them logged.

    Examples
    --------
    >>> epoch, acc = mean_curve(runs)                                  # doctest: +SKIP
    """
    n = min(len(h.epoch) for h in histories)
    return histories[0].epoch[:n], np.mean([getattr(h, metric)[:n] for h in histories], axis=0)


def curve_shape(histories) -> dict:
    """How the mean curves over seeds start, fall and end (the report's Fig. 2).

    Returns ``loss0`` (untrained), ``loss_half``/``acc_half`` (after the first
    logged window; nan if there is none), ``n_steps`` (steps between logged
    points), ``loss_ups``/``acc_downs`` (steps where the mean training loss
    rises or the mean test accuracy falls), ``test_loss`` (last), and the
    lowest mean test loss ``test_loss_min`` and its epoch ``test_loss_argmin``.

    Examples
    --------
    >>> curve_shape(runs_at(runs, learning_rate=0.1, batch_size=10))["loss_ups"]  # doctest: +SKIP
    2
    """
    epoch, loss = mean_curve(histories, "loss")
    _, acc = mean_curve(histories, "test_accuracy")
    _, test_loss = mean_curve(histories, "test_loss")
    return {"loss0": float(loss[0]),
            "loss_half": float(loss[1]) if len(epoch) > 1 else np.nan,
            "acc_half": float(acc[1]) if len(epoch) > 1 else np.nan,
            "n_steps": int(len(loss) - 1),
            "loss_ups": int(np.sum(np.diff(loss) > 0)),
            "acc_downs": int(np.sum(np.diff(acc) < 0)),
            "test_loss": float(test_loss[-1]),
            "test_loss_min": float(np.nanmin(test_loss)),
            "test_loss_argmin": float(histories[0].epoch[int(np.nanargmin(test_loss))])}


def second_half_gain(history) -> float:
    """Test-accuracy gain over the second half of the run: final minus the value at half its epochs.

    Examples
    --------
    >>> second_half_gain(run) > 0                                      # doctest: +SKIP
    True
    """
    return history.final_accuracy - float(np.interp(history.epoch[-1] / 2, history.epoch,
                                                    history.test_accuracy))


def mean_second_half_gain(histories) -> float:
    """:func:`second_half_gain` averaged over ``histories`` (nan for none)."""
    return float(np.mean([second_half_gain(h) for h in histories])) if histories else float("nan")


def _mean_abs_step(values):
    return float(np.mean(np.abs(np.diff(values)))) if len(values) > 1 else np.nan


def epoch_rhythm(history) -> float:
    """Mean test accuracy after the first half of an epoch minus after the whole of it (epochs 2 on).

    Positive when the samples that close every epoch (the same ones with the
    sequential order) pull the accuracy down each time.
    """
    e, acc = history.epoch, history.test_accuracy
    half, whole = acc[(e % 1 == 0.5) & (e > 1)], acc[(e % 1 == 0) & (e >= 2)]
    n = min(len(half), len(whole))
    return float(np.mean(half[:n] - whole[:n])) if n else np.nan


def zigzag(histories, epochs) -> dict:
    """The zig-zag of long runs after ``epochs`` epochs (the report's Fig. 3), over their seeds.

    Returns the arrays (one entry per seed) ``ranges`` (max − min test accuracy
    from epoch ``epochs`` on), ``rhythms`` (:func:`epoch_rhythm`) and ``gains``
    (test accuracy at the end minus at epoch ``epochs``); as text, mean ± std
    over seeds, ``range`` and ``range_pp`` (in percentage points) and ``gain``;
    ``rhythm_pp``, the mean rhythm in percentage points; and the means over
    seeds ``step_late`` (mean absolute change between logged points from epoch
    ``epochs`` on), ``step_early`` (the same for epochs 2 to ``epochs``),
    ``loss_mid``/``loss_end`` and ``tloss_mid``/``tloss_end`` (training and
    test loss at epoch ``epochs`` and at the end).

    Examples
    --------
    >>> z = zigzag(long_runs, epochs=10)                              # doctest: +SKIP
    >>> bool(z["step_late"] <= z["step_early"])                       # doctest: +SKIP
    True
    """
    def late(h):
        return h.epoch >= epochs

    def early(h):
        return (h.epoch >= min(2, epochs)) & (h.epoch <= epochs)

    def mid(h, values):
        return float(np.interp(epochs, h.epoch, values))

    ranges = np.array([np.ptp(h.test_accuracy[late(h)]) if np.any(late(h)) else np.nan for h in histories])
    rhythms = np.array([epoch_rhythm(h) for h in histories])
    gains = np.array([h.final_accuracy - mid(h, h.test_accuracy) for h in histories])
    range_std, gain_std = seed_stats(ranges)[1], seed_stats(gains)[1]
    return {
        "ranges": ranges, "rhythms": rhythms, "gains": gains,
        "range_pp": mean_std(float(100 * ranges.mean()), 100 * range_std, 2),
        "range": mean_std(float(ranges.mean()), range_std, 4),
        "rhythm_pp": float(100 * np.mean(rhythms)),
        "gain": mean_std(float(gains.mean()), gain_std, 4),
        "step_late": float(np.mean([_mean_abs_step(h.test_accuracy[late(h)]) for h in histories])),
        "step_early": float(np.mean([_mean_abs_step(h.test_accuracy[early(h)]) for h in histories])),
        "loss_mid": float(np.mean([mid(h, h.loss) for h in histories])),
        "loss_end": float(np.mean([h.final_loss for h in histories])),
        "tloss_mid": float(np.mean([mid(h, h.test_loss) for h in histories])),
        "tloss_end": float(np.mean([h.test_loss[-1] for h in histories])),
    }


def late_wiggle(history, start_epoch):
    """Zig-zag of the test accuracy after ``start_epoch``: (mean |step|, largest drop, drops, steps).

    A step is the change between consecutive logged points; the largest drop
    is 0 when the accuracy never falls; nan, nan, 0, 0 without a step.
    """
    steps = np.diff(history.test_accuracy[history.epoch > start_epoch])
    if steps.size == 0:
        return float("nan"), float("nan"), 0, 0
    return float(np.abs(steps).mean()), float(max(0.0, -steps.min())), int((steps < 0).sum()), int(steps.size)


def wiggle_stats(histories, start_epoch) -> dict:
    """:func:`late_wiggle` averaged over seeds, in percentage points, and the late rises of the loss.

    Returns ``step`` and ``maxdrop`` (pp), ``drops`` (count), ``n_steps`` (of
    the first run) and ``loss_rises`` (mean count of rises of the training loss
    between logged points after ``start_epoch``).
    """
    w = np.array([late_wiggle(h, start_epoch) for h in histories])
    rises = np.array([np.sum(np.diff(h.loss[h.epoch > start_epoch]) > 0) for h in histories])
    return {"step": float(100 * w[:, 0].mean()), "maxdrop": float(100 * w[:, 1].mean()),
            "drops": float(w[:, 2].mean()), "n_steps": int(w[0, 3]), "loss_rises": float(rises.mean())}


def lead(histories, baseline, start, stop=None) -> float:
    """Mean test-accuracy lead of ``histories`` over ``baseline`` in percentage points.

    Each run's accuracy is averaged over its logged points with
    ``start < epoch <= stop`` (no upper bound for ``stop=None``), then over the runs.
    """
    def mean(hs):
        def keep(e):
            return (e > start) & (e <= stop) if stop is not None else e > start
        return float(np.mean([h.test_accuracy[keep(h.epoch)].mean() for h in hs]))
    return 100 * (mean(histories) - mean(baseline))


def collapse(histories, y_test) -> dict:
    """How the runs of a failing setting ended, against the network that answers "0" for every image.

    Returns ``zeros`` (zeros in the test set), ``n_test``, ``n_collapsed`` (runs
    whose final accuracy is exactly that of always answering 0), the numbers of
    ``dead``, ``nan`` (overflow) and ``limp`` (not stopped) runs, the largest
    gap of a dead run's final loss to ln 10 (``dead_loss_gap``) and, for the
    runs that limp on, their mean loss, gap to ln 10, mean accuracy, and for
    the first of them how many of its logged points after epoch 0 sit exactly
    at the share of zeros (``limp_n_zero`` of ``limp_n_points``).

    Examples
    --------
    >>> collapse(runs_at(runs, learning_rate=0.1, batch_size=1), data.y_test)["zeros"]  # doctest: +SKIP
    980
    """
    n_test, zeros = int(len(y_test)), int(np.sum(np.asarray(y_test) == 0))
    share = zeros / n_test
    kinds = {"dead": [], "nan": [], "limp": []}
    for h in histories:
        kinds[{"overflow": "nan", "dead": "dead"}.get(fate(h), "limp")].append(h)
    dead, limp = kinds["dead"], kinds["limp"]
    return {"zeros": zeros, "n_test": n_test,
            "n_collapsed": int(np.sum(np.isclose([h.final_accuracy for h in histories], share))),
            "n_dead": len(dead), "n_nan": len(kinds["nan"]), "n_limp": len(limp),
            "dead_loss_gap": float(max([abs(h.final_loss - LN10) for h in dead], default=np.nan)),
            "limp_loss": float(np.mean([h.final_loss for h in limp])) if limp else np.nan,
            "limp_gap": float(max([abs(h.final_loss - LN10) for h in limp], default=np.nan)),
            "limp_acc": float(np.mean([h.final_accuracy for h in limp])) if limp else np.nan,
            "limp_n_zero": int(np.sum(np.isclose(limp[0].test_accuracy[1:], share))) if limp else 0,
            "limp_n_points": int(len(limp[0].test_accuracy) - 1) if limp else 0}


def overflow_probe_updates(history, window=64) -> list[int]:
    """Update counts at which to stop short reruns of an overflowing on-line run, to watch it blow up.

    With the sequential order and m = 1 a one-epoch run on the first k images
    takes exactly the first k updates of the full run, so rerunning with
    ``train_size=k`` for each returned k shows the test loss just before the nan.
    """
    n_updates = int(history.extra["updates"])
    window = min(window, n_updates - 1)
    return sorted({max(1, n_updates - d) for d in (window, 48, 32, 24, 16, 12, 8, 6, 4, 3, 2, 1)})


def overflow_probe(history, probes, ks) -> dict:
    """Test loss of the probes of :func:`overflow_probe_updates`: first, last finite, and over how many updates."""
    loss = np.array([p.test_loss[-1] for p in probes])
    last = int(np.nonzero(np.isfinite(loss))[0][-1])
    return {"tloss_first": float(loss[0]), "tloss_last": float(loss[last]),
            "window": int(ks[last] - ks[0]), "epoch": float(history.epoch[-1]),
            "acc": float(history.final_accuracy)}


def ratio_groups(histories) -> dict:
    """How much of the variance of the settings' mean accuracies the step per sample η/m explains.

    Over the settings with no failed seed: ``within_spread`` (largest spread of
    mean accuracy among settings sharing η/m), ``between_spread`` (spread of the
    η/m groups' means), R² (share of the variance of the settings' means
    that the group means explain, in percent: ``ratio_r2_pct``),
    ``n_ok_settings`` and ``typical_std`` (median seed-to-seed std).

    Examples
    --------
    >>> ratio_groups(sgd_grid_runs)["ratio_r2_pct"] > 80              # doctest: +SKIP
    True
    """
    ok = ok_settings(histories)
    groups: dict = {}
    for (lr, m), a in ok.items():
        groups.setdefault(round(np.log10(lr / m), 6), []).append(float(a.mean()))
    means = np.array([float(a.mean()) for a in ok.values()])
    group_of = np.array([np.mean(groups[round(np.log10(lr / m), 6)]) for lr, m in ok])
    group_means = [np.mean(g) for g in groups.values()]
    r2 = (1 - np.sum((means - group_of) ** 2) / np.sum((means - means.mean()) ** 2)) if len(ok) > 1 else np.nan
    return {"within_spread": float(max([max(g) - min(g) for g in groups.values() if len(g) > 1], default=np.nan)),
            "between_spread": float(max(group_means) - min(group_means)) if groups else np.nan,
            "ratio_r2_pct": float(100 * r2), "n_ok_settings": int(len(ok)),
            "typical_std": float(np.median([seed_stats(a)[1] for a in ok.values()])) if ok else np.nan}


def settings_by_lr_m(histories) -> dict:
    """The runs of each setting, keyed by ``(learning_rate, batch_size)``, in first-seen order."""
    return {(hs[0].config["learning_rate"], hs[0].config["batch_size"]): hs
            for hs in by_setting(histories).values()}


def within_noise(best, other, k=2.0) -> bool:
    """Whether the mean final accuracy of ``other`` is within ``k`` combined seed stds of ``best``'s.

    The combined std is the hypotenuse of the two settings' stds (0 for one seed).
    """
    a, b = finals(best), finals(other)
    spread = np.hypot(seed_stats(a)[1] if len(a) > 1 else 0.0, seed_stats(b)[1] if len(b) > 1 else 0.0)
    return bool(a.mean() - b.mean() <= k * spread)


def paired_difference(histories, baseline) -> dict:
    """Final test accuracy of ``histories`` minus ``baseline``, paired by seed (same initial weights).

    Returns ``diff_mean``/``diff_std`` of the differences, ``n_seeds_better``
    (seeds where it is positive), ``noise`` (two standard errors of the mean
    difference; nan for one seed) and ``verdict`` (``"larger than"`` or
    ``"within"`` the noise).
    """
    diff = finals(histories) - finals(baseline)
    mean, std = seed_stats(diff)
    noise = 2 * std / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    return {"diff_mean": mean, "diff_std": std, "n_seeds_better": int((diff > 0).sum()), "noise": float(noise),
            "verdict": "larger than" if abs(diff.mean()) > noise else "within"}


def compare_seeds(histories, baseline, k=1.0) -> bool:
    """Whether ``histories`` beat ``baseline`` in mean final accuracy by more than ``k`` seed stds of either."""
    a, b = finals(histories), finals(baseline)
    noise = max(np.nan_to_num(seed_stats(a)[1]), np.nan_to_num(seed_stats(b)[1]))
    return bool(a.mean() - b.mean() > k * noise)


def effective_steps(history) -> np.ndarray:
    """``History.extra["effective_step"]`` as an array: (points, layers, percentiles 10/50/90)."""
    return np.array(history.extra["effective_step"])


def step_decay(history) -> dict:
    """How an adaptive run's effective step shrank (:func:`effective_steps`), from its first logged point.

    Returns ``monotone`` (no percentile of any layer ever rises), ``shrink_min``
    and ``shrink_max`` (over layers, the median step at the first logged point
    over the last), ``late_shrink_max`` (the same from the middle logged point)
    and ``half_epoch`` (the epoch of that middle point).

    Examples
    --------
    >>> step_decay(adagrad_runs[0])["monotone"]                         # doctest: +SKIP
    True
    """
    steps = effective_steps(history)
    median = steps[1:, :, 1]
    half = len(median) // 2
    shrink = median[0] / median[-1]
    return {"monotone": bool(np.all(np.diff(steps, axis=0) <= 0)),
            "shrink_min": float(shrink.min()), "shrink_max": float(shrink.max()),
            "late_shrink_max": float((median[half] / median[-1]).max()),
            "half_epoch": float(history.epoch[1 + half])}


def step_ceiling(history, factor=0.5) -> dict:
    """The ceiling η/√ε of an RMSProp-like step and how many layers' final median step is near it.

    Returns ``monotone`` (the median steps never rise after the first logged
    point), ``ceiling`` and ``at_ceiling`` (layers whose final median step is at
    least ``factor`` times the ceiling).
    """
    steps = effective_steps(history)[1:, :, 1]
    ceiling = history.config["learning_rate"] / np.sqrt(history.config["eps"])
    return {"monotone": bool(np.all(np.diff(steps, axis=0) <= 0)), "ceiling": float(ceiling),
            "at_ceiling": int(np.sum(steps[-1] >= factor * ceiling))}


def pixel_activity(x_train) -> np.ndarray:
    """Fraction of the images in which each pixel is non-zero."""
    return (np.asarray(x_train) > 0).mean(axis=0)


def pixel_steps(history, activity) -> dict:
    """AdaGrad's final first-layer step by pixel against how often the pixel is non-zero.

    ``history.extra["first_layer_step_by_input"]`` holds the mean final
    effective step of each pixel's weights.  Over the pixels that are ever
    non-zero: Spearman's rank correlation ``pixel_rho`` of activity and step,
    the median step of the rarest tenth (``rare_step``) and of the most common
    tenth (``common_step``) and their ratio ``rare_over_common``;
    ``n_never_active`` pixels are never non-zero, with mean step ``never_step``.

    Examples
    --------
    >>> pixel_steps(adagrad_runs[0], pixel_activity(data.x_train))["pixel_rho"] < 0  # doctest: +SKIP
    True
    """
    import pandas as pd

    step = np.array(history.extra["first_layer_step_by_input"])
    on = activity > 0
    rho = float(pd.DataFrame({"active": activity[on], "step": step[on]}).rank().corr().iloc[0, 1])
    rare = on & (activity < np.quantile(activity[on], 0.1))
    common = activity >= np.quantile(activity[on], 0.9)
    rare_step, common_step = float(np.median(step[rare])), float(np.median(step[common]))
    return {"pixel_rho": rho, "rare_step": rare_step, "common_step": common_step,
            "rare_over_common": rare_step / common_step, "n_never_active": int((~on).sum()),
            "never_step": float(step[~on].mean()) if (~on).any() else float("nan")}


def accuracy_range_over_lr(histories, batch_sizes) -> dict:
    """For each batch size, the spread (best − worst) of mean final accuracy over the learning rates, and the best η."""
    by = settings_by_lr_m(histories)
    out = {}
    for m in batch_sizes:
        accs = {lr: float(finals(hs).mean()) for (lr, mm), hs in by.items() if mm == m}
        out[m] = (float(np.ptp(list(accs.values()))), max(accs, key=accs.get))
    return out


def speedups(seconds, report_seconds) -> dict:
    """Our seconds per run against the report's range ``(low, high)``: extreme times and speed-ups."""
    seconds = np.asarray(seconds, dtype=float)
    return {"seconds_min": float(seconds.min()), "seconds_max": float(seconds.max()),
            "speedup_min": float(report_seconds[0] / seconds.max()),
            "speedup_max": float(report_seconds[1] / seconds.min())}



def ok_settings(histories) -> dict:
    """Final test accuracies of every setting with no failed seed, keyed by ``(learning_rate, batch_size)``."""
    return {k: finals(hs) for k, hs in settings_by_lr_m(histories).items() if not any(map(failed, hs))}


def final_stats(histories) -> dict:
    """Means over seeds of the final loss, accuracy and test loss, their stds, seconds, diverged runs, seeds."""
    loss, acc = seed_stats(finals(histories, "loss")), seed_stats(finals(histories))
    return {"final_loss": loss[0], "final_loss_std": loss[1], "final_accuracy": acc[0],
            "final_accuracy_std": acc[1], "final_test_loss": float(finals(histories, "test_loss").mean()),
            "run_seconds": float(np.mean([h.seconds for h in histories])),
            "diverged": int(sum(h.diverged for h in histories)), "n_seeds": int(len(histories))}


def _mean_of(histories, what):
    values = finals(histories, what) if what != "seconds" else np.array([h.seconds for h in histories])
    return float(values.mean())


def versus(histories, baseline, match=None) -> list[dict]:
    """Each setting of ``histories`` beside a setting of ``baseline``, by mean over seeds.

    ``match(learning_rate, batch_size)`` gives the baseline's ``(learning_rate,
    batch_size)`` (the same setting by default); settings without a match are
    left out.  Each row has ``learning_rate``, ``batch_size``,
    ``base_learning_rate``, ``runs``/``base_runs``, ``accuracy``/``base_accuracy``,
    ``loss``/``base_loss``, ``seconds``/``base_seconds`` (means), ``alive``/
    ``base_alive`` (no seed failed) and ``difference`` (accuracy minus the base's).

    Examples
    --------
    >>> rows = versus(momentum_runs, sgd_runs)                          # doctest: +SKIP
    >>> [(r["learning_rate"], r["batch_size"]) for r in rows if not r["alive"]]  # doctest: +SKIP
    [(0.1, 1), (0.1, 10), (0.01, 1)]
    """
    base = settings_by_lr_m(baseline)
    rows = []
    for (lr, m), hs in settings_by_lr_m(histories).items():
        key = match(lr, m) if match else (lr, m)
        if key not in base:
            continue
        row = {"learning_rate": lr, "batch_size": m, "base_learning_rate": key[0], "runs": hs, "base_runs": base[key]}
        for prefix, runs in (("", hs), ("base_", base[key])):
            for what, metric in (("accuracy", "test_accuracy"), ("loss", "loss"), ("seconds", "seconds")):
                row[prefix + what] = _mean_of(runs, metric)
            row[prefix + "alive"] = not any(map(failed, runs))
        row["difference"] = row["accuracy"] - row["base_accuracy"]
        rows.append(row)
    return rows


def versus_stats(rows) -> dict:
    """How the settings of :func:`versus` compare: ``n``, ``same_fate`` (both alive or both failed),
    ``n_alive`` (both alive), ``n_better`` (alive and ahead), ``max_abs_diff`` (largest
    |difference| where both are alive), ``max_lr``/``max_m`` (its setting) and
    ``max_gain`` (largest lead, at least 0); nan (0 for ``max_m``) without live pairs."""
    alive = [r for r in rows if r["alive"] and r["base_alive"]]
    top = max(alive, key=lambda r: abs(r["difference"])) if alive else None
    return {"n": len(rows), "same_fate": int(sum(r["alive"] == r["base_alive"] for r in rows)),
            "n_alive": len(alive), "n_better": int(sum(r["difference"] > 0 for r in alive)),
            "max_abs_diff": float(abs(top["difference"])) if top else float("nan"),
            "max_lr": float(top["learning_rate"]) if top else float("nan"),
            "max_m": int(top["batch_size"]) if top else 0,
            "max_gain": float(max(max(r["difference"] for r in alive), 0.0)) if alive else float("nan")}


def grid_versus(histories, baseline) -> dict:
    """A method's grid against a baseline's (SGD) on the same settings.

    Returns the best setting with no failed seed (``best_lr``, ``best_m``,
    ``best_grid_acc``), ``n_grid`` settings, ``n_collapsed`` (with a failed
    seed) and their list ``collapsed_list``, the baseline's ``n_sgd_collapsed``,
    ``n_survivors`` (no failure in either), ``n_mom_better`` (of those, where
    the method's mean accuracy is higher) and ``time_ratio`` (median ratio of
    seconds per run over the survivors).
    """
    rows = versus(histories, baseline)
    ok = [r for r in rows if r["alive"]]
    best = max(ok, key=lambda r: r["accuracy"]) if ok else None
    both = [r for r in ok if r["base_alive"]]
    dead = [f"η = {r['learning_rate']:g}, m = {r['batch_size']}" for r in rows if not r["alive"]]
    ratio = [r["seconds"] / r["base_seconds"] for r in both]
    return {"best_lr": float(best["learning_rate"]) if best else float("nan"),
            "best_m": int(best["batch_size"]) if best else 0,
            "best_grid_acc": float(best["accuracy"]) if best else float("nan"),
            "n_collapsed": len(dead), "n_grid": len(rows), "collapsed_list": "; ".join(dead) if dead else "none",
            "n_sgd_collapsed": int(sum(not r["base_alive"] for r in rows)), "n_survivors": len(both),
            "n_mom_better": int(sum(r["accuracy"] > r["base_accuracy"] for r in both)),
            "time_ratio": float(np.median(ratio)) if ratio else float("nan")}


def best_batch_size(histories, batch_sizes):
    """The batch size whose runs that did not fail have the highest mean final accuracy (None if all failed)."""
    ok = {m: [h for h in histories if h.config["batch_size"] == m and not failed(h)] for m in batch_sizes}
    return max((m for m in batch_sizes if ok[m]), key=lambda m: np.mean([h.final_accuracy for h in ok[m]]),
               default=None)


def combined(comb_runs, decay_runs, batch_sizes, momentum) -> dict:
    """Momentum with the decay (``comb_``) against the decay with plain SGD (``decay_``), per batch size.

    Returns ``comb_failed_ms`` (the batch sizes where seeds failed, as text),
    ``comb_fail_epoch`` (the last epoch a diverged run reached), the best batch
    size of each (:func:`best_batch_size`) with the mean ± std of its runs that
    did not fail (``comb_best_acc_*``; for the decay all its runs,
    ``decay_best_acc_*``), the decay's runs at the combination's best m
    (``decay_same_m_acc_*``) and ``comb_equiv_m``, the batch size of plain SGD
    with the same noise scale, m (1 − α).
    """
    by_m = {m: [h for h in comb_runs if h.config["batch_size"] == m] for m in batch_sizes}
    failed_ms = [f"m = {m} ({sum(map(failed, hs))} of {len(hs)})" for m, hs in by_m.items() if any(map(failed, hs))]
    out = {"comb_failed_ms": ", ".join(failed_ms) or "none",
           "comb_fail_epoch": float(max((h.epoch[-1] for h in comb_runs if h.diverged), default=float("nan")))}
    comb_m = best_batch_size(comb_runs, batch_sizes)
    decay_m = best_batch_size(decay_runs, batch_sizes) or batch_sizes[0]
    comb_ok = [h for h in by_m.get(comb_m, []) if not failed(h)]
    decay_at = {m: [h for h in decay_runs if h.config["batch_size"] == m] for m in batch_sizes}
    for key, runs in (("comb_best_acc", comb_ok), ("decay_same_m_acc", decay_at.get(comb_m, [])),
                      ("decay_best_acc", decay_at[decay_m])):
        out[f"{key}_mean"], out[f"{key}_std"] = seed_stats(finals(runs)) if runs else (float("nan"), float("nan"))
    out.update(comb_best_m=int(comb_m) if comb_m is not None else 0, decay_best_m=int(decay_m),
               comb_equiv_m=float((comb_m or 1) * (1 - momentum)))
    return out


def rank_methods(best) -> dict:
    """The methods at their best (``best[name]``: runs of one setting) ranked by mean final accuracy.

    Returns ``winner`` (its ``winner_setting``, ``winner_acc``, ``winner_std``),
    ``loser`` (``loser_acc``), ``acc_range`` between them and ``tied``: the
    methods the winner does not beat under the protocol's decision rule (the
    95 % interval of the difference contains 0; :func:`ex3lib.protocol.decide`),
    as text.
    """
    from .protocol import compare, decide

    acc = {name: seed_stats(finals(hs)) for name, hs in best.items()}
    winner = max(acc, key=lambda n: acc[n][0])
    loser = min(acc, key=lambda n: acc[n][0])
    tied = [n for n in acc if n != winner and decide(compare(best[winner], best[n]), claimed="a > b") != "holds"]
    return {"winner": winner, "winner_setting": setting_label(best[winner][0].config), "winner_acc": acc[winner][0],
            "winner_std": acc[winner][1], "loser": loser, "loser_acc": acc[loser][0],
            "acc_range": acc[winner][0] - acc[loser][0], "tied": ", ".join(tied) if tied else "none"}


def setting_range(histories) -> float:
    """Spread (best − worst) of the mean final accuracy over the settings with no failed seed."""
    means = [a.mean() for a in ok_settings(histories).values()]
    return float(max(means) - min(means)) if means else float("nan")
