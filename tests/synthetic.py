"""Synthetic histories for the tests of the analysis, claims, tables and plots: no training."""

import numpy as np

from ex3lib import History, RunConfig


def hist(acc, loss=None, *, diverged=False, reason="", test_loss=None, seconds=1.0, extra=None, **config):
    """A History with test accuracy ``acc`` (one value per half epoch from epoch 0) and the given config fields.

    A scalar ``acc`` is a curve rising from 0.1 to it over 10 epochs.
    """
    acc = np.asarray(acc, dtype=float)
    if acc.ndim == 0:
        acc = np.concatenate([[0.1], np.linspace(float(acc) - 0.02, float(acc), 20)])
    n = len(acc)
    loss = np.linspace(2.3, 0.05, n) if loss is None else np.broadcast_to(np.asarray(loss, float), (n,)).copy()
    test_loss = loss * 1.2 if test_loss is None else np.asarray(test_loss, float)
    config.setdefault("epochs", 10)
    cfg = RunConfig(**config).to_dict()
    cfg["init_seed"] = cfg["seed"]
    return History(config=cfg, epoch=np.arange(n) * 0.5, loss=loss, test_loss=test_loss, test_accuracy=acc,
                   learning_rate=np.full(n, np.nan), time=np.arange(n, dtype=float), seconds=float(seconds),
                   diverged=diverged, reason=reason, extra={"updates": 1000, **(extra or {})})


def seeds(acc, n=3, spread=0.001, **config):
    """``n`` seeds of one setting whose final accuracies are ``acc`` + (−spread, 0, +spread, ...)."""
    return [hist(acc + spread * (i - (n - 1) / 2), seed=i, **config) for i in range(n)]


def dead(**config):
    """A run that died in its first epoch: loss ln 10, accuracy 0.098."""
    return hist([0.1, 0.098, 0.098], loss=np.log(10), diverged=True, reason="dead network: ...", **config)


def overflow(**config):
    """A run whose loss overflowed to nan."""
    return hist([0.1, 0.098], loss=[2.3, np.nan], diverged=True, reason="non-finite training loss (nan) ...", **config)


def blown_up(**config):
    """A run stopped when its finite loss passed the divergence bound."""
    return hist([0.1, 0.098], loss=[2.3, 4.97e188], diverged=True,
                reason="training loss of the window 4.97e+188 nats ... exceeds the divergence bound ...", **config)
