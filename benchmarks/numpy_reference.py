"""A plain-NumPy implementation of the report's network, the baseline ex3lib is benchmarked against.

It is written the way a competent NumPy user would write it, not tuned against
ex3lib: dense float64 inputs, one ``@`` matmul per layer and batch,
``np.maximum`` for ReLU, a max-shifted softmax, and a Python loop over the
mini-batches.  The network is the 784-300-100-100-10 MLP without biases; the
loss is the mean cross-entropy over the batch and the update is plain SGD,
``w -= learning_rate * g`` with ``g`` the batch-mean gradient.

:func:`check_against_ex3lib` verifies that this reference computes the same
loss, gradients and SGD trajectory as :class:`ex3lib.MLP` and :func:`ex3lib.train`,
so the benchmark compares two implementations of the same computation.
"""

from __future__ import annotations

import numpy as np

import ex3lib

#: Tolerance of :func:`check_against_ex3lib`: max-norm relative error per array.
CHECK_RTOL = 1e-10


def initial_weights(seed=0):
    """The weights of ``ex3lib.MLP(seed=seed)`` (Glorot uniform), as independent C-contiguous arrays."""
    return [np.array(w, dtype=np.float64, order="C") for w in ex3lib.MLP(seed=seed).weights]


def loss_and_grad(weights, x, y):
    """Mean cross-entropy of the batch ``(x, y)`` and its gradient with respect to every weight matrix.

    Parameters
    ----------
    weights : list of ndarray
        ``weights[l]`` has shape (fan_in, fan_out).
    x : ndarray, shape (B, 784)
    y : ndarray of int, shape (B,)

    Returns
    -------
    loss : float
    grads : list of ndarray, shaped like ``weights``
    """
    n = x.shape[0]
    rows = np.arange(n)
    hs = [x]
    for w in weights[:-1]:
        hs.append(np.maximum(hs[-1] @ w, 0.0))
    z = hs[-1] @ weights[-1]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
    d = e / s
    d[rows, y] -= 1.0
    d /= n
    grads = [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        grads[l] = hs[l].T @ d
        if l > 0:
            # The ReLU derivative is 1 where the output is positive, i.e. where z > 0.
            d = (d @ weights[l].T) * (hs[l] > 0)
    return loss, grads


def sgd_epoch(weights, x, y, learning_rate, batch_size, n_samples=None):
    """One epoch of plain SGD in place on ``weights``, over the first ``n_samples`` rows in order.

    The last batch may be smaller than ``batch_size``, as in :func:`ex3lib.train`.
    Returns the mean per-sample training loss, each batch's loss measured
    before its update.
    """
    n = x.shape[0] if n_samples is None else min(n_samples, x.shape[0])
    loss_sum = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        loss, grads = loss_and_grad(weights, x[start:stop], y[start:stop])
        loss_sum += loss * (stop - start)
        for w, g in zip(weights, grads):
            w -= learning_rate * g
    return loss_sum / n


def _rel_err(a, b):
    """Max-norm relative error of ``a`` against the reference ``b``.

    Element-wise relative error would be meaningless for gradients that are
    (nearly) 0, where the two implementations' different summation orders
    leave differences of a few ulps of the larger terms.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.max(np.abs(b))
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a)))


def check_against_ex3lib(x, y, *, seed=0, batch_sizes=(1, 10, 100), train_samples=200,
                         learning_rate=0.01, rtol=CHECK_RTOL):
    """Compare this reference with ex3lib on the data ``(x, y)``; raise AssertionError on a mismatch.

    Checks (1) the loss and every weight gradient of :func:`loss_and_grad`
    against :meth:`ex3lib.MLP.loss_and_grad` on the first batch of each size in
    ``batch_sizes``, at the initial weights and again after the SGD run below,
    and (2) the weights after :func:`sgd_epoch` over the first
    ``train_samples`` rows with batch size 10 against :func:`ex3lib.train` on
    the same rows (the change of the weights, which is what the update rule
    and the batch order determine).  Every
    comparison must agree to ``rtol`` in max-norm relative error.

    Returns
    -------
    dict
        The largest relative error of each kind: ``loss``, ``grad``, ``weights``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    worst = {"loss": 0.0, "grad": 0.0, "weights": 0.0}

    def compare(kind, what, mine, theirs):
        err = _rel_err(mine, theirs)
        worst[kind] = max(worst[kind], err)
        if not err <= rtol:
            raise AssertionError(f"NumPy reference disagrees with ex3lib: {what} has relative error "
                                 f"{err:.3g} > {rtol:g}")

    def compare_grads(net, weights, label):
        for m in batch_sizes:
            xb, yb = x[:m], y[:m]
            loss, grads = loss_and_grad(weights, xb, yb)
            ex_loss, ex_grads = net.loss_and_grad(xb, yb)
            compare("loss", f"loss ({label}, batch of {m})", loss, ex_loss)
            for l, (g, ex_g) in enumerate(zip(grads, ex_grads)):
                compare("grad", f"gradient of layer {l + 1} ({label}, batch of {m})", g, ex_g)

    net = ex3lib.MLP(seed=seed)
    weights = initial_weights(seed)
    compare_grads(net, weights, "initial weights")

    k = min(train_samples, x.shape[0])
    split = max(k // 2, 1)
    data = _Split(x[:k], y[:k], x[:split], y[:split])
    ex3lib.train(net, data, learning_rate=learning_rate, batch_size=10, epochs=1, log_every=k,
                 progress=False)
    sgd_epoch(weights, x, y, learning_rate, 10, n_samples=k)
    # The updates are tiny next to the weights, so compare what SGD changed.
    for l, (w, ex_w, w0) in enumerate(zip(weights, net.weights, initial_weights(seed))):
        compare("weights", f"change of layer {l + 1} weights over {k} samples of SGD", w - w0, ex_w - w0)
    compare_grads(net, weights, f"after {k} samples of SGD")
    return worst


class _Split:
    """The minimal dataset object :func:`ex3lib.train` accepts."""

    def __init__(self, x_train, y_train, x_test, y_test):
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
