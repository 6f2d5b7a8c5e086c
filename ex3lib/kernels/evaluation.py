"""Evaluation: loss, accuracy and predictions of a data set, and the loss and gradient of one batch.

The loss is the mean cross-entropy of report Eq. 1 and the accuracy the share
of samples whose largest logit is their label's; the gradient is the mean over
the batch of back-propagation's (:mod:`ex3lib.kernels.backward`). Reference:
:func:`ex3lib.reference.loss_and_grad` (and ``argmax`` of
:func:`ex3lib.reference.forward`'s logits).
"""

from numba import njit

from .backward import backward_batch, gather_batch
from .forward import forward_loss
from .updates import GRADIENT, Stepping


@njit(cache=True, fastmath={"contract"})
def evaluate(net, work, data, rows_all, out_pred):
    """Forward ``rows_all`` in chunks; returns ``(loss_sum, n_correct)`` and writes the predictions.

    Ties in the logits go to the lowest class index (as ``argmax`` does).
    """
    L = len(net.weights)
    chunk = work.outputs[0].shape[0]
    loss_sum = 0.0
    correct = 0
    n = rows_all.shape[0]
    for pos in range(0, n, chunk):
        end = min(pos + chunk, n)
        B = end - pos
        rows = rows_all[pos:end]
        batch_loss = forward_loss(net, work, data, rows)
        loss_sum += batch_loss
        logits = work.outputs[L - 1]
        for s in range(B):
            z = logits[s]
            best = 0
            for k in range(1, z.shape[0]):
                if z[k] > z[best]:
                    best = k
            out_pred[pos + s] = best
            if best == work.batch_labels[s]:
                correct += 1
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
