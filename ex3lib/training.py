"""The training loop: mini-batch epochs in compiled code, logging, divergence detection, progress."""

from __future__ import annotations

import time
import weakref
from dataclasses import asdict, dataclass, field, fields

import numpy as np
from tqdm.auto import tqdm

from . import kernels
from ._validate import check_bool, check_choice, check_int, check_inputs, check_labels
from .network import MLP, REPORT_LAYERS, to_sparse
from .optimisers import make_optimiser
from .schedules import make_schedule

ORDERS = ("sequential", "shuffle")
STEP_PERCENTILES = (10, 50, 90)
#: Train on MLP.row_aligned copies (off only in the test that checks they change nothing).
_ALIGN_ROWS = True



@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run; equal configs give bit-identical histories.

    ``seed`` seeds both the network's initialisation and (with ``order="shuffle"``)
    the sample order.  Hyper-parameter names follow STYLE.md: ``learning_rate``
    (η, or η₀ with decay), ``batch_size`` (m), ``epochs``, ``momentum`` (α),
    ``lr_final`` (η_N), ``b1``, ``b2``, ``eps``, ``seed``.  ``train_size`` (the
    first n training images; None for all 60,000) and ``log_every`` (samples per
    logged point) complete it.  Invalid values raise ValueError/TypeError naming
    the parameter.
    """

    optimiser: str = "sgd"
    learning_rate: float = 0.1
    batch_size: int = 10
    epochs: int = 10
    schedule: str = "constant"
    lr_final: float | None = None
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

    def __post_init__(self):
        opt = make_optimiser(self.optimiser, momentum=self.momentum, nesterov=self.nesterov,
                             b1=self.b1, b2=self.b2, eps=self.eps)
        sched = make_schedule(self.schedule, self.learning_rate, lr_final=self.lr_final,
                              epochs=self.epochs)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_choice("order", self.order, ORDERS)
        if self.train_size is not None:
            check_int("train_size", self.train_size, 1)
        check_int("log_every", self.log_every, 1)
        check_bool("bias", self.bias)
        check_choice("dtype", self.dtype, ("float64", "float32"))
        layers = tuple(check_int("layers", w, 1) for w in self.layers)
        if self.train_size is not None and self.batch_size > self.train_size:
            raise ValueError(f"batch_size must be from 1 to train_size={self.train_size}, got {self.batch_size}")
        # Canonical values, so that equal runs have equal configs (and store keys).
        for name, value in (("learning_rate", sched.learning_rate), ("lr_final", sched.lr_final),
                            ("momentum", opt.momentum), ("b1", opt.b1), ("b2", opt.b2),
                            ("eps", opt.eps), ("layers", layers), ("batch_size", int(self.batch_size)),
                            ("epochs", int(self.epochs)), ("seed", int(self.seed)),
                            ("bias", bool(self.bias)), ("nesterov", bool(self.nesterov))):
            object.__setattr__(self, name, value)

    @property
    def optimiser_spec(self):
        return make_optimiser(self.optimiser, momentum=self.momentum, nesterov=self.nesterov,
                              b1=self.b1, b2=self.b2, eps=self.eps)

    @property
    def schedule_spec(self):
        return make_schedule(self.schedule, self.learning_rate, lr_final=self.lr_final, epochs=self.epochs)

    @property
    def label(self) -> str:
        """e.g. ``"SGD η=0.1 m=10"`` or ``"momentum α=0.9 η=0.1→0.001 m=10"``."""
        eta = (f"η={self.learning_rate:g}" if self.schedule == "constant"
               else f"η={self.learning_rate:g}→{self.lr_final:g}")
        return f"{self.optimiser_spec.label} {eta} m={self.batch_size}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig field(s) {unknown}; allowed: {sorted(known)}")
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
        """A copy with some fields changed (and validated)."""
        d = {**self.to_dict(), **changes}
        if d["schedule"] == "constant" and "lr_final" not in changes:
            d["lr_final"] = None  # a constant schedule's lr_final is its learning rate, whatever that becomes
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
        The run stopped early: a non-finite loss, or a dead network.
    reason : str
        Why it diverged ("" otherwise).
    config : dict
        The :class:`RunConfig` fields, plus ``init_seed`` of the network.
    extra : dict
        ``updates`` (optimiser steps taken) and ``n_train``; for the adaptive
        methods also ``effective_step`` — per logged point and per layer, the
        ``effective_step_percentiles`` (10th, 50th, 90th) of the step each
        weight takes per unit gradient (see
        :meth:`ex3lib.optimisers.Optimiser.effective_step`) — and
        ``first_layer_step_by_input``, the final mean step of each input
        pixel's weights.
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

    @property
    def final_loss(self) -> float:
        """Training loss of the last logged window (the report's "Avg Loss")."""
        return float(self.loss[-1])

    @property
    def final_accuracy(self) -> float:
        """Test accuracy at the last logged point (the report's "Test Acc")."""
        return float(self.test_accuracy[-1])

    def to_dict(self) -> dict:
        """A JSON-able dict (non-finite floats become None)."""
        def clean(a):
            return [float(v) if np.isfinite(v) else None for v in np.asarray(a, float)]
        return {"config": self.config, "epoch": clean(self.epoch), "loss": clean(self.loss),
                "test_loss": clean(self.test_loss), "test_accuracy": clean(self.test_accuracy),
                "learning_rate": clean(self.learning_rate), "time": clean(self.time),
                "seconds": self.seconds, "diverged": self.diverged, "reason": self.reason,
                "extra": self.extra}

    @classmethod
    def from_dict(cls, d) -> "History":
        def arr(v):
            return np.array([np.nan if x is None else x for x in v], float)
        return cls(config=d["config"], epoch=arr(d["epoch"]), loss=arr(d["loss"]),
                   test_loss=arr(d["test_loss"]), test_accuracy=arr(d["test_accuracy"]),
                   learning_rate=arr(d["learning_rate"]), time=arr(d["time"]),
                   seconds=float(d["seconds"]), diverged=bool(d["diverged"]), reason=d["reason"],
                   extra=d.get("extra", {}))


_SPARSE_MEMO: dict = {}


def _sparse_memo(x, y, dtype):
    """CSR form of a read-only dataset, computed once per array (arrays that can change are not memoised)."""
    if x.flags.writeable or y.flags.writeable:
        return to_sparse(x, y, dtype)
    key = (id(x), id(y), np.dtype(dtype).str)
    hit = _SPARSE_MEMO.get(key)
    if hit is not None and hit[0]() is x and hit[1]() is y:
        return hit[2]
    data = to_sparse(x, y, dtype)
    _SPARSE_MEMO[key] = (weakref.ref(x), weakref.ref(y), data)
    weakref.finalize(x, _SPARSE_MEMO.pop, key, None)
    return data


def _subset(a, n):
    return a if n is None or n >= a.shape[0] else a[:n]


def _window_stops(n, batch_size, log_every):
    """Ends of the logging windows of one epoch, moved to the next batch boundary."""
    marks = np.arange(log_every, n, log_every)
    stops = np.minimum(-(-marks // batch_size) * batch_size, n)
    return np.unique(np.append(stops, n))


#: The RunConfig fields that describe the network rather than its training.
ARCHITECTURE = ("layers", "bias", "dtype")


def train(net: MLP, data, config: RunConfig | None = None, *, progress=True, **hyper) -> History:
    """Train ``net`` in place as ``config`` says and return its :class:`History`.

    Each epoch walks the training set in mini-batches of ``batch_size``
    consecutive samples of the epoch's order (the last batch may be smaller),
    computes the mean gradient ḡ of each batch (report Algorithm 1) and applies
    the optimiser's update with the schedule's learning rate for that epoch.
    Every ``log_every`` samples (moved to the next batch boundary) it records
    the window's mean training loss and the test loss and accuracy.

    A run stops early and is marked ``diverged`` when a training loss is not
    finite, or when a hidden layer outputs 0 for every sample of a window (a
    dead ReLU network: every gradient is exactly 0, so it cannot recover).

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
        ``momentum``, ``nesterov``, ``b1``, ``b2``, ``eps``, ``seed`` (of the
        per-epoch permutations with ``order="shuffle"``), ``order``
        (``"sequential"``, the training set in order every epoch as the
        original code, or ``"shuffle"``), ``train_size`` (the first n training
        images) and ``log_every`` (samples per logged point; 30,000 = two per
        epoch, as the report).
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
            raise TypeError(f"train() got unknown hyper-parameter(s) {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(allowed)}")
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
    if config.train_size is not None and config.train_size < x_train.shape[0]:
        k = config.train_size
        train_data = train_data._replace(indptr=train_data.indptr[:k + 1], y=train_data.y[:k])
    n_train = train_data.y.shape[0]
    if config.batch_size > n_train:
        raise ValueError(f"batch_size must be from 1 to the number of training samples ({n_train}), "
                         f"got {config.batch_size}")
    test_data = _sparse_memo(x_test, y_test, net.dtype)
    return _train(net, config, train_data, test_data, progress)


def _train(net, cfg: RunConfig, train_data, test_data, progress) -> History:
    t0 = time.perf_counter()
    opt = cfg.optimiser_spec
    sched = cfg.schedule_spec
    n = train_data.y.shape[0]
    # The kernels train a copy whose weight rows start on cache-line
    # boundaries (bit-for-bit the same training; see MLP.row_aligned); it is
    # written back to ``net`` however the run ends.
    knet = net.row_aligned() if _ALIGN_ROWS else net
    work = knet.workspace(cfg.batch_size)
    eval_work = knet.workspace(500)
    state = opt.init(knet.params)
    netarr = knet.arrays()
    real_shapes = [w.shape for w in net.weights]
    stops = _window_stops(n, cfg.batch_size, cfg.log_every)
    n_hidden = len(net.layers) - 2
    rng = np.random.default_rng(cfg.seed)
    test_rows = np.arange(test_data.y.shape[0], dtype=np.int64)
    test_pred = np.empty(test_rows.shape[0], np.int64)

    order = np.arange(n, dtype=np.int64)
    if cfg.order == "shuffle":
        order = rng.permutation(n).astype(np.int64)

    points = {"epoch": [], "loss": [], "test_loss": [], "test_accuracy": [], "learning_rate": [], "time": []}

    extra = {"updates": 0, "n_train": int(n)}
    adaptive = opt.effective_step(state, 1.0) is not None
    if adaptive:
        extra["effective_step_percentiles"] = list(STEP_PERCENTILES)
        extra["effective_step"] = []

    def log(epoch, loss, lr):
        if adaptive:
            # Per layer: percentiles of the step each weight takes per unit gradient.
            eff = opt.effective_step(state._replace(step=step), sched.learning_rate_at(0) if np.isnan(lr) else lr)
            extra["effective_step"].append(
                [np.percentile(knet.layer_block(eff, l, shape), STEP_PERCENTILES).tolist()
                 for l, shape in enumerate(real_shapes)])
        t_loss, t_correct = kernels.evaluate(netarr, eval_work, test_data, test_rows, test_pred)
        for key, value in (("epoch", epoch), ("loss", loss), ("test_loss", t_loss / test_rows.shape[0]),
                           ("test_accuracy", t_correct / test_rows.shape[0]), ("learning_rate", lr),
                           ("time", time.perf_counter() - t0)):
            points[key].append(float(value))

    step = 0
    first = order[:stops[0]]
    loss0, _ = kernels.evaluate(netarr, eval_work, train_data, first, np.empty(first.shape[0], np.int64))
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
            start = 0
            for stop in stops:
                work.layer_alive[:] = 0
                loss_sum, used, step, status = kernels.train_window(
                    netarr, optarr, work, train_data, order, start, int(stop), cfg.batch_size, step)
                bar.update(used)
                epoch = k + (start + used) / n
                if status:
                    diverged = True
                    reason = (f"non-finite training loss ({loss_sum / used}) at epoch {epoch:.4f}, "
                              f"after {step} updates")
                    log(epoch, loss_sum / used, lr)
                    break
                log(epoch, loss_sum / used, lr)
                dead = [l + 1 for l in range(n_hidden) if not work.layer_alive[l]]
                if dead:
                    diverged = True
                    reason = (f"dead network: hidden layer {dead[0]} output 0 for every sample of the "
                              f"window ending at epoch {epoch:g}, so every gradient is exactly 0")
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
        eff = opt.effective_step(state._replace(step=step), lr)
        w0 = knet.layer_block(eff, 0, real_shapes[0])
        extra["first_layer_step_by_input"] = w0.mean(axis=1).tolist()
    return History(config=config, seconds=seconds, diverged=diverged, reason=reason, extra=extra,
                   **{key: np.array(v) for key, v in points.items()})


def run(config: RunConfig, data, *, progress=True) -> History:
    """Build the network ``config`` describes (seeded with ``config.seed``) and train it."""
    if not isinstance(config, RunConfig):
        raise TypeError(f"config must be a RunConfig, got {type(config).__name__}")
    net = MLP(config.layers, bias=config.bias, dtype=config.dtype, seed=config.seed)
    return train(net, data, config, progress=progress)
