r"""The network and every update rule in plain NumPy, a few lines each, written from the equations.

This is the readable form of what the compiled kernels (:mod:`ex3lib.kernels`)
compute: the tests compare the kernels with it, the speed benchmark times it as
the NumPy baseline, and the book shows its source where it presents an
equation. Nothing here is fast; everything here is obvious.

Conventions: a sample is a row vector, ``weights[l]`` has shape
(fan_in, fan_out), the gradient ``g`` of an update rule is the *mean* gradient
of the mini-batch, :math:`\bar g = \frac1m \sum_i \nabla L_i`, and every array
is float64 unless the caller passes another dtype.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> weights = [rng.normal(size=(4, 3)), rng.normal(size=(3, 2))]
>>> loss, grads, _ = loss_and_grad(weights, rng.random((5, 4)), np.array([0, 1, 1, 0, 1]))
>>> [g.shape for g in grads]
[(4, 3), (3, 2)]
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

State = namedtuple("State", "velocity sum_sq mu nu step")
State.__doc__ = """An update rule's state: arrays shaped like the weights (None when unused) and the update count t."""


def forward(weights, x, biases=None):
    """The output of every layer: ``h_l = ReLU(h_{l-1} W_l (+ b_l))``, ``h_0 = x`` (report Eq. 2).

    The last entry is the logits ``z = h_{L-1} W_L (+ b_L)``, without ReLU; the
    softmax (Eq. 3) turns them into probabilities in :func:`loss_and_grad`.
    """
    outputs, h = [], x
    for l, w in enumerate(weights):
        z = h @ w if biases is None else h @ w + biases[l]
        h = np.maximum(z, 0.0) if l < len(weights) - 1 else z
        outputs.append(h)
    return outputs


def loss_and_grad(weights, x, y, biases=None):
    """Mean cross-entropy ``-log softmax(z)_y`` (report Eq. 1) of the batch and its gradient by back-propagation.

    Returns ``(loss, weight_grads, bias_grads)``; ``bias_grads`` is empty
    without biases. The softmax is shifted by the largest logit, so it never
    overflows; the error at the output is ``(softmax(z) - onehot(y)) / n``, and
    each layer sends back ``(delta W_l^T) * [h_{l-1} > 0]`` (the ReLU's
    derivative is 1 where its output is positive).
    """
    n = x.shape[0]
    rows = np.arange(n)
    hs = [x] + forward(weights, x, biases)
    z = hs[-1] - hs[-1].max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
    delta = e / s
    delta[rows, y] -= 1.0
    delta /= n
    grads_w, grads_b = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        grads_w[l] = hs[l].T @ delta
        if biases is not None:
            grads_b[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ weights[l].T) * (hs[l] > 0)
    return loss, grads_w, (grads_b if biases is not None else [])


def init_state(w) -> State:
    """Zero state for weights shaped like ``w``, at update count 0."""
    return State(np.zeros_like(w), np.zeros_like(w), np.zeros_like(w), np.zeros_like(w), 0)


def flush(a):
    """A decaying state with its non-zero values below the smallest normal float64 set to 0, as the kernels do.

    Left alone, such a value sticks at the smallest subnormal and makes every later step slow
    (:data:`ex3lib.kernels.updates.SMALLEST_NORMAL`); it moves no weight.
    """
    return np.where((a != 0) & (np.abs(a) < np.finfo(np.float64).tiny), a - a, a)


def sgd(w, g, state, *, learning_rate, momentum=0.0, nesterov=False):
    r"""Plain SGD (report Eq. 4), classical momentum or Nesterov momentum (Sutskever et al. 2013).

    :math:`w \leftarrow w - \eta \bar g`; with momentum :math:`\alpha`,
    :math:`v \leftarrow \alpha v + \eta \bar g` and :math:`w \leftarrow w - v`,
    or with Nesterov's look-ahead :math:`w \leftarrow w - (\alpha v + \eta \bar g)`.
    """
    if momentum == 0.0:
        return w - learning_rate * g, state._replace(step=state.step + 1)
    v = flush(momentum * state.velocity + learning_rate * g)
    step = momentum * v + learning_rate * g if nesterov else v
    return w - step, state._replace(velocity=v, step=state.step + 1)


