r"""Finite-difference checks of the analytical gradient (report §2.2).

For a weight :math:`w` and step :math:`h` the three approximations of
:math:`\partial L / \partial w` are

* forward:  :math:`(L(w + h) - L(w)) / h` — truncation error :math:`O(h)`
* backward: :math:`(L(w) - L(w - h)) / h` — truncation error :math:`O(h)`
* central:  :math:`(L(w + h) - L(w - h)) / 2h` — truncation error :math:`O(h^2)`

and each also carries a round-off error of about :math:`\epsilon_{mach} |L| / h`,
which grows as :math:`h` shrinks: that trade-off is what :func:`h_sweep` shows.

The relative error of a weight is :math:`|g_{num} - g_{ana}| / \max(|g_{num}|, |g_{ana}|)`.
Weights whose input is 0 for the sample (most first-layer weights: most
pixels are 0) cannot change the loss; both gradients are exactly 0 there.
Statistics are over the *informative* weights, those with a non-zero
analytical or numerical gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import kernels
from ._validate import check_float, check_int
from .network import MLP

METHODS = ("forward", "backward", "central")


@dataclass
class GradCheck:
    """Per-weight results of :func:`gradcheck` for the checked layers.

    Attributes
    ----------
    layers : list of int
        The checked layers (0 = input to first hidden layer).
    h : float
        The finite-difference step.
    analytic : list of ndarray
        Back-propagated gradients, one (fan_in, fan_out) array per checked layer.
    numeric : dict
        ``numeric[method][i]`` is the finite-difference gradient of ``layers[i]``.
    """

    layers: list
    h: float
    analytic: list
    numeric: dict

    def abs_error(self, method: str) -> np.ndarray:
        """``|numeric - analytic|`` of every checked weight, flattened layer after layer."""
        _check_method(method)
        return np.concatenate([np.abs(n - a).ravel() for n, a in zip(self.numeric[method], self.analytic)])

    def informative(self, method: str) -> np.ndarray:
        """Mask of the weights where either gradient is non-zero (same order as :meth:`abs_error`)."""
        _check_method(method)
        return np.concatenate([((n != 0) | (a != 0)).ravel() for n, a in zip(self.numeric[method], self.analytic)])

    def rel_error(self, method: str) -> np.ndarray:
        """Relative errors of the informative weights (see the module docstring)."""
        _check_method(method)
        num = np.concatenate([n.ravel() for n in self.numeric[method]])
        ana = np.concatenate([a.ravel() for a in self.analytic])
        keep = (num != 0) | (ana != 0)
        num, ana = num[keep], ana[keep]
        return np.abs(num - ana) / np.maximum(np.abs(num), np.abs(ana))

    def mean_rel_error(self, method: str) -> float:
        """Mean relative error of the informative weights."""
        return float(self.rel_error(method).mean())

    def median_rel_error(self, method: str) -> float:
        """Median relative error of the informative weights."""
        return float(np.median(self.rel_error(method)))

    @property
    def n_weights(self) -> int:
        """How many weights were checked (informative or not)."""
        return int(sum(a.size for a in self.analytic))

    def layer(self, layer: int) -> "GradCheck":
        """The check of one of the checked layers alone (the same numbers as ``gradcheck(..., layers=layer)``)."""
        i = self.layers.index(layer)
        return GradCheck([layer], self.h, [self.analytic[i]], {m: [v[i]] for m, v in self.numeric.items()})


def _check_method(method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def _check_args(net, x, y, layers):
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an ex3lib.MLP, got {type(net).__name__}")
    if isinstance(x, (str, bytes)) or not _real_array(x):
        raise TypeError(f"x must be one sample: an array of {net.layers[0]} real numbers, got {x!r:.60}")
    if net.dtype != np.float64:
        raise ValueError(f"gradient checks need a float64 network (round-off would swamp them), "
                         f"got {net.dtype}")
    x = np.asarray(x, dtype=np.float64)
    if x.shape != (net.layers[0],):
        raise ValueError(f"x must be one sample of shape ({net.layers[0]},), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    y = check_int("y", y, 0, net.layers[-1] - 1)
    n_layers = len(net.weights)
    if layers is None:
        layers = list(range(n_layers))
    elif isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [layers]
    layers = [check_int("layers", l, 0, n_layers - 1) for l in layers]
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(f"layers must list distinct layer indices from 0 to {n_layers - 1}, got {layers}")
    return x, y, layers


def _real_array(values) -> bool:
    """Whether ``values`` converts to an array of real numbers (and not of text or objects)."""
    try:
        return np.asarray(values).dtype.kind in "biuf"
    except (TypeError, ValueError):
        return False


def _perturbed(net, x, y, layers, hs):
    """Losses with each weight of each layer moved by each step: list of (fan_in, fan_out, len(hs))."""
    Z, H = net.forward_trace(x)
    Zt, Ht = tuple(Z), tuple(H)
    arrays = net.arrays()
    out = []
    for l in layers:
        x_in = x if l == 0 else H[l - 1]
        res = np.empty(net.weights[l].shape + (len(hs),))
        kernels.perturbed_losses(arrays.weights, arrays.biases, arrays.has_bias, Zt, Ht, y, l,
                                  np.ascontiguousarray(x_in), np.asarray(hs, np.float64), res)
        out.append(res)
    return kernels.sample_loss(H[-1], y), out


def gradcheck(net: MLP, x, y, *, h=1e-8, layers=None) -> GradCheck:
    """Compare back-propagation with forward, backward and central differences for one sample.

    Parameters
    ----------
    net : MLP (float64)
    x : ndarray, shape (fan_in,)
        One input sample.
    y : int
        Its label.
    h : float > 0
        Finite-difference step (the report uses 1e-8).
    layers : int or list of int, optional
        Which weight matrices to check; all of them (every one of the 276,200
        weights of the report's network) by default.

    Returns
    -------
    GradCheck

    Examples
    --------
    >>> net = MLP(seed=0)
    >>> x = np.zeros(784); x[300:320] = 0.5
    >>> gradcheck(net, x, 3, layers=[3]).mean_rel_error("central") < 1e-5
    True
    """
    x, y, layers = _check_args(net, x, y, layers)
    h = check_float("h", h, low=0.0, low_open=True)
    _, grads = net.loss_and_grad(x[None, :], np.array([y]))
    base, perturbed = _perturbed(net, x, y, layers, [h, -h])
    numeric = {m: [] for m in METHODS}
    for res in perturbed:
        plus, minus = res[..., 0], res[..., 1]
        numeric["forward"].append((plus - base) / h)
        numeric["backward"].append((base - minus) / h)
        numeric["central"].append((plus - minus) / (2 * h))
    return GradCheck(layers, h, [grads[l] for l in layers], numeric)


#: Bin edges of the histograms of :func:`h_sweep`: quarter decades from 1e-14 to 1 (errors outside go to
#: the first or the last bin).
SWEEP_BINS = np.logspace(-14, 0, 57)


class HSweep(NamedTuple):
    """Relative errors against the step: ``mean[method]`` and ``median[method]`` hold one value per step of ``hs``.

    ``counts[method]`` holds, per step, a histogram of the informative weights' relative errors over the
    edges ``bins`` (:data:`SWEEP_BINS`); ``informative`` the number of informative weights per step.
    """

    hs: np.ndarray
    mean: dict
    median: dict
    bins: np.ndarray | None = None
    counts: dict | None = None
    informative: np.ndarray | None = None


def h_sweep(net: MLP, x, y, *, hs=None, layers=None) -> HSweep:
    """Mean and median relative error of each method against the step ``h``.

    Each step gives the same numbers as :func:`gradcheck` with that ``h``
    (its :meth:`GradCheck.mean_rel_error` and :meth:`GradCheck.median_rel_error`),
    computed in one pass over the weights.

    Parameters
    ----------
    hs : sequence of float > 0, optional
        Steps to try; ``1e-1, 1e-2, ..., 1e-12`` by default.
    layers : int or list of int, optional
        Layers whose weights are checked (all by default).

    Returns
    -------
    HSweep
        ``hs``, and ``mean``/``median``: for each method an array of relative
        errors over the informative weights, one per step; ``counts``: for
        each method and step a histogram over ``bins``; ``informative``: the
        number of informative weights (of the central difference) per step.

    Examples
    --------
    >>> net = MLP((784, 16, 10), seed=0)
    >>> x = np.zeros(784); x[300:320] = 0.5
    >>> sweep = h_sweep(net, x, 3, hs=[1e-3, 1e-6])
    >>> bool(sweep.median["central"][1] < sweep.median["forward"][0])
    True
    """
    if hs is not None:
        if isinstance(hs, (str, bytes)) or not isinstance(hs, (list, tuple, np.ndarray)):
            raise TypeError(f"hs must be a sequence of finite steps > 0 (e.g. [1e-4, 1e-6, 1e-8]), "
                            f"got {hs!r:.60} ({type(hs).__name__})")
        items = hs.ravel().tolist() if isinstance(hs, np.ndarray) else hs
        hs = [check_float(f"hs[{i}]", h, low=0.0, low_open=True) for i, h in enumerate(items)]
    x, y, layers = _check_args(net, x, y, layers)
    hs = np.logspace(-1, -12, 12) if hs is None else np.asarray(hs, dtype=np.float64)
    if hs.ndim != 1 or hs.size == 0 or not np.all(np.isfinite(hs)) or np.any(hs <= 0):
        raise ValueError(f"hs must be a non-empty list of finite steps > 0, got {hs!r}")
    _, grads = net.loss_and_grad(x[None, :], np.array([y]))
    steps = np.concatenate([hs, -hs])
    base, perturbed = _perturbed(net, x, y, layers, steps)
    ana = np.concatenate([grads[l].ravel() for l in layers])
    mean = {m: np.empty(hs.size) for m in METHODS}
    median = {m: np.empty(hs.size) for m in METHODS}
    counts = {m: np.zeros((hs.size, SWEEP_BINS.size - 1), dtype=np.int64) for m in METHODS}
    informative = np.zeros(hs.size, dtype=np.int64)
    k = hs.size
    for i, h in enumerate(hs):
        plus = np.concatenate([r[..., i].ravel() for r in perturbed])
        minus = np.concatenate([r[..., k + i].ravel() for r in perturbed])
        for method, num in (("forward", (plus - base) / h), ("backward", (base - minus) / h),
                            ("central", (plus - minus) / (2 * h))):
            keep = (num != 0) | (ana != 0)
            rel = np.abs(num[keep] - ana[keep]) / np.maximum(np.abs(num[keep]), np.abs(ana[keep]))
            mean[method][i] = rel.mean()
            median[method][i] = np.median(rel)
            counts[method][i] = np.histogram(np.clip(rel, SWEEP_BINS[0], SWEEP_BINS[-1]), SWEEP_BINS)[0]
        informative[i] = rel.size
    return HSweep(hs, mean, median, SWEEP_BINS, counts, informative)


def summary(check: GradCheck, x) -> dict:
    """What a check of every layer shows, as the gradients chapter quotes it.

    ``x`` is the checked sample.  Returns the counts of weights (``n_weights``,
    ``n_informative``, ``n_zero_pixel`` — first-layer weights of the
    ``n_zero_pixels`` zero pixels — and ``n_dead_unit``, the other
    uninformative ones, as text with thousands separators), ``pct_informative``,
    ``mean_<method>`` and ``median_<method>`` relative errors, and for the
    central difference the median absolute error ``abs_err_central`` and the
    median informative analytical gradient ``grad_median``.
    """
    n_informative = int(check.informative("central").sum())
    n_zero_pixel = int((np.asarray(x) == 0).sum()) * check.analytic[0].shape[1]
    out = {"n_weights": f"{check.n_weights:,}", "n_informative": f"{n_informative:,}",
           "pct_informative": float(100 * n_informative / check.n_weights), "n_zero_pixel": f"{n_zero_pixel:,}",
           "n_zero_pixels": int((np.asarray(x) == 0).sum()),
           "n_dead_unit": f"{check.n_weights - n_informative - n_zero_pixel:,}"}
    for m in METHODS:
        out[f"mean_{m}"] = check.mean_rel_error(m)
        out[f"median_{m}"] = check.median_rel_error(m)
    ana = np.concatenate([a.ravel() for a in check.analytic])
    num = np.concatenate([n.ravel() for n in check.numeric["central"]])
    keep = check.informative("central")
    out["abs_err_central"] = float(np.median(np.abs(num - ana)[keep]))
    out["grad_median"] = float(np.median(np.abs(ana[keep])))
    return out


def _error_columns(check: GradCheck) -> dict:
    row = {}
    for m in METHODS:
        r = check.rel_error(m)
        row[f"{m} mean"] = float(r.mean())
        row[f"{m} median"] = float(np.median(r))
    return row


def layer_table(net: MLP, check: GradCheck):
    """One row per checked layer: weights, informative weights, median |analytical gradient|, errors per method.

    Returns a pandas DataFrame indexed by layer.
    """
    import pandas as pd

    rows = []
    for layer in check.layers:
        c = check.layer(layer)
        informative = c.informative("central")
        rows.append({"layer": f"{layer} ({net.layers[layer]}→{net.layers[layer + 1]})", "weights": c.n_weights,
                     "informative": int(informative.sum()),
                     "median |g_ana|": float(np.median(np.abs(c.analytic[0].ravel()[informative]))),
                     **_error_columns(c)})
    return pd.DataFrame(rows).set_index("layer")


def sample_table(net: MLP, xs, ys, *, h=1e-8):
    """One row per sample: label, loss, informative weights and the errors of every method at step ``h``.

    Returns a pandas DataFrame indexed by sample (0, 1, ...).
    """
    import pandas as pd

    rows = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        loss, _ = net.loss_and_grad(np.asarray(x)[None, :], np.array([int(y)]))
        c = gradcheck(net, x, int(y), h=h)
        rows.append({"sample": i, "label": int(y), "loss": float(loss),
                     "informative": int(c.informative("central").sum()), **_error_columns(c)})
    return pd.DataFrame(rows).set_index("sample")


def slope(hs, values, low, high) -> float:
    """Log-log slope of ``values`` against the steps ``hs`` over ``low <= h <= high`` (least squares)."""
    hs = np.asarray(hs)
    keep = (hs >= low) & (hs <= high)
    return float(np.polyfit(np.log10(hs[keep]), np.log10(np.asarray(values)[keep]), 1)[0])


def sweep_summary(sweep: HSweep, h, *, truncation=(1.5e-3, 2e-2), round_off=(1e-10, 1e-6)) -> dict:
    """Where each method's error is smallest, and its slopes in the truncation and round-off ranges.

    For each method: ``best_h_<m>``/``best_err_<m>`` (step and value of the
    smallest median error), ``best_h_mean_<m>``/``best_mean_err_<m>`` (the same
    for the mean), ``slope_trunc_<m>``/``slope_round_<m>`` (log-log slopes of
    the median over the two ranges) and ``at_h[m]`` (the median at the step
    closest to ``h``).  Then ``decades`` (log10 of the central optimum over
    ``h``), ``best_ratio`` (best one-sided over best central median) and
    ``central_gain`` (central median at ``h`` over its best).
    """
    out, at_h = {}, {}
    for m in METHODS:
        med, mean = sweep.median[m], sweep.mean[m]
        out[f"best_h_{m}"] = float(sweep.hs[np.argmin(med)])
        out[f"best_h_mean_{m}"] = float(sweep.hs[np.argmin(mean)])
        out[f"best_err_{m}"] = float(med.min())
        out[f"best_mean_err_{m}"] = float(mean.min())
        out[f"slope_trunc_{m}"] = slope(sweep.hs, med, *truncation)
        out[f"slope_round_{m}"] = slope(sweep.hs, med, *round_off)
        at_h[m] = float(med[np.argmin(np.abs(np.log(sweep.hs / h)))])
    out["at_h"] = at_h
    out["decades"] = float(np.log10(out["best_h_central"] / h))
    out["best_ratio"] = float(min(sweep.median[m].min() for m in ("forward", "backward"))
                              / sweep.median["central"].min())
    out["central_gain"] = float(at_h["central"] / sweep.median["central"].min())
    return out


def samples_summary(table) -> dict:
    """The spread of the central difference's errors over the samples of :func:`sample_table`.

    ``samples_min_median``/``samples_max_median`` and ``samples_min_mean``/
    ``samples_max_mean``, and ``loss_rank_corr``, the rank correlation between
    a sample's loss and its central median error; ``central_best``, on how
    many samples the central difference has a smaller mean and a smaller
    median error than both one-sided ones, and ``central_best_text``, that
    count in words ("every sample" or "3 of the 5 samples").
    """
    median, mean = table["central median"], table["central mean"]
    best = np.logical_and.reduce([table[f"central {s}"] < table[f"{m} {s}"]
                                  for m in ("forward", "backward") for s in ("mean", "median")])
    n_best, n = int(best.sum()), len(table)
    return {"loss_rank_corr": float(table["loss"].rank().corr(median.rank())),
            "samples_min_median": float(median.min()), "samples_max_median": float(median.max()),
            "samples_min_mean": float(mean.min()), "samples_max_mean": float(mean.max()),
            "central_best": n_best, "central_best_text": "every sample" if n_best == n else f"{n_best} of the {n} samples"}
