r"""Optimisers: explicit state plus one compiled update over the flat parameter vector.

Every rule below uses the *mean* mini-batch gradient
:math:`\bar g = \frac1m \sum_{i=1}^m \nabla L_i` and a learning rate
:math:`\eta` that the training loop takes from a schedule
(:mod:`ex3lib.schedules`) and passes in as a number.

========  ==================================================================================
name      update (element-wise)
========  ==================================================================================
sgd       :math:`w \leftarrow w - \eta \bar g`  (report Eq. 4; ``batch_size=1`` is on-line learning)
momentum  ``sgd(momentum=α)``: :math:`v \leftarrow \alpha v + \eta \bar g,\; w \leftarrow w - v` (classical)
nesterov  ``sgd(momentum=α, nesterov=True)``: :math:`v \leftarrow \alpha v + \eta \bar g,\;
          w \leftarrow w - (\alpha v + \eta \bar g)` (Sutskever et al. 2013, look-ahead form)
adagrad   :math:`G \leftarrow G + \bar g^2,\; w \leftarrow w - \frac{\eta}{\sqrt{G + \epsilon}} \bar g`
          (report Algorithm 2, :math:`\epsilon = 10^{-8}`; Duchi et al. 2011)
rmsprop   :math:`G \leftarrow \beta_2 G + (1-\beta_2) \bar g^2,\; w \leftarrow w - \frac{\eta}{\sqrt{G + \epsilon}} \bar g`
          (Tieleman & Hinton 2012: AdaGrad with a decaying accumulator)
adam      :math:`\mu \leftarrow \beta_1 \mu + (1-\beta_1)\bar g,\; \nu \leftarrow \beta_2 \nu + (1-\beta_2)\bar g^2,\;
          w \leftarrow w - \eta \frac{\mu / (1-\beta_1^t)}{\sqrt{\nu / (1-\beta_2^t)} + \epsilon}`
          (Kingma & Ba 2017, with bias correction; :math:`t` counts updates from 1)
========  ==================================================================================
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass

import numpy as np

from . import kernels
from ._validate import check_bool, check_choice, check_float

OPTIMISERS = ("sgd", "adagrad", "rmsprop", "adam")

OptState = namedtuple("OptState", "velocity sum_sq mu nu step")
OptState.__doc__ = """Optimiser state: arrays shaped like the flat parameters (empty when unused) and the update count."""

OptArrays = namedtuple("OptArrays", "kind sparse_safe lazy_rows velocity sum_sq mu nu learning_rate "
                                    "momentum b1 b2 eps")
OptArrays.__doc__ = """An optimiser as the compiled kernels see it: its rule's code, its state arrays and numbers.

