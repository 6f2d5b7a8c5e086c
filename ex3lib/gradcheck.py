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

    @property
    def n_weights(self) -> int:
        """How many weights were checked (informative or not)."""
        return int(sum(a.size for a in self.analytic))


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


def h_sweep(net: MLP, x, y, *, hs=None, layers=None):
    """Mean relative error of each method against the step ``h``.

    Parameters
    ----------
    hs : sequence of float > 0, optional
        Steps to try; ``1e-1, 1e-2, ..., 1e-12`` by default.
    layers : int or list of int, optional
        Layers whose weights are checked (all by default).

    Returns
    -------
    hs : ndarray
    errors : dict
        ``errors[method]`` is an array of mean relative errors, one per step.
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
    errors = {m: np.empty(hs.size) for m in METHODS}
    k = hs.size
    for i, h in enumerate(hs):
        plus = np.concatenate([r[..., i].ravel() for r in perturbed])
        minus = np.concatenate([r[..., k + i].ravel() for r in perturbed])
        for method, num in (("forward", (plus - base) / h), ("backward", (base - minus) / h),
                            ("central", (plus - minus) / (2 * h))):
            keep = (num != 0) | (ana != 0)
            rel = np.abs(num[keep] - ana[keep]) / np.maximum(np.abs(num[keep]), np.abs(ana[keep]))
            errors[method][i] = rel.mean()
    return hs, errors