def adagrad(w, g, state, *, learning_rate, eps=1e-8):
    r"""AdaGrad (report Algorithm 2; Duchi et al. 2011): :math:`G \leftarrow G + \bar g^2`, :math:`w \leftarrow w - \frac{\eta}{\sqrt{G + \epsilon}} \bar g`."""
    G = state.sum_sq + g**2
    return w - learning_rate / np.sqrt(G + eps) * g, state._replace(sum_sq=G, step=state.step + 1)


def rmsprop(w, g, state, *, learning_rate, b2=0.9, eps=1e-8):
    r"""RMSProp (Tieleman & Hinton 2012): AdaGrad with a decaying sum, :math:`G \leftarrow \beta_2 G + (1 - \beta_2) \bar g^2`."""
    G = flush(b2 * state.sum_sq + (1 - b2) * g**2)
    return w - learning_rate / np.sqrt(G + eps) * g, state._replace(sum_sq=G, step=state.step + 1)


def adam(w, g, state, *, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    r"""Adam (Kingma & Ba 2017) with bias correction; :math:`t` counts updates from 1.

    :math:`\mu \leftarrow \beta_1 \mu + (1 - \beta_1) \bar g`,
    :math:`\nu \leftarrow \beta_2 \nu + (1 - \beta_2) \bar g^2`,
    :math:`w \leftarrow w - \eta \frac{\mu / (1 - \beta_1^t)}{\sqrt{\nu / (1 - \beta_2^t)} + \epsilon}`.
    """
    t = state.step + 1
    mu = flush(b1 * state.mu + (1 - b1) * g)
    nu = flush(b2 * state.nu + (1 - b2) * g**2)
    w = w - learning_rate * (mu / (1 - b1**t)) / (np.sqrt(nu / (1 - b2**t)) + eps)
    return w, state._replace(mu=mu, nu=nu, step=t)


#: Each update rule by the name ``ex3lib.make_optimiser`` takes.
RULES = {"sgd": sgd, "adagrad": adagrad, "rmsprop": rmsprop, "adam": adam}


def update(name, w, g, state, *, learning_rate, momentum=0.0, nesterov=False, b1=0.9, b2=None, eps=1e-8):
    """One step of the rule ``name`` with the hyper-parameters it takes (``b2=None``: the rule's default)."""
    if name == "sgd":
        return sgd(w, g, state, learning_rate=learning_rate, momentum=momentum, nesterov=nesterov)
    if name == "adagrad":
        return adagrad(w, g, state, learning_rate=learning_rate, eps=eps)
    if name == "rmsprop":
        return rmsprop(w, g, state, learning_rate=learning_rate, b2=0.9 if b2 is None else b2, eps=eps)
    if name == "adam":
        return adam(w, g, state, learning_rate=learning_rate, b1=b1, b2=0.999 if b2 is None else b2, eps=eps)
    raise ValueError(f"name must be one of {', '.join(map(repr, RULES))}; got {name!r}")


def sgd_epoch(weights, x, y, learning_rate, batch_size, n_samples=None):
    """One epoch of plain SGD in place on ``weights``, over the first ``n_samples`` rows in order.

    Consecutive batches of ``batch_size`` rows (the last may be smaller), as
    :func:`ex3lib.train` takes them with ``order="sequential"``. Returns the
    mean per-sample training loss, each batch's loss measured before its
    update. This loop is the NumPy baseline of ``benchmarks/bench_epoch.py``.
    """
    n = x.shape[0] if n_samples is None else min(n_samples, x.shape[0])
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        loss, grads, _ = loss_and_grad(weights, x[start:stop], y[start:stop])
        loss_sum += loss * (stop - start)
        for w, g in zip(weights, grads):
            w -= learning_rate * g
    return loss_sum / n
