"""A fair comparison of optimisers: select on validation, intervals over seeds, one stated decision rule.

The protocol that benchmark reviewers expect (DeepOBS: Schneider, Balles and
Hennig, ICLR 2019; AlgoPerf: Dahl et al., 2023), in the order a chapter uses it:

1. **Select** each method's hyper-parameters on a held-out validation set, never
   on the test set (:func:`select`; runs with ``RunConfig(validation_size=10_000)``).
2. **Report** the selected setting's test metric over every seed drawn, with a
   Student-t confidence interval (:func:`seed_summary`, :func:`mean_ci`).
3. **Compare** two methods by the interval of their difference, paired by seed
   when they share seeds (:func:`compare`), and **judge** a claim by one rule
   written once (:func:`decide`).
4. Beside the final number, the two other axes of those benchmarks: speed to a
   target (:func:`time_to_target`) and sensitivity to the learning rate
   (:func:`lr_sensitivity`).

Failed runs (:func:`ex3lib.experiments.failed`) are never dropped: a run counts
at its last logged value (a diverged run's accuracy is at chance level, about
0.098), because leaving it out would make an unstable method look better than
it is.  Curves are read through :func:`metric_curve`, which finds the validation
curves both as ``History`` attributes and in ``History.extra``.

:func:`compare` supersedes :func:`ex3lib.analysis.paired_difference` (two
standard errors, a normal approximation that is too narrow for three seeds:
t₀.₉₇₅ with 2 degrees of freedom is 4.30, not 2), :func:`~ex3lib.analysis.within_noise`
and :func:`~ex3lib.analysis.compare_seeds` (k standard deviations, no stated
coverage); :func:`select` supersedes :func:`ex3lib.experiments.best_setting`
(which selects on the test set).

>>> from ex3lib import protocol
>>> best = protocol.select(sgd_runs + momentum_runs)                     # doctest: +SKIP
>>> c = protocol.compare(momentum_best, sgd_best)                          # doctest: +SKIP
>>> protocol.decide(c, claimed="a > b")                                    # doctest: +SKIP
'partly'
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass

import numpy as np

from ._validate import check_choice, check_float, check_int
from .experiments import by_setting, failed, setting_label
from .optimisers import make_optimiser
from .network import MLP
from .training import History, RunConfig

#: Metrics measured on the test set: :func:`select` refuses them unless told ``allow_test=True``.
TEST_METRICS = ("test_accuracy", "test_loss")

#: The claims :func:`decide` judges, about the difference d = a − b.
CLAIMS = ("a > b", "a < b", "a == b", "a >= b", "a <= b")

#: δ of the equivalence claims on an accuracy: 0.3 percentage point (see :func:`decide`).
EQUIVALENCE_MARGIN = 0.003


def _run_name(history) -> str:
    """``"SGD η=0.1, m=10, seed 2"``: which run an error is about."""
    cfg = history.config
    try:
        opt = _optimiser_label(cfg)
        return f"{opt} {setting_label(cfg)}, seed {cfg.get('seed')}"
    except (KeyError, TypeError, ValueError):
        return f"the run with config {cfg!r}"


def _optimiser_label(cfg) -> str:
    """``"SGD"``, ``"momentum α=0.9"``, ``"Nesterov α=0.9"``, ``"Adam β₁=0.9 β₂=0.999"``... of a config dict."""
    return make_optimiser(cfg["optimiser"], momentum=cfg["momentum"], nesterov=cfg["nesterov"],
                          b1=cfg["b1"], b2=cfg["b2"], eps=cfg["eps"]).label


def metric_curve(history, metric) -> np.ndarray:
    """The curve ``metric`` of ``history``, one value per logged point (aligned with ``history.epoch``).

    An attribute of the History (``test_accuracy``, ``loss``, ``test_loss``, and
    ``validation_accuracy``/``validation_loss`` where History has them) is read
    with ``getattr``; otherwise ``history.extra[metric]`` (where runs with a
    validation set keep ``validation_accuracy`` and ``validation_loss``).

    Raises
    ------
    ValueError
        The run has no such curve (e.g. a run without a validation set), or it
        is not one value per logged point; the message names the run.

    Examples
    --------
    >>> metric_curve(run, "validation_accuracy")[-1]                       # doctest: +SKIP
    0.9781
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a History, got {type(history).__name__}")
    if not isinstance(metric, str):
        raise TypeError(f"metric must be the name of a curve (e.g. 'validation_accuracy'), got {metric!r}")
    try:
        values = getattr(history, metric)
    except AttributeError:
        if metric not in history.extra:
            raise ValueError(f"metric {metric!r}: {_run_name(history)} has no such curve (neither History.{metric} "
                             f"nor extra[{metric!r}]; validation curves need RunConfig(validation_size=...))") from None
        values = history.extra[metric]
    except ValueError as err:
        raise ValueError(f"metric {metric!r}: {_run_name(history)}: {err}") from None
    try:
        values = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"metric {metric!r}: {_run_name(history)}'s {metric} is not numbers") from None
    if values.shape != np.shape(history.epoch):
        raise ValueError(f"metric {metric!r} must name a curve with one value per logged point "
                         f"({len(history.epoch)} for {_run_name(history)}), got shape {values.shape}")
    return values


def _final(history, metric) -> float:
    """The last logged value: a diverged run counts at the point where it stopped."""
    return float(metric_curve(history, metric)[-1])


def _higher_is_better(metric) -> bool:
    if metric.endswith("accuracy"):
        return True
    if metric.endswith("loss"):
        return False
    raise ValueError(f"metric must be an accuracy or a loss curve (a name ending in 'accuracy' or 'loss'), "
                     f"got {metric!r}")


