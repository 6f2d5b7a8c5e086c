r"""Learning-rate schedules: pure functions of the epoch, evaluated by the training loop.

``constant``
    :math:`\eta_k = \eta_0` for every epoch.
``linear_decay``
    report Eq. 5: :math:`\eta_k = \eta_0 (1 - \alpha) + \alpha\,\eta_N`, :math:`\alpha = k / N`,
    where :math:`k = 0, 1, \dots, N-1` is the current epoch and :math:`N` the number of
    epochs.  The rate is constant within an epoch; the first epoch uses
    :math:`\eta_0` and the last :math:`\eta_0 / N + \eta_N (N - 1) / N`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._validate import check_choice, check_float, check_int

SCHEDULES = ("constant", "linear_decay")


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
