"""Evaluation: loss, accuracy and predictions of a data set, and the loss and gradient of one batch.

The loss is the mean cross-entropy of report Eq. 1 and the accuracy the share
of samples whose largest logit is their label's; the gradient is the mean over
the batch of back-propagation's (:mod:`ex3lib.kernels.backward`). Reference:
:func:`ex3lib.reference.loss_and_grad` (and ``argmax`` of
:func:`ex3lib.reference.forward`'s logits).
"""

import numpy as np
from numba import njit

from .backward import backward_batch, gather_batch
from .forward import forward_batch, forward_loss, xent_one
from .updates import GRADIENT, Stepping


@njit(cache=True, fastmath={"contract"})
def evaluate(net, work, data, rows_all, order, out_pred):
    """Loss and accuracy of the samples ``rows_all``: returns ``(loss_sum, n_correct)`` and writes the predictions.

    The samples go forward in the order ``order`` (a permutation of the
    positions in ``rows_all``; :func:`ex3lib.network.block_order` puts
    samples that share pixels side by side, so each of the forward tile's
    blocks reads fewer weight rows), in chunks of the workspace's batch size.
    A sample's logits are the same bits in any block, and the per-sample
    losses are added as if the samples had gone in the order of ``rows_all``
    (chunk by chunk, each chunk's sum from 0 in sample order, as
    :func:`~ex3lib.kernels.forward.softmax_xent` adds a batch), so the result
    does not depend on ``order``. ``out_pred[i]`` is the prediction for
    ``rows_all[i]``; ties in the logits go to the lowest class index (as
    ``argmax`` does).
    """
    L = len(net.weights)
    chunk = work.outputs[0].shape[0]
    n = rows_all.shape[0]
    losses = np.empty(n)
    rows = np.empty(chunk, np.int64)
    for pos in range(0, n, chunk):
        end = min(pos + chunk, n)
        B = end - pos
        for s in range(B):
            rows[s] = rows_all[order[pos + s]]
        forward_batch(net, data, rows[:B], work)
        logits = work.outputs[L - 1]
        deltas = work.deltas[L - 1]
        for s in range(B):
            i = order[pos + s]
            z = logits[s]
            losses[i] = xent_one(z, data.y[rows[s]], deltas[s])
            best = 0
            for k in range(1, z.shape[0]):
                if z[k] > z[best]:
                    best = k
            out_pred[i] = best
    loss_sum = 0.0
    correct = 0
    for pos in range(0, n, chunk):
        total = 0.0
        for i in range(pos, min(pos + chunk, n)):
            total += losses[i]
            correct += 1 if out_pred[i] == data.y[rows_all[i]] else 0
        loss_sum += total
    return loss_sum, correct


@njit(cache=True, fastmath={"contract"})
def loss_and_grad(net, opt, work, data, rows):
    """Mean loss over ``rows`` and the mean gradient left in ``work.grad`` (one batch).

    ``opt`` is any ``OptArrays`` (it is not used: no step is taken).
    """
    B = rows.shape[0]
    total = forward_loss(net, work, data, rows)
    n_used = gather_batch(data, rows, work.pixels, 1.0)
    backward_batch(net, n_used, B, work, Stepping(GRADIENT, opt, net.params, 1.0, (1.0, 1.0), 0))
    inv = 1.0 / B
    for i in range(work.grad.shape[0]):
        work.grad[i] *= inv
    return total * inv