Built by :meth:`Optimiser.arrays`; ``kind`` is one of the codes in
:mod:`ex3lib.kernels.updates`, ``sparse_safe`` and ``lazy_rows`` say
which rows the kernels may skip or defer, and ``learning_rate`` is the rate in
force (from the schedule).
"""

_DEFAULT_B2 = {"rmsprop": 0.9, "adam": 0.999}


@dataclass(frozen=True)
class Optimiser:
    """An optimiser's name and hyper-parameters; build one with :func:`make_optimiser`."""

    name: str
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    @property
    def kind(self) -> int:
        """The kernel's code for this update rule."""
        if self.name == "sgd":
            if self.momentum == 0.0:
                return kernels.SGD
            return kernels.NESTEROV if self.nesterov else kernels.MOMENTUM
        return {"adagrad": kernels.ADAGRAD, "rmsprop": kernels.RMSPROP, "adam": kernels.ADAM}[self.name]

    @property
    def sparse_safe(self) -> bool:
        """True when a zero gradient leaves a weight and its state bit-for-bit unchanged."""
        return self.kind in kernels.SPARSE_SAFE

    @property
    def label(self) -> str:
        """A short human-readable name with the hyper-parameters that matter."""
        if self.name == "sgd":
            if self.momentum == 0.0:
                return "SGD"
            return f"{'Nesterov' if self.nesterov else 'momentum'} α={self.momentum:g}"
        return {"adagrad": "AdaGrad", "rmsprop": f"RMSProp β₂={self.b2:g}",
                "adam": f"Adam β₁={self.b1:g} β₂={self.b2:g}"}[self.name]

    def init(self, params) -> OptState:
        """Zero state for the flat parameter vector ``params``."""
        zeros = lambda used: np.zeros_like(params) if used else np.zeros(0, params.dtype)  # noqa: E731
        kind = self.kind
        return OptState(
            velocity=zeros(kind in (kernels.MOMENTUM, kernels.NESTEROV)),
            sum_sq=zeros(kind in (kernels.ADAGRAD, kernels.RMSPROP)),
            mu=zeros(kind == kernels.ADAM),
            nu=zeros(kind == kernels.ADAM),
            step=0,
        )

    def arrays(self, state: OptState, learning_rate: float) -> OptArrays:
        """The kernels' view of this optimiser with ``state`` at ``learning_rate``."""
        kind = self.kind
        return OptArrays(kind=kind, sparse_safe=self.sparse_safe,
                         lazy_rows=kind in kernels.LAZY_ROWS, velocity=state.velocity,
                         sum_sq=state.sum_sq, mu=state.mu, nu=state.nu, learning_rate=float(learning_rate),
                         momentum=self.momentum, b1=self.b1, b2=self.b2, eps=self.eps)

    def effective_step(self, state: OptState, learning_rate: float):
        """The per-parameter step size an adaptive method applies now, or None for SGD.

        AdaGrad and RMSProp scale the gradient by ``η / sqrt(G + ε)``; Adam
        scales its bias-corrected first moment by ``η / (sqrt(ν / (1 - β₂^t)) + ε)``.
        """
        kind = self.kind
        if kind in (kernels.ADAGRAD, kernels.RMSPROP):
            return learning_rate / np.sqrt(state.sum_sq + self.eps)
        if kind == kernels.ADAM:
            c2 = 1.0 - self.b2 ** max(state.step, 1)
            return learning_rate / (np.sqrt(state.nu / c2) + self.eps)
        return None

    def update(self, params, grad, state: OptState, learning_rate: float) -> OptState:
        """One step in place: ``params`` and the state arrays change, ``grad`` is zeroed.

        ``grad`` is the mean mini-batch gradient, flat like ``params``.  Returns
        the state with its step count advanced.

        Examples
        --------
        >>> opt = make_optimiser("sgd", momentum=0.9)
        >>> w, g = np.ones(3), np.full(3, 0.5)
        >>> s = opt.update(w, g.copy(), opt.init(w), learning_rate=0.1)
        >>> w
        array([0.95, 0.95, 0.95])
        """
        learning_rate = check_float("learning_rate", learning_rate, low=0.0, low_open=True)
        if params.shape != grad.shape or params.ndim != 1 or params.dtype != grad.dtype:
            raise ValueError(f"params and grad must be flat arrays of the same shape and dtype, "
                             f"got {params.shape}/{params.dtype} and {grad.shape}/{grad.dtype}")
        step = state.step + 1
        how = kernels.Stepping(kernels.RULE, self.arrays(state, learning_rate), params, 1.0,
                               kernels.bias_corrections(self.b1, self.b2, step), step)
        kernels.step_rows(how, 0, params.shape[0], np.zeros(1, np.int64), 1, grad[None, :], grad, False)
        grad[...] = 0.0
        return state._replace(step=step)


def make_optimiser(name="sgd", *, momentum=0.0, nesterov=False, b1=0.9, b2=None, eps=1e-8) -> Optimiser:
    """Validate hyper-parameters and build an :class:`Optimiser`.

    Parameters
    ----------
    name : {"sgd", "adagrad", "rmsprop", "adam"}
    momentum : float in [0, 1)
        α of classical or Nesterov momentum (``sgd`` only; 0 is plain SGD).
    nesterov : bool
        Use Nesterov's look-ahead form (``sgd`` with ``momentum > 0`` only).
    b1 : float in [0, 1)
        Adam's first-moment decay β₁.
    b2 : float in [0, 1), optional
        Second-moment decay β₂ of RMSProp (default 0.9) and Adam (default 0.999).
    eps : float > 0
        ε of AdaGrad, RMSProp and Adam (default 1e-8, as the report).
    """
    check_choice("optimiser", name, OPTIMISERS)
    momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
    nesterov = check_bool("nesterov", nesterov)
    b1 = check_float("b1", b1, low=0.0, high=1.0, high_open=True)
    b2 = _DEFAULT_B2.get(name, 0.999) if b2 is None else check_float("b2", b2, low=0.0, high=1.0, high_open=True)
    eps = check_float("eps", eps, low=0.0, low_open=True)
    if name != "sgd" and momentum != 0.0:
        raise ValueError(f"momentum applies to optimiser 'sgd' only, got momentum={momentum} with {name!r}")
    if nesterov and (name != "sgd" or momentum == 0.0):
        raise ValueError("nesterov=True needs optimiser 'sgd' with momentum > 0")
    return Optimiser(name, momentum, nesterov, b1, b2, eps)
