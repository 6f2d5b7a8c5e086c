r"""Learning-rate and batch-size schedules: pure functions of the epoch, evaluated by the training loop.

``constant``
    :math:`\eta_k = \eta_0` for every epoch.
``linear_decay``
    report Eq. 5: :math:`\eta_k = \eta_0 (1 - \alpha) + \alpha\,\eta_N`, :math:`\alpha = k / N`,
    where :math:`k = 0, 1, \dots, N-1` is the current epoch and :math:`N` the number of
    epochs.  The rate is constant within an epoch; the first epoch uses
    :math:`\eta_0` and the last :math:`\eta_0 / N + \eta_N (N - 1) / N`.

Batch-size schedules (Smith et al. 2018, "Don't decay the learning rate,
increase the batch size") are pure functions of the epoch too:

``constant``
    :math:`m_k = m_0` for every epoch.
``increase``
    :math:`1 / m_k = (1 - \alpha) / m_0 + \alpha / m_N`, :math:`\alpha = k / N`,
    rounded to the nearest integer (halves up) and capped at the training-set
    size. Run at a constant η₀, it mirrors Eq. 5: the scale of a step's
    gradient noise is proportional to η/m (Smith et al.), and with
    :math:`m_N = m_0 \eta_0 / \eta_N` the schedule gives
    :math:`\eta_0 / m_k = \eta_k / m_0` (before rounding), where
    :math:`\eta_k` is Eq. 5's rate at batch size :math:`m_0`: the same ratio,
    epoch by epoch, as the decay, i.e. :math:`m_k = m_0 \eta_0 / \eta_k`. The
    report's decay (η₀ = 0.1 to η_N = 0.001 at m = 10, ten epochs) becomes
    η = 0.1 with m growing from 10 towards m_N = 1,000: 10, 11, 12, 14, 17, 20,
    25, 33, 48 and 92 (like η_N, m_N is the end the schedule heads for, not a
    batch it uses), 33,393 updates on MNIST's 60,000 images instead of 60,000.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._validate import check_choice, check_float, check_int

SCHEDULES = ("constant", "linear_decay")
BATCH_SCHEDULES = ("constant", "increase")


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule; build one with :func:`make_schedule`."""

    name: str
    learning_rate: float
    lr_final: float
    epochs: int

    def learning_rate_at(self, epoch: int) -> float:
        """η for the epoch with 0-based index ``epoch``.

        Examples
        --------
        >>> make_schedule("linear_decay", 0.1, lr_final=0.001, epochs=10).learning_rate_at(5)
        0.0505
        """
        epoch = check_int("epoch", epoch, 0, self.epochs - 1)
        if self.name == "constant":
            return self.learning_rate
        alpha = epoch / self.epochs
        return self.learning_rate * (1.0 - alpha) + alpha * self.lr_final


def make_schedule(name="constant", learning_rate=0.1, *, lr_final=None, epochs=10) -> Schedule:
    """Validate and build a :class:`Schedule`.

    Parameters
    ----------
    name : {"constant", "linear_decay"}
    learning_rate : float > 0
        η (constant) or η₀ (initial rate of ``linear_decay``).
    lr_final : float > 0
        η_N of ``linear_decay``; must be omitted (or equal ``learning_rate``) for ``constant``.
    epochs : int >= 1
        N, the number of epochs the schedule spans.
    """
    check_choice("schedule", name, SCHEDULES)
    learning_rate = check_float("learning_rate", learning_rate, low=0.0, low_open=True)
    epochs = check_int("epochs", epochs, 1)
    if name == "linear_decay":
        if lr_final is None:
            raise ValueError("schedule 'linear_decay' needs lr_final (the final learning rate η_N)")
        lr_final = check_float("lr_final", lr_final, low=0.0, low_open=True)
    else:
        if lr_final is not None and lr_final != learning_rate:
            raise ValueError(f"lr_final applies to schedule 'linear_decay' only; "
                             f"got lr_final={lr_final!r} with schedule 'constant'")
        lr_final = learning_rate
    return Schedule(name, learning_rate, lr_final, epochs)


@dataclass(frozen=True)
class BatchSchedule:
    """A batch-size schedule; build one with :func:`make_batch_schedule`."""

    name: str
    batch_size: int
    batch_final: int
    epochs: int
    n_train: int | None = None

    def batch_size_at(self, epoch: int) -> int:
        r"""m for the epoch with 0-based index ``epoch``, at most ``n_train``.

        Computed in integers, :math:`m_k = \mathrm{round}(m_0 m_N N / ((N - k) m_N + k m_0))`,
        so that a value halfway between two batch sizes always goes up.

        Examples
        --------
        >>> s = make_batch_schedule("increase", 10, batch_final=1000, epochs=10)
        >>> [s.batch_size_at(k) for k in range(10)]
        [10, 11, 12, 14, 17, 20, 25, 33, 48, 92]
        """
        epoch = check_int("epoch", epoch, 0, self.epochs - 1)
        if self.name == "constant":
            return self.batch_size
        m0, m_final, n_epochs = self.batch_size, self.batch_final, self.epochs
        num = m0 * m_final * n_epochs
        den = (n_epochs - epoch) * m_final + epoch * m0
        m = (2 * num + den) // (2 * den)
        return m if self.n_train is None else min(m, self.n_train)


def make_batch_schedule(name="constant", batch_size=10, *, batch_final=None, epochs=10,
                        n_train=None) -> BatchSchedule:
    """Validate and build a :class:`BatchSchedule`.

    Parameters
    ----------
    name : {"constant", "increase"}
        The ``batch_schedule``.
    batch_size : int >= 1
        m (constant) or m₀ (the first epoch's batch size of ``increase``).
    batch_final : int >= batch_size
        m_N of ``increase``, the batch size whose reciprocal the schedule
        approaches linearly (``batch_size * learning_rate / lr_final`` mirrors
        a linear decay to ``lr_final``); must be omitted (or equal
        ``batch_size``) for ``constant``.
    epochs : int >= 1
        N, the number of epochs the schedule spans.
    n_train : int >= batch_size, optional
        The training-set size, at which the batch size stops growing (None: no cap).

    Examples
    --------
    >>> make_batch_schedule("increase", 10, batch_final=1000, epochs=10, n_train=40).batch_size_at(9)
    40
    """
    check_choice("batch_schedule", name, BATCH_SCHEDULES)
    batch_size = check_int("batch_size", batch_size, 1)
    epochs = check_int("epochs", epochs, 1)
    if n_train is not None:
        n_train = check_int("n_train", n_train, 1)
        if batch_size > n_train:
            raise ValueError(f"batch_size must be from 1 to the number of training samples ({n_train}), "
                             f"got {batch_size}")
    if name == "increase":
        if batch_final is None:
            raise ValueError("batch_schedule 'increase' needs batch_final (the final batch size m_N)")
        batch_final = check_int("batch_final", batch_final, 1)
        if batch_final < batch_size:
            raise ValueError(f"batch_final must be at least batch_size={batch_size} (batch_schedule "
                             f"'increase' grows the batch from m_0 to m_N), got {batch_final}")
    else:
        if batch_final is not None and batch_final != batch_size:
            raise ValueError(f"batch_final applies to batch_schedule 'increase' only; "
                             f"got batch_final={batch_final!r} with batch_schedule 'constant'")
        batch_final = batch_size
    return BatchSchedule(name, batch_size, batch_final, epochs, n_train)
