"""Grids of runs and their summaries: what every chapter does with :func:`ex3lib.run_many`.

One definition each of what the chapters share: a grid of configs (:func:`grid`),
named groups of them trained in one call (:func:`run_groups`), the runs at a
setting (:func:`runs_at`), a failed run (:func:`failed`, :func:`fate`), and the
mean ± std over seeds (:func:`seed_stats`, :func:`seeds_text`).
"""

from __future__ import annotations

import itertools

import numpy as np

from ._validate import check_int
from .training import History, RunConfig

SUMMARY_KEYS = ("optimiser", "learning_rate", "lr_final", "schedule", "batch_size", "batch_final",
                "batch_schedule", "momentum", "nesterov", "b1", "b2", "epochs", "train_size", "order")


def grid(*, seeds=1, **axes) -> list[RunConfig]:
    """Every combination of the list-valued fields, each repeated for seeds ``0 .. seeds-1``.

    Fields given as a list are axes; any other value is fixed for all runs.

    Examples
    --------
    >>> len(grid(learning_rate=[0.1, 0.01], batch_size=[1, 10, 100], seeds=3, epochs=1))
    18
    """
    seeds = check_int("seeds", seeds, 1)
    names = [k for k, v in axes.items() if isinstance(v, list)]
    for name in names:
        if not axes[name]:
            raise ValueError(f"{name} must list at least one value, got []")
    fixed = {k: v for k, v in axes.items() if k not in names}
    if "seed" in axes:
        raise ValueError("give the number of seeds with seeds=N, not seed=...")
    return [RunConfig(**fixed, **dict(zip(names, values)), seed=seed)
            for values in itertools.product(*(axes[n] for n in names)) for seed in range(seeds)]


def setting(config) -> tuple:
    """The configuration without its seed: runs that differ only by seed share a setting."""
    d = config.to_dict() if isinstance(config, RunConfig) else dict(config)
    d.pop("seed", None)
    d.pop("init_seed", None)
    d.pop("keep_params", None)  # what was kept of a run, not how it was trained
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def by_setting(histories) -> dict:
    """Histories grouped by :func:`setting`, in first-seen order."""
    groups: dict = {}
    for h in histories:
        if not isinstance(h, History):
            raise TypeError(f"histories must hold History objects, got {type(h).__name__}")
        groups.setdefault(setting(h.config), []).append(h)
    return groups


def best_setting(histories) -> list[History]:
    """The runs (every seed) of the setting with the highest mean final test accuracy.

    Settings are grouped by :func:`by_setting`; a tie goes to the first one seen.

    Examples
    --------
    >>> runs = ex3lib.run_many(grid(learning_rate=[0.1, 0.01], seeds=3, epochs=1))  # doctest: +SKIP
    >>> best_setting(runs)[0].config["learning_rate"]                              # doctest: +SKIP
    0.1
    """
    groups = list(by_setting(histories).values())
    if not groups:
        raise ValueError("histories must hold at least one History")
    means = [float(np.mean([h.final_accuracy for h in runs])) for runs in groups]
    return groups[int(np.argmax(means))]


def summarise(histories):
    """One row per setting: the hyper-parameters that vary, then mean and std over seeds.

    Columns ``loss_mean``/``loss_std`` (final training loss), ``accuracy_mean``/
    ``accuracy_std`` (final test accuracy), ``seconds_mean``, ``seeds`` and
    ``diverged`` (how many of the seeds diverged).  Returns a pandas DataFrame.
    """
    import pandas as pd

    rows = []
    for runs in by_setting(histories).values():
        cfg = runs[0].config
        loss = seed_stats([h.final_loss for h in runs])
        acc = seed_stats([h.final_accuracy for h in runs])
        row = {k: cfg[k] for k in SUMMARY_KEYS}
        row.update(loss_mean=loss[0], loss_std=loss[1], accuracy_mean=acc[0], accuracy_std=acc[1],
                   seconds_mean=float(np.mean([h.seconds for h in runs])), seeds=len(runs),
                   diverged=int(sum(h.diverged for h in runs)))
        rows.append(row)
    table = pd.DataFrame(rows)
    varying = [k for k in SUMMARY_KEYS if table[k].astype(str).nunique() > 1]
    if "lr_final" in varying and (table["schedule"] == "constant").all():
        varying.remove("lr_final")  # a constant schedule's lr_final is just its learning rate
    if "batch_final" in varying and (table["batch_schedule"] == "constant").all():
        varying.remove("batch_final")  # and a constant batch schedule's batch_final its batch size
    return table[varying + [c for c in table.columns if c not in SUMMARY_KEYS]]