def _values(name, values) -> np.ndarray:
    """``values`` as a 1-D array of finite floats with at least one entry."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}")
    try:
        a = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers (one per seed), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite, got {a.tolist()}: a diverged run's loss is nan; compare "
                         f"accuracies (a failed run's stays at chance level) rather than drop the run")
    return a


def _level(level) -> float:
    return check_float("level", level, low=0.0, high=1.0, low_open=True, high_open=True)


def _t_half_width(se, df, level) -> float:
    """t_{(1+level)/2, df} · se; 0 for se = 0 (every value equal), nan for df < 1."""
    from scipy import stats

    if not df >= 1:
        return float("nan")
    if se == 0.0:
        return 0.0
    return float(stats.t.ppf((1.0 + level) / 2.0, df) * se)


def mean_ci(values, level=0.95) -> tuple[float, float, float]:
    """Mean over seeds and its two-sided Student-t confidence interval.

    .. math:: \\bar x \\pm t_{(1+\\mathrm{level})/2,\\; n-1}\\, \\frac{s}{\\sqrt n},
              \\qquad s^2 = \\frac{1}{n-1}\\sum_i (x_i - \\bar x)^2

    The t quantile is ``scipy.stats.t.ppf``.  The interval assumes the seeds'
    values are independent draws from one normal distribution; with three to
    five seeds that assumption cannot be checked, so report the values too
    (:func:`seed_summary`).

    Parameters
    ----------
    values : sequence of float, shape (n,)
        One finite value per seed (e.g. final test accuracies).
    level : float in (0, 1)
        Coverage of the interval.

    Returns
    -------
    (mean, low, high) : tuple of float
        For one value (n = 1) the interval is ``(nan, nan)``: one seed measures
        no noise, and :func:`decide` calls such a comparison ``"untested"``.

    Examples
    --------
    >>> m, lo, hi = mean_ci([1, 2, 3, 4, 5])      # 3 ± 2.776 · √2.5 / √5
    >>> m, round(lo, 4), round(hi, 4)
    (3.0, 1.0368, 4.9632)
    """
    a = _values("values", values)
    level = _level(level)
    mean = float(a.mean())
    if a.size < 2:
        return mean, float("nan"), float("nan")
    half = _t_half_width(float(a.std(ddof=1)) / math.sqrt(a.size), a.size - 1, level)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class SeedSummary:
    """One setting's metric over every seed drawn (:func:`seed_summary`).

    Attributes
    ----------
    mean : float
    ci : tuple of float
        (low, high), the Student-t interval of :func:`mean_ci` ((nan, nan) for one seed).
    std : float
        Sample standard deviation (ddof = 1; nan for one seed).
    n : int
    values : tuple of float
        Every seed's value, in the order given.
    level : float
    """

    mean: float
    ci: tuple
    std: float
    n: int
    values: tuple
    level: float = 0.95

    def text(self, digits=4) -> str:
        """``"0.9770 (95 % CI 0.9745 to 0.9795; n=3: 0.9760, 0.9770, 0.9780)"``."""
        each = ", ".join(f"{v:.{digits}f}" for v in self.values)
        if not np.isfinite(self.ci[0]):
            return f"{self.mean:.{digits}f} (one seed: {each})"
        return (f"{self.mean:.{digits}f} ({100 * self.level:g} % CI {self.ci[0]:.{digits}f} to "
                f"{self.ci[1]:.{digits}f}; n={self.n}: {each})")


def seed_summary(values, level=0.95) -> SeedSummary:
    """Mean, Student-t interval (:func:`mean_ci`), std and n over seeds, and every seed's value.

    Examples
    --------
    >>> s = seed_summary([0.976, 0.977, 0.978])
    >>> s.n, round(s.mean, 3), s.values
    (3, 0.977, (0.976, 0.977, 0.978))
    """
    a = _values("values", values)
    mean, low, high = mean_ci(a, level)
    return SeedSummary(mean=mean, ci=(low, high), std=float(a.std(ddof=1)) if a.size > 1 else float("nan"),
                       n=int(a.size), values=tuple(float(v) for v in a), level=float(level))


@dataclass(frozen=True)
class Comparison:
    """The difference a − b of two methods' metric over seeds, with its confidence interval (:func:`compare`).

    Attributes
    ----------
    difference : float
        Mean of a minus mean of b (paired: the mean of the per-seed differences, the same number).
    low, high : float
        The ``level`` confidence interval of the difference (nan when a side has one seed).
    n_a, n_b : int
        Seeds on each side.
    paired : bool
        Paired t on the per-seed differences (True) or Welch's t (False).
    df : float
        Degrees of freedom of the t quantile.
    method : str
        How the interval was computed, as a phrase for the evidence sentence.
    level : float
    metric : str or None
        The History curve compared (None when numbers were given).
    """

    difference: float
    low: float
    high: float
    n_a: int
    n_b: int
    paired: bool
    df: float
    method: str
    level: float = 0.95
    metric: str | None = None

    def text(self, digits=4) -> str:
        """``"a − b = +0.0020 (95 % CI +0.0005 to +0.0035; paired t over 3 seeds)"``."""
        if not np.isfinite(self.low):
            return f"a − b = {self.difference:+.{digits}f} (no interval: {self.method})"
        return (f"a − b = {self.difference:+.{digits}f} ({100 * self.level:g} % CI {self.low:+.{digits}f} to "
                f"{self.high:+.{digits}f}; {self.method})")


def _side(name, x, metric):
    """(values, seeds or None) of one side of :func:`compare`: histories' final metric, or the numbers."""
    if isinstance(x, History):
        raise TypeError(f"{name} must be a list of History objects (every seed of a setting) or of numbers, "
                        f"got one History")
    items = list(x) if isinstance(x, (list, tuple)) else None
    if items and all(isinstance(h, History) for h in items):
        return _values(name, [_final(h, metric) for h in items]), [h.config.get("seed") for h in items]
    if items and any(isinstance(h, History) for h in items):
        raise TypeError(f"{name} must hold History objects or numbers, not both")
    return _values(name, x), None


