"""The training loop: mini-batch epochs in compiled code, logging, divergence detection, progress."""

from __future__ import annotations

import math
import numbers
import time
import weakref
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from tqdm.auto import tqdm

from . import kernels
from ._validate import (check_bool, check_choice, check_int, check_inputs, check_labels, check_widths,
                        did_you_mean)
from .data import N_TRAIN, is_immutable
from .network import MLP, REPORT_LAYERS, SparseData, block_order, check_pixels, to_sparse
from .optimisers import make_optimiser
from .schedules import make_batch_schedule, make_schedule

ORDERS = ("sequential", "shuffle")
STEP_PERCENTILES = (10, 50, 90)
#: Train on MLP.row_aligned copies (off only in the test that checks they change nothing).
_ALIGN_ROWS = True

#: Nats: a run whose window training loss or test loss (a mean cross-entropy)
#: exceeds this has diverged. A mean loss of L puts the geometric mean
#: probability of the true class at e^-L; e^-1000 is below the smallest
#: float64 (about e^-745), so the softmax itself has underflowed and only its
#: log-sum-exp form keeps the loss finite. An untrained network has ln 10 ≈ 2.3,
#: every run of the book that did not blow up stays below 4, and runs that do
#: blow up reach 1e9 to 1e14 within a window (Adam at η = 1, AdaGrad at 100,
#: RMSProp at 10 with m = 1, pixels 0-255 instead of [0, 1]).
LOSS_BOUND = 1000.0

#: The hyper-parameters each optimiser uses besides the learning rate; the
#: others are set to their defaults in a RunConfig, so that runs that differ
#: only in what the optimiser ignores have equal configs (and store keys).
USED_HYPERPARAMETERS = {"sgd": ("momentum", "nesterov"), "adagrad": ("eps",),
                        "rmsprop": ("b2", "eps"), "adam": ("b1", "b2", "eps")}
_IGNORED_DEFAULTS = {"momentum": 0.0, "nesterov": False, "b1": 0.9, "b2": 0.999, "eps": 1e-8}