def mean_std(mean, std, digits=3) -> str:
    """``"0.977 ± 0.002"``, or just the mean when there is no spread to show."""
    if mean is None or not np.isfinite(mean):
        return "nan"
    if std is None or not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


#: Test accuracy below which a run counts as failed: chance level is 0.1 for ten classes.
CHANCE_ACCURACY = 0.2


def failed(history) -> bool:
    """A failed run: the library stopped it (``diverged``) or it ended at chance level.

    Chance level means a final test accuracy below :data:`CHANCE_ACCURACY`
    (0.2; guessing one class scores about 0.1).  A collapsed network that still
    fires a unit now and then is not stopped by the library but fails here.

    Examples
    --------
    >>> failed(run)                                                 # doctest: +SKIP
    False
    """
    return bool(history.diverged or history.final_accuracy < CHANCE_ACCURACY)


def fate(history) -> str:
    """How a run ended: ``"dead"`` (diverged: a dead network), ``"overflow"`` (diverged any other way:
    the weights or the loss blew up, to inf/nan or beyond ``training.LOSS_BOUND``), ``"chance"`` (ran to
    the end at chance level) or ``"trained"``."""
    if history.diverged:
        return "dead" if history.reason.startswith("dead network") else "overflow"
    return "chance" if history.final_accuracy < CHANCE_ACCURACY else "trained"


def runs_at(histories, **fields) -> list[History]:
    """The histories whose configuration has every given field value, in their order.

    Examples
    --------
    >>> [h.config["seed"] for h in runs_at(runs, learning_rate=0.1, batch_size=10)]  # doctest: +SKIP
    [0, 1, 2]
    """
    return [h for h in histories if all(h.config[k] == v for k, v in fields.items())]


def run_groups(groups, data=None, **kwargs) -> dict:
    """:func:`ex3lib.run_many` over named lists of configs, in one call; histories by the same names.

    One call lets every missing run share the worker pool.  ``kwargs`` go to
    ``run_many`` (``progress`` defaults to False).

    Examples
    --------
    >>> runs = run_groups({"sgd": grid(learning_rate=[0.1, 0.01]), "adam": grid(optimiser="adam")})  # doctest: +SKIP
    >>> len(runs["sgd"]), len(runs["adam"])                          # doctest: +SKIP
    (2, 1)
    """
    from .runner import run_many

    groups = {name: list(configs) for name, configs in groups.items()}
    kwargs.setdefault("progress", False)
    flat = run_many([c for configs in groups.values() for c in configs], data, **kwargs)
    out, i = {}, 0
    for name, configs in groups.items():
        out[name], i = flat[i:i + len(configs)], i + len(configs)
    return out


def finals(histories, metric="test_accuracy") -> np.ndarray:
    """The last logged value of ``metric`` (``"test_accuracy"``, ``"loss"``, ``"test_loss"``) of each run."""
    return np.array([float(getattr(h, metric)[-1]) for h in histories], dtype=float)


def seed_stats(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) over seeds; the std is nan for one seed.

    Examples
    --------
    >>> seed_stats([0.97, 0.98, 0.99])
    (0.98, 0.010000000000000009)
    >>> seed_stats([0.97])
    (0.97, nan)
    """
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


def seeds_text(values, digits=3) -> str:
    """``"0.977 ± 0.002"`` over seeds (:func:`seed_stats`), formatted by :func:`mean_std`."""
    return mean_std(*seed_stats(values), digits)


def seeds_or_each(values, digits=3) -> str:
    """:func:`seeds_text`, or every seed's value when one of them is not finite (a diverged run)."""
    a = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(a)):
        return ", ".join("nan" if not np.isfinite(v) else f"{v:.{digits}f}" for v in a)
    return seeds_text(a, digits)


def setting_label(config) -> str:
    """``"η=0.1, m=10"``, ``"η=0.1→0.001, m=10"`` or ``"η=0.1, m=10→1000"`` for a run's configuration (a dict)."""
    eta = (f"η={config['learning_rate']:g}" if config["schedule"] == "constant"
           else f"η={config['learning_rate']:g}→{config['lr_final']:g}")
    m = (f"m={config['batch_size']}" if config.get("batch_schedule", "constant") == "constant"
         else f"m={config['batch_size']}→{config['batch_final']}")
    return f"{eta}, {m}"