def compare(a, b, *, metric="test_accuracy", paired=None, level=0.95) -> Comparison:
    """The mean difference a − b over seeds with a Student-t confidence interval: paired t or Welch.

    Paired (the runs of a and b share their seeds, so each pair starts from the
    same initial weights and sample order): with d_i = a_i − b_i over n seeds,

    .. math:: \\bar d \\pm t_{(1+\\mathrm{level})/2,\\; n-1}\\, s_d / \\sqrt n .

    Welch (different seeds, or ``paired=False``):

    .. math:: \\bar a - \\bar b \\pm t_{(1+\\mathrm{level})/2,\\; \\nu}
              \\sqrt{s_a^2/n_a + s_b^2/n_b}, \\qquad
              \\nu = \\frac{(s_a^2/n_a + s_b^2/n_b)^2}{(s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)} .

    A failed run counts at its last logged value (a diverged run's accuracy is
    at chance level): it widens the interval rather than vanishing from it.

    Parameters
    ----------
    a, b : list of History, or sequence of float
        Every seed of one setting each.  Histories give their final ``metric``;
        numbers are used as they are.
    metric : str
        The History curve whose last logged value is compared (histories only).
    paired : bool or None
        None: paired when a and b are both histories with the same set of
        seeds (matched by ``config["seed"]``), Welch otherwise.  True: demand
        pairing (histories with the same seeds, or numbers of equal length,
        paired by position).  False: Welch.
    level : float in (0, 1)

    Returns
    -------
    Comparison
        Its interval is nan when a side (or the pairs) has fewer than two values.

    Examples
    --------
    >>> c = compare([0.978, 0.979, 0.981], [0.975, 0.977, 0.978], paired=True)
    >>> c.paired, round(c.difference, 4), c.low > 0
    (True, 0.0027, True)
    """
    level = _level(level)
    if paired is not None and not isinstance(paired, (bool, np.bool_)):
        raise TypeError(f"paired must be True, False or None (decide from the seeds), got {paired!r}")
    if not isinstance(metric, str):
        raise TypeError(f"metric must be the name of a History curve, got {metric!r}")
    x, seeds_a = _side("a", a, metric)
    y, seeds_b = _side("b", b, metric)
    same_seeds = (seeds_a is not None and seeds_b is not None and len(set(seeds_a)) == len(seeds_a)
                  and len(set(seeds_b)) == len(seeds_b) and set(seeds_a) == set(seeds_b))
    if paired is None:
        paired = same_seeds
    elif paired:
        if seeds_a is not None or seeds_b is not None:
            if not same_seeds:
                raise ValueError(f"paired=True needs a and b to hold the same seeds, once each; got seeds "
                                 f"{seeds_a if seeds_a is not None else 'none (numbers)'} and "
                                 f"{seeds_b if seeds_b is not None else 'none (numbers)'}")
        elif x.size != y.size:
            raise ValueError(f"paired=True needs as many values in a as in b (paired by position), "
                             f"got {x.size} and {y.size}")
    used_metric = metric if seeds_a is not None or seeds_b is not None else None
    if paired:
        if seeds_a is not None:
            order_b = {s: i for i, s in enumerate(seeds_b)}
            y = y[[order_b[s] for s in seeds_a]]
        d = x - y
        n = int(d.size)
        df = float(n - 1)
        se = float(d.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
        method = f"paired t over {n} seeds" if used_metric else f"paired t over {n} pairs"
        diff = float(d.mean())
    else:
        va = float(x.var(ddof=1)) / x.size if x.size > 1 else float("nan")
        vb = float(y.var(ddof=1)) / y.size if y.size > 1 else float("nan")
        se = math.sqrt(va + vb)
        if va + vb == 0.0:
            df = float(x.size + y.size - 2)  # no spread on either side: any ν gives a zero width
        else:
            df = (va + vb) ** 2 / (va ** 2 / (x.size - 1) + vb ** 2 / (y.size - 1)) if np.isfinite(se) else float("nan")
        method = f"Welch t over {x.size} and {y.size} seeds"
        diff = float(x.mean() - y.mean())
    half = _t_half_width(se, df, level) if np.isfinite(se) else float("nan")
    if np.isfinite(half):
        method += f", ν = {df:.3g}"
    else:
        method += " (fewer than two on a side: no noise estimate)"
    return Comparison(difference=diff, low=diff - half, high=diff + half, n_a=int(x.size), n_b=int(y.size),
                      paired=bool(paired), df=float(df), method=method, level=level, metric=used_metric)


def decide(comparison, *, claimed="a > b", margin=None) -> str:
    """The verdict on a claim about a − b, from the confidence interval [low, high] of :func:`compare`.

    The rule, written once (d = a − b, δ = ``margin``):

    ===========  =========================  ======================  ==================
    claimed      holds                      does not hold           partly (otherwise)
    ===========  =========================  ======================  ==================
    ``a > b``    low > 0                    high < 0                the CI contains 0
    ``a < b``    high < 0                   low > 0                 the CI contains 0
    ``a == b``   −δ < low and high < δ      high < −δ or low > δ    the CI crosses ±δ
    ``a >= b``   low > −δ                   high < −δ               the CI contains −δ
    ``a <= b``   high < δ                   low > δ                 the CI contains δ
    ===========  =========================  ======================  ==================

    In words: a claim holds when the whole interval lies on its side, does not
    hold when the whole interval lies on the other side (the runs show the
    opposite), and holds "partly" when the interval straddles the boundary: the
    difference cannot be told from seed noise with these seeds, which is what a
    reviewer would call "not shown" rather than "shown false".  ``a == b`` is
    "as good as, within ±δ" (equivalence); ``a >= b`` is "no worse than b by
    more than δ" (non-inferiority; ``a <= b`` the same for a loss).  With the
    95 % interval these are two one-sided tests at 2.5 % each, stricter than
    the usual 90 % TOST interval.

    δ defaults to :data:`EQUIVALENCE_MARGIN`, 0.003 (0.3 percentage point), for
    an accuracy: the 95 % half-width of one run's accuracy on 10,000 test
    images at 98 % (1.96 · √(0.98 · 0.02 / 10,000) = 0.27 pp).  Two methods
    closer than that differ by less than a fresh test set of the same size
    would move one run's score, which is as equal as this test set can tell.
    A tighter δ (say 0.1 pp) is below that resolution; a looser one would call
    a sixth of the error rate "the same".  Other metrics (losses, numbers)
    need ``margin`` given.

    Parameters
    ----------
    comparison : Comparison
    claimed : {"a > b", "a < b", "a == b", "a >= b", "a <= b"}
    margin : float > 0 or None
        δ, in the metric's units; only for ``"a == b"``, ``"a >= b"`` and ``"a <= b"``.

    Returns
    -------
    str
        ``"holds"``, ``"partly"`` or ``"does not hold"``; ``"untested"`` when the
        interval is nan (a side with one seed: no noise estimate).

    Examples
    --------
    >>> decide(compare([0.978, 0.979, 0.981], [0.975, 0.977, 0.978], paired=True), claimed="a > b")
    'holds'
    """
    if not isinstance(comparison, Comparison):
        raise TypeError(f"comparison must be a Comparison (from compare), got {type(comparison).__name__}")
    check_choice("claimed", claimed, CLAIMS)
    strict = claimed in ("a > b", "a < b")
    if strict and margin is not None:
        raise ValueError(f"margin applies to the claims 'a == b', 'a >= b' and 'a <= b' only, not {claimed!r}")
    if not strict:
        if margin is None:
            if not (comparison.metric or "").endswith("accuracy"):
                raise ValueError(f"margin: give δ in the units of {comparison.metric or 'the numbers compared'} "
                                 f"for claimed={claimed!r} (the default {EQUIVALENCE_MARGIN} is for accuracies)")
            margin = EQUIVALENCE_MARGIN
        margin = check_float("margin", margin, low=0.0, low_open=True)
    low, high = comparison.low, comparison.high
    if not (np.isfinite(low) and np.isfinite(high)):
        return "untested"
    if claimed == "a > b":
        inside, outside = low > 0, high < 0
    elif claimed == "a < b":
        inside, outside = high < 0, low > 0
    elif claimed == "a == b":
        inside, outside = -margin < low and high < margin, high < -margin or low > margin
    elif claimed == "a >= b":
        inside, outside = low > -margin, high < -margin
    else:
        inside, outside = high < margin, low > margin
    return "holds" if inside else ("does not hold" if outside else "partly")


def select(histories, metric="validation_accuracy", *, allow_test=False) -> list[History]:
    """The runs (every seed) of the setting with the best mean final ``metric``: the tuning step of the protocol.

    Settings are grouped by :func:`ex3lib.experiments.by_setting`; the best is
    the highest mean for an accuracy, the lowest for a loss; a tie goes to the
    first setting seen.  A setting with failed runs ranks by its mean with the
    failed runs counted at their last value; a nan mean (an overflowed run's
    loss) ranks last.

    Selecting on the test set and then reporting the test score of the winner
    reports the best of many noisy draws, biased upwards: hence the refusal of
    :data:`TEST_METRICS` unless ``allow_test=True`` (to reproduce a selection
    that was made that way, such as the report's).

    Parameters
    ----------
    histories : list of History
    metric : str
        A curve ending in ``accuracy`` or ``loss`` (see :func:`metric_curve`).
    allow_test : bool

    Examples
    --------
    >>> best = select(sgd_runs)                                            # doctest: +SKIP
    >>> best[0].config["learning_rate"], seed_summary([h.final_accuracy for h in best]).text()  # doctest: +SKIP
    """
    if not isinstance(metric, str):
        raise TypeError(f"metric must be the name of a History curve, got {metric!r}")
    if metric in TEST_METRICS and allow_test is not True:
        raise ValueError(f"metric={metric!r} selects on the test set: the winner's test score is then the best "
                         f"of many noisy draws, biased upwards. Select on 'validation_accuracy' (runs with "
                         f"RunConfig(validation_size=10_000)) and report the test score of the selected setting, "
                         f"or pass allow_test=True to reproduce a test-set selection on purpose")
    higher = _higher_is_better(metric)
    groups = list(by_setting(histories).values())
    if not groups:
        raise ValueError("histories must hold at least one History")
    means = np.array([np.mean([_final(h, metric) for h in runs]) for runs in groups])
    score = np.where(np.isnan(means), -np.inf, means if higher else -means)
    return groups[int(np.argmax(score))]


@dataclass(frozen=True)
class TimeToTarget:
    """When a run first reached a target (:func:`time_to_target`).

    Attributes
    ----------
    reached : bool
    epochs : float
        Fractional epoch of the first logged point at or beyond the target (nan if never).
    updates : int or float
        Optimiser updates taken by then (nan if never).
    seconds : float
        Wall-clock seconds since the start of the run at that point (nan if never).
    target : float
    metric : str
    """

    reached: bool
    epochs: float
    updates: float
    seconds: float
    target: float
    metric: str


def _updates_at(history, i) -> int:
    """Updates taken by logged point ``i``: ``extra["updates_at"]``, else from n_train and the batch size."""
    if "updates_at" in history.extra:
        return int(history.extra["updates_at"][i])
    if "n_train" not in history.extra:
        raise ValueError(f"history: {_run_name(history)} has neither extra['updates_at'] nor extra['n_train'] "
                         f"to count its updates from")
    n, m = int(history.extra["n_train"]), int(history.config["batch_size"])
    epochs, samples = divmod(round(float(history.epoch[i]) * n), n)
    updates = epochs * math.ceil(n / m) + math.ceil(samples / m)
    # A run stopped by a non-finite loss did not apply the batch it stopped at.
    return min(updates, int(history.extra.get("updates", updates)))


def time_to_target(history, target, metric="test_accuracy") -> TimeToTarget:
    """Epochs, updates and seconds until ``metric`` first reaches ``target`` (AlgoPerf's time-to-result).

    The first logged point with ``metric >= target`` (an accuracy) or
    ``metric <= target`` (a loss).  ``updates`` is ``extra["updates_at"]`` at
    that point, or, for runs logged before that key existed,
    ``k · ⌈n_train / m⌉ + ⌈s / m⌉`` at epoch k + s / n_train (``extra["n_train"]``,
    m the batch size; windows end on batch boundaries).  ``seconds`` is the
    run's ``time`` at that point, which includes its evaluations.

    A run that never reaches the target, including one that diverged first,
    has ``reached=False`` and nan for the rest: it counts as not reaching it,
    never as infinitely slow in a mean.  A run that reached it and diverged
    later did reach it.

    Examples
    --------
    >>> t = time_to_target(run, 0.97, metric="validation_accuracy")        # doctest: +SKIP
    >>> t.reached, t.epochs, t.updates                                      # doctest: +SKIP
    (True, 1.5, 9000)
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a History, got {type(history).__name__}")
    if not isinstance(metric, str):
        raise TypeError(f"metric must be the name of a History curve, got {metric!r}")
    higher = _higher_is_better(metric)
    target = check_float("target", target)
    values = metric_curve(history, metric)
    hit = np.flatnonzero(values >= target if higher else values <= target)
    if hit.size == 0:
        nan = float("nan")
        return TimeToTarget(False, nan, nan, nan, target, metric)
    i = int(hit[0])
    return TimeToTarget(True, float(history.epoch[i]), _updates_at(history, i), float(history.time[i]),
                        target, metric)


def lr_sensitivity(histories, metric="validation_accuracy", level=0.95):
    """Mean final ``metric`` against the learning rate η, per optimiser: the tuning-sensitivity table.

    One row per setting (every seed of it), grouped by
    :func:`ex3lib.experiments.by_setting`, labelled by the optimiser as its
    config names it (``"SGD"``, ``"momentum α=0.9"``, ``"Nesterov α=0.9"``,
    ``"Adam β₁=0.9 β₂=0.999"``...), sorted by optimiser (first seen) then η.
    Failed runs (:func:`ex3lib.experiments.failed`) count at their last value
    and are flagged.

    Returns
    -------
    pandas.DataFrame
        Columns ``optimiser``, ``learning_rate``, ``mean``, ``ci_low``,
        ``ci_high`` (:func:`mean_ci`; nan for one seed), ``std``, ``n``,
        ``n_failed`` and ``failed`` (any seed failed); ``attrs["metric"]``.

    Raises
    ------
    ValueError
        Two settings share an optimiser and η but differ in something else
        (e.g. the batch size): the message names the fields; pass the runs of
        one of them (``experiments.runs_at(runs, batch_size=10)``).

    Examples
    --------
    >>> lr_sensitivity(sgd_runs + momentum_runs)[["optimiser", "learning_rate", "mean"]]  # doctest: +SKIP
    """
    import pandas as pd

    if not isinstance(metric, str):
        raise TypeError(f"metric must be the name of a History curve, got {metric!r}")
    level = _level(level)
    groups = by_setting(histories)
    if not groups:
        raise ValueError("histories must hold at least one History")
    rows, seen, labels = [], {}, []
    for key, runs in groups.items():
        cfg = runs[0].config
        label, lr = _optimiser_label(cfg), float(cfg["learning_rate"])
        if (label, lr) in seen:
            other = dict(seen[(label, lr)])
            differ = sorted(k for k, v in key if other.get(k) != v)
            if "batch_size" in differ and dict(key).get("batch_schedule") == other.get("batch_schedule") == "constant":
                differ.remove("batch_final")  # a constant batch's batch_final is its batch_size
            raise ValueError(f"histories: two settings of {label} at η={lr:g} differ in {', '.join(differ)}; "
                             f"pass the runs of one of them (e.g. experiments.runs_at(runs, {differ[0]}=...))")
        seen[(label, lr)] = key
        if label not in labels:
            labels.append(label)
        values = [_final(h, metric) for h in runs]
        finite = np.all(np.isfinite(values))
        mean, low, high = mean_ci(values, level) if finite else (float(np.mean(values)), np.nan, np.nan)
        n_failed = int(sum(failed(h) for h in runs))
        rows.append({"optimiser": label, "learning_rate": lr, "mean": mean, "ci_low": low, "ci_high": high,
                     "std": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                     "n": len(runs), "n_failed": n_failed, "failed": n_failed > 0})
    rows.sort(key=lambda r: (labels.index(r["optimiser"]), r["learning_rate"]))
    table = pd.DataFrame(rows, columns=["optimiser", "learning_rate", "mean", "ci_low", "ci_high", "std", "n",
                                        "n_failed", "failed"])
    table.attrs["metric"] = metric
    return table


# --- The runs of the book's protocol chapter (book/protocol.ipynb), declared once.

#: η_N / η₀ of the decay the protocol tunes: the report's 0.1 → 0.001.
DECAY_RATIO = 0.01
#: The methods the protocol compares, in the book's order.
METHODS = ("SGD", "SGD + decay", "momentum α=0.9", "AdaGrad", "RMSProp", "Adam")
#: Each method's name in glued values and sweep columns (``sgd_decay_test_mean``).
METHOD_KEYS = dict(zip(METHODS, ("sgd", "sgd_decay", "momentum", "adagrad", "rmsprop", "adam")))
#: The settings whose final sharpness is measured: m = 1, 10, 100 at equal η/m and at equal η.
#: Equal η/m = 10⁻³ are the report's "balanced" settings (η = 1 at m = 100, for η/m = 10⁻², diverges).
SHARPNESS_SETTINGS = {"equal η/m": ((0.001, 1), (0.01, 10), (0.1, 100)),
                      "equal η": ((0.01, 1), (0.01, 10), (0.01, 100))}


#: How many half-decade steps the protocol may add past an edge of a method's tuning grid (:func:`extend_tuning`).
MAX_EXTENSIONS = 2


def next_rate(lr, side) -> float:
    """The next learning rate past ``lr`` on the half-decade ladder 1, 3, 10, 30, … × 10ᵏ of the explorers.

    ``side`` is +1 (larger) or −1 (smaller).

    Examples
    --------
    >>> next_rate(0.1, +1), next_rate(0.3, +1), next_rate(1e-4, -1), next_rate(3e-5, -1)
    (0.3, 1.0, 3e-05, 1e-05)
    """
    check_float("lr", lr, low=0.0, low_open=True)
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (a larger learning rate) or -1 (a smaller one), got {side!r}")
    exponent = math.floor(math.log10(lr))
    ladder = sorted(float(f"{m}e{e}") for e in range(exponent - 1, exponent + 3) for m in (1, 3))
    if side > 0:
        return next(v for v in ladder if v > lr * (1 + 1e-9))
    return max(v for v in ladder if v < lr * (1 - 1e-9))


def _at_rate(config: RunConfig, lr: float) -> RunConfig:
    """``config`` at learning rate ``lr``; a decay keeps its ratio η_N/η₀ = :data:`DECAY_RATIO`, as in :func:`tuning_runs`."""
    if config.schedule == "linear_decay":
        return config.replace(learning_rate=lr, lr_final=lr * DECAY_RATIO)
    return config.replace(learning_rate=lr)


def edge_step(histories, declared, *, max_steps=MAX_EXTENSIONS):
    """The learning rate to try next because the selected one lies at an edge of those tried, or None.

    A best setting at an edge of the grid is only the best the grid allows:
    the optimum may lie beyond it. When :func:`select` picks the largest (or
    smallest) η of ``histories``, the answer is the next half-decade step past
    it (:func:`next_rate`), unless ``max_steps`` steps past that edge of the
    ``declared`` grid have been taken already. A failed run never stops the
    search by itself: it is simply never selected, so the edge moves inside.

    Parameters
    ----------
    histories : list of History
        One method's tuning runs, one setting per η (seed 0).
    declared : sequence of float
        The learning rates of the declared grid.
    max_steps : int
    """
    check_int("max_steps", max_steps, 0)
    declared = sorted(float(v) for v in declared)
    if not declared:
        raise ValueError("declared must hold the learning rates of the declared grid, got none")
    etas = sorted({float(h.config["learning_rate"]) for h in histories})
    lr = float(select(histories)[0].config["learning_rate"])
    if len(etas) < 2:
        return None
    if lr == etas[-1] and sum(v > declared[-1] for v in etas) < max_steps:
        return next_rate(lr, +1)
    if lr == etas[0] and sum(v < declared[0] for v in etas) < max_steps:
        return next_rate(lr, -1)
    return None


def extend_tuning(tuning, data=None, *, max_steps=MAX_EXTENSIONS, **run_many_kwargs) -> dict:
    """Each method's tuning runs, extended past an edge of the grid while the selected setting lies there.

    Round by round, every method whose selection is at an edge
    (:func:`edge_step`) gets one more run one half-decade step beyond it, all
    of a round trained in one :func:`ex3lib.run_many` call (so through the
    results store); at most ``max_steps`` rounds. Each method's runs come back
    sorted by η; the runs of the declared grid are kept as they are.

    Parameters
    ----------
    tuning : dict of str to list of History
        The declared grid's runs by method (as :func:`run_protocol` trains them).
    """
    from .experiments import run_groups

    declared = {name: [h.config["learning_rate"] for h in runs] for name, runs in tuning.items()}
    tuning = {name: list(runs) for name, runs in tuning.items()}
    for _ in range(max_steps):
        more = {}
        for name, runs in tuning.items():
            lr = edge_step(runs, declared[name], max_steps=max_steps)
            if lr is not None:
                more[name] = [_at_rate(RunConfig.from_history(runs[0]), lr)]
        if not more:
            break
        for name, new in run_groups(more, data, **run_many_kwargs).items():
            tuning[name] = sorted(tuning[name] + new, key=lambda h: h.config["learning_rate"])
    return tuning


def extensions(tuning, declared=None) -> dict[str, list[float]]:
    """The learning rates each method was tuned at beyond the declared grid (:func:`extend_tuning`), by method.

    ``declared``: the declared grid's learning rates by method (default: those of :func:`tuning_runs`).
    """
    if declared is None:
        declared = {name: [c.learning_rate for c in configs] for name, configs in tuning_runs().items()}
    out = {}
    for name, runs in tuning.items():
        grid = set(declared.get(name, ()))
        extra = sorted(float(h.config["learning_rate"]) for h in runs if h.config["learning_rate"] not in grid)
        if extra:
            out[name] = extra
    return out


def grid_note(tuning, selected, declared=None) -> str:
    """One sentence for a page: where the tuning grid was extended, and any selection still at an edge.

    ``tuning`` and ``selected`` as in :class:`ProtocolRuns`; ``declared`` as in :func:`extensions`.
    """
    extended = extensions(tuning, declared)
    parts = []
    if extended:
        said = ", ".join(f"{name} (η = {', '.join(f'{v:g}' for v in etas)})" for name, etas in extended.items())
        parts.append(f"The grid was extended one half-decade step at a time past the edge where the selection "
                     f"lay, for {said}.")
    still = []
    for name, runs in selected.items():
        etas = [h.config["learning_rate"] for h in tuning[name]]
        lr = runs[0].config["learning_rate"]
        if lr in (min(etas), max(etas)):
            still.append(f"{name} (η = {lr:g})")
    if still:
        parts.append(f"Selected at an edge of the learning rates tried even so: {', '.join(still)}; a better "
                     f"setting may lie beyond, so {'this method' if len(still) == 1 else 'these methods'} "
                     f"{'is' if len(still) == 1 else 'are'} shown at the best the search allows, not at "
                     f"{'its' if len(still) == 1 else 'their'} best.")
    else:
        parts.append("Every method's selected setting lies inside the learning rates it was tuned on.")
    return " ".join(parts)


def tuning_runs(*, epochs=10, train_size=None) -> dict[str, list[RunConfig]]:
    """The runs the protocol selects on, by method: each method over the η of the methods' explorer, m = 10.

    The cells of :data:`ex3lib.pages.GRIDS` ``["adaptive"]`` (trained under the
    validation split, seed 0), and SGD with the report's linear decay from each
    η₀ to η₀ × :data:`DECAY_RATIO`.  With the book's defaults (10 epochs, all
    images) they are the explorer's own runs.

    Examples
    --------
    >>> runs = tuning_runs()
    >>> list(runs)[:2], len(runs["Adam"]), runs["Adam"][0].validation_size
    (['SGD', 'SGD + decay'], 7, 10000)
    """
    from .pages import grid

    g = grid("adaptive").at_scale(train_size)
    by_method = {}
    for i, (method, _) in enumerate(g.rows.choices):
        by_method[method] = [g.cell(i, j).replace(epochs=epochs)
                             for j in range(len(g.columns.choices))]
    by_method["SGD + decay"] = [_at_rate(c.replace(schedule="linear_decay"), c.learning_rate)
                                for c in by_method["SGD"]]
    return {name: by_method[name] for name in METHODS}


def seeds_of(config: RunConfig, n_seeds: int) -> list[RunConfig]:
    """``config`` with seeds 0 to ``n_seeds`` − 1 (seed 0 first: the tuning run itself)."""
    check_int("n_seeds", n_seeds, 1)
    return [config.replace(seed=s) for s in range(n_seeds)]


def sharpness_runs(*, n_seeds=3, epochs=10, train_size=None) -> list[RunConfig]:
    """The runs whose final parameters are kept for the sharpness measurements (:data:`SHARPNESS_SETTINGS`).

    Report protocol (all training images), plain SGD, ``keep_params=True``; each setting once.
    """
    settings = dict.fromkeys(s for group in SHARPNESS_SETTINGS.values() for s in group)
    return [RunConfig(learning_rate=lr, batch_size=m, epochs=epochs, train_size=train_size, seed=seed,
                      keep_params=True) for lr, m in settings for seed in range(n_seeds)]


def keep_sharpness_params(configs) -> list[RunConfig]:
    """``configs``, each run :func:`sharpness_runs` would measure with ``keep_params=True``, the rest as given.

    A sharpness run is plain SGD at a setting of :data:`SHARPNESS_SETTINGS`
    with every other field at its default (any seed, epochs and training
    size). The SGD chapter's grid holds those runs; trained there with their
    parameters, they are trained once for the book: the results store answers
    a config without ``keep_params`` from the same config stored with it
    (:meth:`ex3lib.ResultsStore.get`), and this chapter finds them stored.

    Examples
    --------
    >>> [c.keep_params for c in keep_sharpness_params([RunConfig(learning_rate=0.01, batch_size=10),
    ...                                                RunConfig(learning_rate=0.1, batch_size=10)])]
    [True, False]
    """
    settings = {s for group in SHARPNESS_SETTINGS.values() for s in group}
    kept = []
    for c in configs:
        if not isinstance(c, RunConfig):
            raise TypeError(f"configs must hold RunConfig objects, got {type(c).__name__}")
        plain_sgd = RunConfig(learning_rate=c.learning_rate, batch_size=c.batch_size, epochs=c.epochs,
                              train_size=c.train_size, seed=c.seed)
        measured = (c.learning_rate, c.batch_size) in settings and c.replace(keep_params=False) == plain_sgd
        kept.append(c.replace(keep_params=True) if measured else c)
    return kept


def network_of(history: History) -> MLP:
    """The network a run with ``keep_params`` ended with (float64 or float32, as it trained)."""
    if not isinstance(history, History):
        raise TypeError(f"history must be an ex3lib.History, got {type(history).__name__}")
    if history.params is None:
        raise ValueError(f"{_run_name(history)} kept no parameters: train it with RunConfig(keep_params=True)")
    c = history.config
    net = MLP(tuple(c["layers"]), bias=c["bias"], dtype=c["dtype"], seed=c["init_seed"])
    if history.params.shape != net.params.shape:
        raise ValueError(f"{_run_name(history)}: its {history.params.size} kept parameters do not fit the "
                         f"{net.params.size} of its network {tuple(c['layers'])}")
    net.params[:] = history.params
    return net


def sharpness_measurements(histories, x, y, *, epsilon=1e-3, iterations=200, tol=1e-3, store=None) -> list[dict]:
    """λ_max and ε-sharpness at the end of each kept run of :func:`sharpness_runs`, one dict per run and group.

    Each run is measured on the samples ``(x, y)`` (a subset of the training
    images) with :func:`ex3lib.hessian.top_eigenvalue` and
    :func:`ex3lib.hessian.epsilon_sharpness`; failed runs
    (:func:`ex3lib.experiments.failed`) are left out, since they ended nowhere
    near a minimum. A run in both groups of :data:`SHARPNESS_SETTINGS` (e.g.
    η = 0.01, m = 10) appears in both, measured once. ``iterations`` caps
    the Hessian-vector products of each λ_max; the Lanczos method took 12
    to 22 on the chapter's networks (power iteration, which this replaced,
    needed up to 171 where the two largest eigenvalues were close).

    Each run's measurement is kept in the results store (``store``: a
    :class:`ex3lib.ResultsStore`, None for the default one, False for none)
    under the run's store key, the samples' sha256, the settings and the
    fingerprint of :mod:`ex3lib.hessian` and what it imports, so the chapter
    and the conclusion measure each run once, and a change to any of those
    measures again.

    Returns
    -------
    list of dict
        ``group``, ``learning_rate``, ``batch_size``, ``seed``,
        ``top_eigenvalue``, ``residual``, ``iterations``, ``converged``,
        ``epsilon_sharpness``, ``loss`` (on ``(x, y)``) and ``test_accuracy`` (final).
    """
    from . import hessian
    from .fingerprint import module_fingerprint
    from .store import ResultsStore

    if store is None:
        store = ResultsStore()
    elif store is not False and not isinstance(store, ResultsStore):
        raise TypeError(f"store must be a ResultsStore, None (the default store) or False, got {store!r}")
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    samples = hashlib.sha256(f"{x.shape}{x.dtype}{y.shape}{y.dtype}".encode() + x.tobytes() + y.tobytes()).hexdigest()
    code = module_fingerprint("hessian.py")
    measured = {}
    rows = []
    for group, settings in SHARPNESS_SETTINGS.items():
        for h in histories:
            key = (h.config["learning_rate"], h.config["batch_size"])
            if key not in settings or failed(h):
                continue
            ident = (*key, h.config["seed"])
            if ident not in measured:
                cache_key = {"run": store.key(RunConfig.from_history(h)), "samples": samples,
                             "epsilon": epsilon, "iterations": iterations, "tol": tol, "code": code} if store else None
                value = store.get_measurement("sharpness", cache_key) if store else None
                if value is None:
                    net = network_of(h)
                    top = hessian.top_eigenvalue(net, x, y, iterations=iterations, tol=tol, seed=h.config["seed"])
                    sharp = hessian.epsilon_sharpness(net, x, y, epsilon=epsilon)
                    value = {"top_eigenvalue": top.value, "residual": top.residual,
                             "iterations": top.iterations,
                             "converged": bool(top.converged), "epsilon_sharpness": sharp.value,
                             "loss": sharp.loss}
                    if store:
                        try:
                            store.put_measurement("sharpness", cache_key, value)
                        except OSError as err:
                            warnings.warn(f"could not keep a sharpness measurement in {store.root} ({err})")
                measured[ident] = {**value, "test_accuracy": h.final_accuracy}
            rows.append({"group": group, "learning_rate": key[0], "batch_size": key[1],
                         "seed": h.config["seed"], **measured[ident]})
    return rows


def interpolations(histories, x, y, *, alphas=None, seed=0) -> dict:
    """The loss along the line from the smallest-batch run to the largest-batch one of each group, for ``seed``.

    Keys like ``"equal η/m: m=1 (η=0.01) → m=100 (η=1)"``; values :class:`ex3lib.hessian.LineLosses`
    (``alphas`` default: −0.5 to 1.5 in steps of 0.05). Pairs with a failed run are left out.
    """
    from . import hessian

    alphas = np.round(np.arange(-0.5, 1.5001, 0.05), 10) if alphas is None else alphas
    at = {(h.config["learning_rate"], h.config["batch_size"]): h for h in histories if h.config["seed"] == seed}
    lines = {}
    for group, settings in SHARPNESS_SETTINGS.items():
        small, large = min(settings, key=lambda s: s[1]), max(settings, key=lambda s: s[1])
        a, b = at.get(small), at.get(large)
        if a is None or b is None or failed(a) or failed(b):
            continue
        label = f"{group}: m={small[1]} (η={small[0]:g}) → m={large[1]} (η={large[0]:g})"
        lines[label] = hessian.line_losses(network_of(a), network_of(b), x, y, alphas)
    return lines


def growing_batch(decay: RunConfig) -> RunConfig:
    """The batch-size schedule that mirrors a linear decay (Smith et al. 2018): η₀ throughout, m growing.

    ``decay`` decays η from η₀ to η_N at batch size m₀ (report Eq. 5); the
    result keeps η₀ and grows m from m₀ towards m₀ η₀ / η_N, so that η₀/m_k is
    the decay's η_k/m₀ every epoch (:func:`ex3lib.schedules.make_batch_schedule`).

    Examples
    --------
    >>> growing_batch(RunConfig(schedule="linear_decay", learning_rate=0.1, lr_final=0.001)).label
    'SGD η=0.1 m=10→1000'
    """
    if not isinstance(decay, RunConfig) or decay.schedule != "linear_decay":
        raise ValueError(f"decay must be a RunConfig with schedule='linear_decay', got {decay!r}")
    return decay.replace(schedule="constant", lr_final=None, batch_schedule="increase",
                         batch_final=round(decay.batch_size * decay.learning_rate / decay.lr_final))


@dataclass(frozen=True)
class ProtocolRuns:
    """The runs of the protocol (:func:`run_protocol`), by method name (:data:`METHODS`).

    ``tuning[name]``: the tuning runs (seed 0, one per η, the declared grid
    extended past an edge where the selection lay: :func:`extend_tuning`); ``selected[name]``:
    the runs of the setting :func:`select` picked among them; ``seeds[name]``:
    that setting with every seed; ``balance[(η, m)]``: the report's balanced
    SGD settings (:data:`ex3lib.claims.BALANCED`) with every seed, under the
    same split.
    """

    tuning: dict
    selected: dict
    seeds: dict
    balance: dict


def run_protocol(*, n_seeds=10, epochs=10, train_size=None, data=None, **run_many_kwargs) -> ProtocolRuns:
    """Tune every method on the validation split, then rerun each selected setting with ``n_seeds`` seeds.

    Tuning is on the declared grid (:func:`tuning_runs`), extended past an edge
    while a method's selected setting lies there (:func:`extend_tuning`).

    The runs go through :func:`ex3lib.run_many` and its store (the tuning runs
    are the methods' explorer's own), so the protocol chapter and the
    conclusion share them.
    """
    from .claims import BALANCED
    from .data import VALIDATION_SIZE
    from .experiments import run_groups

    check_int("n_seeds", n_seeds, 2)
    tuning = run_groups(tuning_runs(epochs=epochs, train_size=train_size), data, **run_many_kwargs)
    tuning = extend_tuning(tuning, data, **run_many_kwargs)
    selected = {name: select(runs) for name, runs in tuning.items()}
    base = dict(epochs=epochs, train_size=train_size, validation_size=VALIDATION_SIZE)
    groups = {name: seeds_of(RunConfig.from_history(runs[0]), n_seeds) for name, runs in selected.items()}
    groups.update({("balance", lr, m): seeds_of(RunConfig(learning_rate=lr, batch_size=m, **base), n_seeds)
                   for lr, m in BALANCED})
    runs = run_groups(groups, data, **run_many_kwargs)
    return ProtocolRuns(tuning=tuning, selected=selected, seeds={name: runs[name] for name in selected},
                        balance={(lr, m): runs[("balance", lr, m)] for lr, m in BALANCED})


def schedule_runs(*, n_seeds=3, epochs=10, train_size=None) -> dict[str, list[RunConfig]]:
    """The report's decay (η₀ = 0.1 → η_N = 0.001, m = 10) and the growing batch that mirrors it, ``n_seeds`` each.

    Keys ``"decay"`` and ``"growing batch"`` (:func:`growing_batch`); the report's protocol (all training images).
    """
    decay = RunConfig(schedule="linear_decay", learning_rate=0.1, lr_final=0.001, batch_size=10, epochs=epochs,
                      train_size=train_size)
    return {"decay": seeds_of(decay, n_seeds), "growing batch": seeds_of(growing_batch(decay), n_seeds)}