@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; equal configs give bit-identical histories.

    ``seed`` seeds both the network's initialisation and (with ``order="shuffle"``)
    the sample order.  ``validation_size`` holds out the last n training images
    as a validation set (the network trains on the others and every logged
    point records the validation loss and accuracy too; 0, the report's
    protocol, trains on all of them), and ``keep_params`` keeps the final
    parameters in the history (:attr:`History.params`; the results store saves
    them beside it).  Hyper-parameter names follow STYLE.md: ``learning_rate``
    (η, or η₀ with decay), ``batch_size`` (m, or m₀ with a growing batch),
    ``epochs``, ``momentum`` (α), ``lr_final`` (η_N), ``b1``, ``b2``, ``eps``,
    ``seed``; ``batch_schedule`` and ``batch_final`` (m_N) give the batch size
    a schedule of its own (:func:`ex3lib.schedules.make_batch_schedule`).
    ``train_size`` (the first n training images; None for all 60,000) and
    ``log_every`` (samples per logged point) complete it.  Invalid values raise
    ValueError/TypeError naming the parameter.

    Values are canonical, so that equal runs have equal configs (and store
    keys): a constant schedule's ``lr_final`` is its learning rate and a
    constant batch schedule's ``batch_final`` its batch size; a
    ``train_size`` of 60,000 (MNIST's training set, less the validation set)
    or more is None, all of it;
    and the hyper-parameters the optimiser does not use (``b1``, ``b2`` and
    ``eps`` with ``"sgd"``, ``b1`` and ``b2`` with ``"adagrad"``, ``b1`` with
    ``"rmsprop"``; see :data:`USED_HYPERPARAMETERS`) take their defaults
    (``b1=0.9``, ``b2=0.999``, ``eps=1e-8``), whatever was given (given values
    are still checked).

    Examples
    --------
    >>> RunConfig(b1=0.5) == RunConfig(), RunConfig(train_size=100_000).train_size
    (True, None)
    """

    optimiser: str = "sgd"
    learning_rate: float = 0.1
    batch_size: int = 10
    epochs: int = 10
    schedule: str = "constant"
    lr_final: float | None = None
    batch_schedule: str = "constant"
    batch_final: int | None = None
    momentum: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float | None = None
    eps: float = 1e-8
    seed: int = 0
    order: str = "sequential"
    train_size: int | None = None
    log_every: int = 30_000
    layers: tuple = REPORT_LAYERS
    bias: bool = False
    dtype: str = "float64"
    validation_size: int = 0
    keep_params: bool = False

    def __post_init__(self):
        opt = make_optimiser(self.optimiser, momentum=self.momentum, nesterov=self.nesterov,
                             b1=self.b1, b2=self.b2, eps=self.eps)
        sched = make_schedule(self.schedule, self.learning_rate, lr_final=self.lr_final,
                              epochs=self.epochs)
        batch_sched = make_batch_schedule(self.batch_schedule, self.batch_size, batch_final=self.batch_final,
                                          epochs=self.epochs)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_choice("order", self.order, ORDERS)
        if self.train_size is not None:
            check_int("train_size", self.train_size, 1)
        check_int("log_every", self.log_every, 1)
        check_int("validation_size", self.validation_size, 0, N_TRAIN - 1)
        check_bool("keep_params", self.keep_params)
        check_bool("bias", self.bias)
        check_choice("dtype", self.dtype, ("float64", "float32"))
        layers = check_widths("layers", self.layers)
        if layers[-1] < 2:
            raise ValueError(f"layers: the output layer needs at least 2 classes, got {layers[-1]}")
        if self.train_size is not None and self.batch_size > self.train_size:
            raise ValueError(f"batch_size must be from 1 to train_size={self.train_size}, got {self.batch_size}")
        # Canonical values, so that equal runs have equal configs (and store keys).
        used = {"momentum": opt.momentum, "nesterov": bool(self.nesterov), "b1": opt.b1, "b2": opt.b2,
                "eps": opt.eps}
        for name in used:
            if name not in USED_HYPERPARAMETERS[self.optimiser]:
                used[name] = _IGNORED_DEFAULTS[name]
        # The images left for training once the validation set is held out.
        n_fit = N_TRAIN - int(self.validation_size)
        train_size = (None if self.train_size is None or self.train_size >= n_fit
                      else int(self.train_size))
        for name, value in (("learning_rate", sched.learning_rate), ("lr_final", sched.lr_final),
                            *used.items(), ("layers", layers), ("batch_size", int(self.batch_size)),
                            ("epochs", int(self.epochs)), ("seed", int(self.seed)),
                            ("bias", bool(self.bias)), ("train_size", train_size),
                            ("log_every", int(self.log_every)),
                            ("validation_size", int(self.validation_size)),
                            ("keep_params", bool(self.keep_params))):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "batch_final", batch_sched.batch_final)

    @property
    def optimiser_spec(self):
        return make_optimiser(self.optimiser, momentum=self.momentum, nesterov=self.nesterov,
                              b1=self.b1, b2=self.b2, eps=self.eps)

    @property
    def schedule_spec(self):
        return make_schedule(self.schedule, self.learning_rate, lr_final=self.lr_final, epochs=self.epochs)

    @property
    def batch_schedule_spec(self):
        """The batch-size schedule, capped at ``train_size`` (when None, :func:`train` caps it at the data's size)."""
        return make_batch_schedule(self.batch_schedule, self.batch_size, batch_final=self.batch_final,
                                   epochs=self.epochs, n_train=self.train_size)

    @property
    def label(self) -> str:
        """e.g. ``"SGD η=0.1 m=10"``, ``"momentum α=0.9 η=0.1→0.001 m=10"`` or ``"SGD η=0.1 m=10→1000"``."""
        eta = (f"η={self.learning_rate:g}" if self.schedule == "constant"
               else f"η={self.learning_rate:g}→{self.lr_final:g}")
        m = (f"m={self.batch_size}" if self.batch_schedule == "constant"
             else f"m={self.batch_size}→{self.batch_final}")
        return f"{self.optimiser_spec.label} {eta} {m}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d) -> "RunConfig":
        """The RunConfig whose :meth:`to_dict` is ``d`` (fields left out take their defaults)."""
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict of RunConfig fields, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            hint = did_you_mean(unknown[0], known)
            raise ValueError(f"unknown RunConfig field(s) {unknown}{hint}; allowed: {sorted(known)}")
        d = dict(d)
        if "layers" in d:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    @classmethod
    def from_history(cls, history) -> "RunConfig":
        """The configuration that reproduces ``history`` with :func:`run`.

        Raises
        ------
        ValueError
            The history came from :func:`train` with a network seeded
            differently from its ``seed``, which no RunConfig describes.
        """
        if not isinstance(history, History):
            raise TypeError(f"history must be a History, got {type(history).__name__}")
        d = dict(history.config)
        init_seed = d.pop("init_seed", d.get("seed"))
        if init_seed != d.get("seed"):
            raise ValueError(f"this history trained a network initialised with seed {init_seed} on "
                             f"samples drawn with seed {d.get('seed')}; run() uses one seed for both, "
                             f"so no RunConfig reproduces it")
        return cls.from_dict(d)

    def replace(self, **changes) -> "RunConfig":
        """A copy with some fields changed (and validated).

        A constant schedule's ``lr_final`` follows a changed learning rate (a
        constant batch schedule's ``batch_final`` a changed batch size), and
        a changed optimiser gets its own default ``b2`` unless one is given.
        """
        d = {**self.to_dict(), **changes}
        if d["schedule"] == "constant" and "lr_final" not in changes:
            d["lr_final"] = None  # a constant schedule's lr_final is its learning rate, whatever that becomes
        if d["batch_schedule"] == "constant" and "batch_final" not in changes:
            d["batch_final"] = None
        if "optimiser" in changes and changes["optimiser"] != self.optimiser and "b2" not in changes:
            d["b2"] = None  # RMSProp's default is 0.9, Adam's 0.999
        return RunConfig.from_dict(d)


@dataclass
class History:
    """What a run logged: one point before training and one per ``log_every`` samples.

    Attributes
    ----------
    epoch : ndarray
        Fractional epoch of each point (0, 0.5, 1, ... with the report's logging).
    loss : ndarray
        Mean per-sample training loss over the window that ends at the point
        (each sample's loss measured before the update it contributes to); the
        first point is the untrained network's loss on the first window.
    test_loss, test_accuracy : ndarray
        Mean cross-entropy and accuracy on the test set at each point.
    learning_rate : ndarray
        η in force during the window (nan for the first point).
    time : ndarray
        Wall-clock seconds since the start of the run at each point.
    seconds : float
        Total wall-clock time of the run.
    diverged : bool
        The run stopped early because it blew up: non-finite parameters, a
        loss that is not finite or above :data:`LOSS_BOUND`, or a dead network
        (see :func:`train`).
    reason : str
        Why it diverged ("" otherwise).
    config : dict
        The :class:`RunConfig` fields, plus ``init_seed`` of the network.
    extra : dict
        ``updates`` (optimiser steps taken), ``updates_at`` (the steps taken
        by each logged point) and ``n_train``; with a validation set
        (``validation_size``) also ``validation_loss`` and
        ``validation_accuracy`` per logged point (see
        :attr:`validation_accuracy`) and ``n_validation``; with a batch
        schedule other than ``"constant"`` also ``batch_size``, the m of each
        epoch begun, in order; for the adaptive
        methods also ``effective_step`` — per logged point and per layer, the
        ``effective_step_percentiles`` (10th, 50th, 90th) of the step each
        weight takes per unit gradient (see
        :meth:`ex3lib.optimisers.Optimiser.effective_step`) — and
        ``first_layer_step_by_input``, the final mean step of each input
        pixel's weights.
    params : ndarray or None
        The final parameters (``MLP.params``) of a run with ``keep_params``;
        None otherwise. Not part of :meth:`to_dict`: the results store keeps
        them in a file of their own.
    """

    config: dict
    epoch: np.ndarray
    loss: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    learning_rate: np.ndarray
    time: np.ndarray
    seconds: float = 0.0
    diverged: bool = False
    reason: str = ""
    extra: dict = field(default_factory=dict)
    params: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def validation_loss(self) -> np.ndarray:
        """Mean cross-entropy on the validation set at each logged point (runs with ``validation_size``)."""
        return self._validation("validation_loss")

    @property
    def validation_accuracy(self) -> np.ndarray:
        """Accuracy on the validation set at each logged point (runs with ``validation_size``).

        Raises
        ------
        ValueError
            The run held out no validation set.
        """
        return self._validation("validation_accuracy")

    def _validation(self, name) -> np.ndarray:
        if name not in self.extra:
            raise ValueError(f"this run ({self.config.get('optimiser', '?')}, seed "
                             f"{self.config.get('seed', '?')}) held out no validation set, so it has no "
                             f"{name}: train it with RunConfig(validation_size=...)")
        return np.asarray(self.extra[name], dtype=float)

    @property
    def final_loss(self) -> float:
        """Training loss of the last logged window (the report's "Avg Loss")."""
        return float(self.loss[-1])

    @property
    def final_accuracy(self) -> float:
        """Test accuracy at the last logged point (the report's "Test Acc")."""
        return float(self.test_accuracy[-1])

    def to_dict(self) -> dict:
        """A dict that JSON holds exactly: :meth:`from_dict` of it gives this history back.

        Non-finite numbers, which JSON has no literal for, become the texts
        ``"nan"``, ``"inf"`` and ``"-inf"`` (in the arrays, ``seconds`` and
        ``extra``); numpy scalars become Python numbers and tuples lists.

        Raises
        ------
        ValueError
            A field holds something JSON cannot store faithfully (an array in
            ``extra``, a non-text key, one of the three reserved texts, arrays
            of different lengths...); the message names the field.
        """
        arrays = {}
        for name in HISTORY_ARRAYS:
            try:
                values = np.asarray(getattr(self, name), dtype=float)
            except (TypeError, ValueError) as err:
                raise ValueError(f"history.{name} must be a 1-D array of numbers ({err})") from None
            if values.ndim != 1 or values.size == 0:
                raise ValueError(f"history.{name} must be a non-empty 1-D array, got shape {values.shape}")
            arrays[name] = [_encode_float(v) for v in values.tolist()]
        lengths = {name: len(v) for name, v in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"history's arrays must have one point each, got lengths {lengths}")
        if isinstance(self.seconds, (bool, np.bool_)) or not isinstance(self.seconds, numbers.Real):
            raise ValueError(f"history.seconds must be a number, got {self.seconds!r}")
        if not isinstance(self.diverged, (bool, np.bool_)):
            raise ValueError(f"history.diverged must be True or False, got {self.diverged!r}")
        if not isinstance(self.reason, str):
            raise ValueError(f"history.reason must be text, got {type(self.reason).__name__}")
        if not isinstance(self.config, dict):
            raise ValueError(f"history.config must be a dict, got {type(self.config).__name__}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"history.extra must be a dict, got {type(self.extra).__name__}")
        return {"config": _encode_json("history.config", self.config), **arrays,
                "seconds": _encode_float(float(self.seconds)), "diverged": bool(self.diverged),
                "reason": self.reason, "extra": _encode_json("history.extra", self.extra)}

    @classmethod
    def from_dict(cls, d) -> "History":
        """The history :meth:`to_dict` described, checked field by field.

        ``None`` in an array is read as nan (as older versions wrote it).

        Raises
        ------
        ValueError
            ``d`` is not such a dict: a missing or unknown field, a value of the
            wrong type (``"diverged": "false"``), an empty array or arrays of
            different lengths; the message names the field.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a history must be a dict, got {type(d).__name__}")
        required = ("config", *HISTORY_ARRAYS, "seconds", "diverged", "reason")
        missing = [k for k in required if k not in d]
        unknown = sorted(set(d) - set(required) - {"extra"})
        if missing or unknown:
            raise ValueError(f"a history needs the fields {', '.join(required)} (and extra); "
                             + (f"missing: {', '.join(missing)}" if missing else "")
                             + ("; " if missing and unknown else "")
                             + (f"unknown: {', '.join(map(str, unknown))}" if unknown else ""))
        arrays = {name: _decode_array(name, d[name]) for name in HISTORY_ARRAYS}
        lengths = {name: a.size for name, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"history's arrays must have one point each, got lengths {lengths}")
        seconds = _decode_number("history.seconds", d["seconds"])
        if not isinstance(d["diverged"], bool):
            raise ValueError(f"history.diverged must be true or false, got {d['diverged']!r}")
        if not isinstance(d["reason"], str):
            raise ValueError(f"history.reason must be text, got {d['reason']!r}")
        for name in ("config", "extra"):
            if not isinstance(d.get(name, {}), dict):
                raise ValueError(f"history.{name} must be a dict, got {type(d[name]).__name__}")
        return cls(config=_decode_json(d["config"]), seconds=seconds, diverged=d["diverged"],
                   reason=d["reason"], extra=_decode_json(d.get("extra", {})), **arrays)


HISTORY_ARRAYS = ("epoch", "loss", "test_loss", "test_accuracy", "learning_rate", "time")
# How History.to_dict writes the numbers JSON has no literal for.
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _encode_float(value: float):
    """A float as JSON holds it: itself if finite, else ``"nan"``, ``"inf"`` or ``"-inf"``."""
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def _encode_json(where: str, value, _seen=()):
    """``value`` as plain JSON data with non-finite floats as text; ValueError naming ``where`` otherwise."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _encode_float(float(value))
    if isinstance(value, str):
        if value in _NONFINITE:
            raise ValueError(f"{where} is the text {value!r}, which a stored history reserves for the "
                             f"number; store numbers as numbers")
        return value
    if isinstance(value, (list, tuple, dict)):
        if id(value) in _seen:
            raise ValueError(f"{where} contains itself")
        seen = (*_seen, id(value))
        if isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise ValueError(f"{where} has a key {bad[0]!r} that is not text")
            return {k: _encode_json(f"{where}[{k!r}]", v, seen) for k, v in value.items()}
        return [_encode_json(f"{where}[{i}]", v, seen) for i, v in enumerate(value)]
    raise ValueError(f"{where} holds a {type(value).__name__}, which a stored history cannot hold "
                     f"(numbers, text, True/False, None, lists and dicts only)")


def _decode_json(value):
    """Inverse of :func:`_encode_json`: the texts ``"nan"``, ``"inf"``, ``"-inf"`` back to floats."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, list):
        return [_decode_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_json(v) for k, v in value.items()}
    return value


def _decode_number(where: str, value) -> float:
    """A stored number (or ``"nan"``/``"inf"``/``"-inf"``; None is nan) as a float."""
    if value is None:
        return math.nan
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where} must be a number, got {value!r}")
    return float(value)


def _decode_array(name: str, values) -> np.ndarray:
    """A stored array of the history (a non-empty list of numbers) as a float array."""
    if not isinstance(values, list) or not values:
        raise ValueError(f"history.{name} must be a non-empty list of numbers, got {values!r:.60}")
    return np.array([_decode_number(f"history.{name}[{i}]", v) for i, v in enumerate(values)], float)


_SPARSE_MEMO: dict = {}


def _layout(a: np.ndarray) -> tuple:
    """Where and how ``a`` lies in memory (an array's shape and strides can be reassigned in place)."""
    return a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str


def _sparse_memo(x, y, dtype):
    """CSR form of a dataset, computed once per pair of immutable arrays (:func:`ex3lib.data.is_immutable`).

    Other arrays are converted on every call: proving that their content is
    unchanged (hashing them) costs about 60 % of converting them.
    """
    entry = _memo_entry(x, y, dtype)
    return to_sparse(x, y, dtype) if entry is None else entry[3]


def _memo_entry(x, y, dtype):
    """``(ref x, ref y, layouts, CSR data, evaluation orders)`` of an immutable pair, made once; else None."""
    if not (is_immutable(x) and is_immutable(y)):
        return None
    key = (id(x), id(y), np.dtype(dtype).str)
    hit = _SPARSE_MEMO.get(key)
    if (hit is not None and hit[0]() is x and hit[1]() is y
            and hit[2] == (_layout(x), _layout(y))):
        return hit
    entry = (weakref.ref(x), weakref.ref(y), (_layout(x), _layout(y)), to_sparse(x, y, dtype), {})
    _SPARSE_MEMO[key] = entry
    weakref.finalize(x, _SPARSE_MEMO.pop, key, None)
    return entry


def _evaluation_order(x, y, dtype, part, first):
    """:func:`ex3lib.network.block_order` of ``part``, the rows of ``(x, y)`` from ``first`` on; memoised like the CSR form."""
    entry = _memo_entry(x, y, dtype)
    if entry is None:
        return block_order(part)
    key = (first, part.y.shape[0])
    if key not in entry[4]:
        entry[4][key] = block_order(part)
    return entry[4][key]


def _window_stops(n, batch_size, log_every):
    """Ends of the logging windows of one epoch, moved to the next batch boundary."""
    marks = np.arange(log_every, n, log_every)
    stops = np.minimum(-(-marks // batch_size) * batch_size, n)
    return np.unique(np.append(stops, n))


#: The RunConfig fields that describe the network rather than its training.
ARCHITECTURE = ("layers", "bias", "dtype")


def train(net: MLP, data, config: RunConfig | None = None, *, progress=True, **hyper) -> History:
    """Train ``net`` in place as ``config`` says and return its :class:`History`.

    Each epoch walks the training set in mini-batches of the batch schedule's
    m for that epoch (``batch_size`` unless it grows), consecutive samples of
    the epoch's order (the last batch may be smaller),
    computes the mean gradient ḡ of each batch (report Algorithm 1) and applies
    the optimiser's update with the schedule's learning rate for that epoch.
    Every ``log_every`` samples (moved to the next batch boundary) it records
    the window's mean training loss and the test loss and accuracy.

    A run stops early and is marked ``diverged`` (with a ``reason``) when, at
    the end of a window, a training loss is not finite, a parameter is nan or
    infinite, the window's training loss or the test loss is not finite or
    exceeds :data:`LOSS_BOUND` (1,000 nats: blown up while still finite), or a
    hidden layer output 0 for every sample of the window (a dead ReLU
    network: every gradient is exactly 0, so it cannot recover).

    Parameters
    ----------
    net : MLP
        Trained in place; its architecture must be the one ``config`` names.
    data : object with ``x_train``, ``y_train``, ``x_test``, ``y_test``
        e.g. :func:`ex3lib.load_mnist`.
    config : RunConfig, optional
        The hyper-parameters (see :class:`RunConfig`): ``optimiser``,
        ``learning_rate`` (η, or η₀ with decay), ``batch_size`` (m, from 1 for
        on-line learning to the number of training samples), ``epochs``,
        ``schedule`` and ``lr_final`` (η_N of the report's Eq. 5),
        ``batch_schedule`` and ``batch_final`` (m_N; a growing batch, capped
        at the number of training samples: see
        :func:`ex3lib.schedules.make_batch_schedule`),
        ``momentum``, ``nesterov``, ``b1``, ``b2``, ``eps``, ``seed`` (of the
        per-epoch permutations with ``order="shuffle"``), ``order``
        (``"sequential"``, the training set in order every epoch as the
        original code, or ``"shuffle"``), ``train_size`` (the first n training
        images; a ``train_size`` of at least the data's size is recorded as
        None, all of it) and ``log_every`` (samples per logged point; 30,000 =
        two per epoch, as the report).
    progress : bool
        Show a tqdm progress bar once the run has taken more than 2 s.
    **hyper
        Instead of ``config``: its fields by name (the network's
        ``layers``, ``bias`` and ``dtype`` are taken from ``net``).

    Examples
    --------
    >>> data = load_mnist()                                          # doctest: +SKIP
    >>> config = RunConfig(learning_rate=0.1, batch_size=10, epochs=1)
    >>> hist = train(MLP(seed=0), data, config)                      # doctest: +SKIP
    >>> hist.final_accuracy > 0.95                                   # doctest: +SKIP
    True
    >>> hist = train(MLP(seed=0), data, learning_rate=0.1, epochs=1)  # doctest: +SKIP
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be an ex3lib.MLP, got {type(net).__name__}")
    check_bool("progress", progress)
    architecture = {"layers": net.layers, "bias": net.bias, "dtype": net.dtype.name}
    if config is None:
        allowed = [f.name for f in fields(RunConfig) if f.name not in ARCHITECTURE]
        unknown = [name for name in hyper if name not in allowed]
        if unknown:
            raise TypeError(f"train() got unknown hyper-parameter(s) {', '.join(map(repr, unknown))}"
                            f"{did_you_mean(unknown[0], allowed)}; allowed: {', '.join(allowed)}")
        config = RunConfig(**hyper, **architecture)
    elif not isinstance(config, RunConfig):
        raise TypeError(f"config must be an ex3lib.RunConfig, got {type(config).__name__}")
    elif hyper:
        raise TypeError(f"give the hyper-parameters either as config or by name, not both "
                        f"(got config and {', '.join(map(repr, hyper))})")
    else:
        wrong = [f"{k}={getattr(config, k)!r} but the network has {v!r}" for k, v in
                 (("layers", architecture["layers"]), ("bias", architecture["bias"]),
                  ("dtype", architecture["dtype"])) if getattr(config, k) != v]
        if wrong:
            raise ValueError(f"config does not describe net: {'; '.join(wrong)} (use "
                             f"config.replace(layers=net.layers, bias=net.bias, dtype=net.dtype.name), "
                             f"or ex3lib.run(config, data) to build the network it describes)")
    for name in ("x_train", "y_train", "x_test", "y_test"):
        if not hasattr(data, name):
            raise TypeError(f"data must have x_train, y_train, x_test and y_test (e.g. load_mnist()); "
                            f"{type(data).__name__} has no {name}")
    x_train = check_inputs("data.x_train", data.x_train, net.layers[0])
    y_train = check_labels("data.y_train", data.y_train, x_train.shape[0], net.layers[-1])
    x_test = check_inputs("data.x_test", data.x_test, net.layers[0])
    y_test = check_labels("data.y_test", data.y_test, x_test.shape[0], net.layers[-1])
    train_data = _sparse_memo(x_train, y_train, net.dtype)
    check_pixels("data.x_train", x_train, train_data.values)
    validation = None
    if config.validation_size:
        n_fit = x_train.shape[0] - config.validation_size
        if n_fit < 1:
            raise ValueError(f"validation_size must be from 0 to {x_train.shape[0] - 1} (the training "
                             f"images less one), got {config.validation_size}")
        train_data, validation_data = _split(train_data, n_fit)
        validation = (validation_data, _evaluation_order(x_train, y_train, net.dtype, validation_data, n_fit))
    if config.train_size is not None and config.train_size >= train_data.y.shape[0]:
        config = config.replace(train_size=None)  # what was used: all of it
    if config.train_size is not None:
        k = config.train_size
        train_data = train_data._replace(indptr=train_data.indptr[:k + 1], y=train_data.y[:k])
    n_train = train_data.y.shape[0]
    if config.batch_size > n_train:
        raise ValueError(f"batch_size must be from 1 to the number of training samples ({n_train}), "
                         f"got {config.batch_size}")
    test_data = _sparse_memo(x_test, y_test, net.dtype)
    check_pixels("data.x_test", x_test, test_data.values)
    test = (test_data, _evaluation_order(x_test, y_test, net.dtype, test_data, 0))
    return _train(net, config, train_data, test, validation, progress)


def _split(data: SparseData, n: int) -> tuple[SparseData, SparseData]:
    """The first ``n`` rows of CSR ``data`` and the rest (the validation set), without copying the pixels."""
    cut = data.indptr[n]
    head = data._replace(indptr=data.indptr[:n + 1], y=data.y[:n])
    tail = SparseData(data.indptr[n:] - cut, data.indices[cut:], data.values[cut:], data.y[n:])
    return head, tail


def _train(net, cfg: RunConfig, train_data, test, validation, progress) -> History:
    """Train ``net`` on ``train_data``; ``test`` and ``validation`` (or None) are ``(SparseData, order)`` pairs.

    ``order`` is the order the set is evaluated in (:func:`ex3lib.network.block_order`).
    """
    t0 = time.perf_counter()
    test_data, test_order = test
    validation_data, validation_order = validation if validation is not None else (None, None)
    opt = cfg.optimiser_spec
    sched = cfg.schedule_spec
    n = train_data.y.shape[0]
    batch_sched = make_batch_schedule(cfg.batch_schedule, cfg.batch_size, batch_final=cfg.batch_final,
                                      epochs=cfg.epochs, n_train=n)
    batch_sizes = [batch_sched.batch_size_at(k) for k in range(cfg.epochs)]
    # The kernels train a copy whose weight rows start on cache-line
    # boundaries (bit-for-bit the same training; see MLP.row_aligned); it is
    # written back to ``net`` however the run ends.
    knet = net.row_aligned() if _ALIGN_ROWS else net
    work = knet.workspace(max(batch_sizes))
    eval_work = knet.workspace(500)
    state = opt.init(knet.params)
    netarr = knet.arrays()
    real_shapes = [w.shape for w in net.weights]
    stops = _window_stops(n, batch_sizes[0], cfg.log_every)
    n_hidden = len(net.layers) - 2
    rng = np.random.default_rng(cfg.seed)
    test_rows = np.arange(test_data.y.shape[0], dtype=np.int64)
    test_pred = np.empty(test_rows.shape[0], np.int64)

    order = np.arange(n, dtype=np.int64)
    if cfg.order == "shuffle":
        order = rng.permutation(n).astype(np.int64)

    points = {"epoch": [], "loss": [], "test_loss": [], "test_accuracy": [], "learning_rate": [], "time": []}

    extra = {"updates": 0, "updates_at": [], "n_train": int(n)}
    if cfg.batch_schedule != "constant":
        extra["batch_size"] = []
    if validation_data is not None:
        validation_rows = np.arange(validation_data.y.shape[0], dtype=np.int64)
        validation_pred = np.empty(validation_rows.shape[0], np.int64)
        extra.update(n_validation=int(validation_rows.shape[0]), validation_loss=[], validation_accuracy=[])
    with np.errstate(over="ignore", invalid="ignore"):
        adaptive = opt.effective_step(state, 1.0) is not None
    if adaptive:
        extra["effective_step_percentiles"] = list(STEP_PERCENTILES)
        extra["effective_step"] = []

    def log(epoch, loss, lr):
        if adaptive:
            # Per layer: percentiles of the step each weight takes per unit gradient
            # (inf or nan once a run blows up, which the divergence check reports).
            with np.errstate(over="ignore", invalid="ignore"):
                eff = opt.effective_step(state._replace(step=step), sched.learning_rate_at(0) if np.isnan(lr) else lr)
                extra["effective_step"].append(
                    [np.percentile(knet.layer_block(eff, l, shape), STEP_PERCENTILES).tolist()
                     for l, shape in enumerate(real_shapes)])
        t_loss, t_correct = kernels.evaluate(netarr, eval_work, test_data, test_rows, test_order, test_pred)
        extra["updates_at"].append(int(step))
        if validation_data is not None:
            v_loss, v_correct = kernels.evaluate(netarr, eval_work, validation_data, validation_rows,
                                                 validation_order, validation_pred)
            extra["validation_loss"].append(float(v_loss / validation_rows.shape[0]))
            extra["validation_accuracy"].append(float(v_correct / validation_rows.shape[0]))
        for key, value in (("epoch", epoch), ("loss", loss), ("test_loss", t_loss / test_rows.shape[0]),
                           ("test_accuracy", t_correct / test_rows.shape[0]), ("learning_rate", lr),
                           ("time", time.perf_counter() - t0)):
            points[key].append(float(value))

    step = 0
    first = order[:stops[0]]
    loss0, _ = kernels.evaluate(netarr, eval_work, train_data, first, np.argsort(train_data.y[first], kind="stable"),
                                np.empty(first.shape[0], np.int64))
    log(0.0, loss0 / first.shape[0], np.nan)

    diverged, reason = False, ""
    bar = tqdm(total=cfg.epochs * n, unit="sample", unit_scale=True, delay=2.0,
               disable=not progress, desc=cfg.label, leave=False)
    try:
        for k in range(cfg.epochs):
            if k > 0 and cfg.order == "shuffle":
                order = rng.permutation(n).astype(np.int64)
            lr = sched.learning_rate_at(k)
            optarr = opt.arrays(state, lr)
            m = batch_sizes[k]
            stops = _window_stops(n, m, cfg.log_every)
            if "batch_size" in extra:
                extra["batch_size"].append(m)
            start = 0
            for stop in stops:
                work.layer_alive[:] = 0
                loss_sum, used, step, status = kernels.train_window(
                    netarr, optarr, work, train_data, order, start, int(stop), m, step)
                bar.update(used)
                epoch = k + (start + used) / n
                log(epoch, loss_sum / used, lr)
                if status:
                    reason = (f"non-finite training loss ({loss_sum / used}) at epoch {epoch:.4f}, "
                              f"after {step} updates")
                else:
                    reason = _divergence(knet.params, points, work.layer_alive[:n_hidden], epoch, step)
                if reason:
                    diverged = True
                    break
                start = int(stop)
            if diverged:
                break
    finally:
        bar.close()
        net.take_weights(knet)
    seconds = time.perf_counter() - t0
    config = cfg.to_dict()
    config["init_seed"] = net.seed
    extra["updates"] = step
    if adaptive:
        # Mean step of each input unit's weight row: which pixels the method favours.
        with np.errstate(over="ignore", invalid="ignore"):
            eff = opt.effective_step(state._replace(step=step), lr)
            w0 = knet.layer_block(eff, 0, real_shapes[0])
            extra["first_layer_step_by_input"] = w0.mean(axis=1).tolist()
    return History(config=config, seconds=seconds, diverged=diverged, reason=reason, extra=extra,
                   params=net.params.copy() if cfg.keep_params else None,
                   **{key: np.array(v) for key, v in points.items()})


def _divergence(params, points, layer_alive, epoch, step) -> str:
    """Why a run that just logged a point has diverged, or ``""`` if it has not.

    Checked in this order: non-finite parameters, a window training loss or a
    test loss that is not finite or above :data:`LOSS_BOUND`, a dead hidden
    layer (``layer_alive`` 0).
    """
    where = f"at epoch {epoch:.4f}, after {step} updates"
    finite = np.isfinite(params)
    if not finite.all():
        bad = int(params.size - np.count_nonzero(finite))
        return f"non-finite parameters: {bad} weight(s) are nan or infinite {where}"
    for key, what in (("loss", "training loss of the window"), ("test_loss", "test loss")):
        value = points[key][-1]
        if not math.isfinite(value):
            return f"non-finite {what} ({value}) {where}"
        if value > LOSS_BOUND:
            return (f"{what} {value:.4g} nats {where} exceeds the divergence bound of "
                    f"{LOSS_BOUND:g} nats (ex3lib.training.LOSS_BOUND): the network has blown up")
    dead = [l + 1 for l in range(layer_alive.shape[0]) if not layer_alive[l]]
    if dead:
        return (f"dead network: hidden layer {dead[0]} output 0 for every sample of the "
                f"window ending at epoch {epoch:g}, so every gradient is exactly 0")
    return ""


def run(config: RunConfig, data, *, progress=True) -> History:
    """Build the network ``config`` describes (seeded with ``config.seed``) and train it."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    net = MLP(config.layers, bias=config.bias, dtype=config.dtype, seed=config.seed)
    return train(net, data, config, progress=progress)
