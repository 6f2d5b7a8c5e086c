"""The training loop's compiled core: a whole logging window of mini-batches in one call.

Each mini-batch (report Algorithm 1) is: list the pixels it uses
(:func:`~ex3lib.kernels.backward.gather_batch`), the forward pass and loss
(:func:`~ex3lib.kernels.forward.forward_loss`), and back-propagation
(:func:`~ex3lib.kernels.backward.backward_batch`), which takes the
optimiser's step row by row as the gradient comes. Logging, schedules,
divergence checks and progress bars stay in Python
(:func:`ex3lib.training.train`), which calls :func:`train_window` once per
logged point. The reference it must match batch by batch is
:func:`ex3lib.reference.loss_and_grad` followed by the rule's function in
:mod:`ex3lib.reference` (tested for every optimiser).
"""

import math

import numpy as np
from numba import njit

from .backward import backward_batch, backward_online, gather_batch, used_units
from .forward import batch_loss, forward_layer, forward_loss
from .updates import RULE, SGD, SGD_FUSED, Stepping, bias_corrections, catch_up_rows, decays_in_step


@njit(cache=True, fastmath={"contract"})
def train_window(net, opt, work, data, order, start, stop, batch_size, step):
    """Train on ``order[start:stop]`` in consecutive mini-batches of ``batch_size``.

    ``net``, ``opt``, ``work`` and ``data`` are the named tuples built by
    :meth:`ex3lib.MLP.arrays`, :meth:`ex3lib.optimisers.Optimiser.arrays`,
    :meth:`ex3lib.MLP.workspace` and :meth:`ex3lib.MLP.sparse`. Returns
    ``(loss_sum, n_samples, step, status)``: the summed per-sample training
    loss (each measured before its batch's update), how many samples were
    used, the update counter, and 1 if a loss was not finite (the window then
    stops at that batch, without updating), else 0. Hidden layers that
    produced a positive output are flagged in ``work.layer_alive``. With
    ``opt.lazy_rows`` the rows a batch reads are brought up to date layer by
    layer as its forward pass reaches them (on-line RMSProp's by the step itself),
    and every deferred row before returning (see
    :func:`~ex3lib.kernels.updates.catch_up_rows`).
    """
    loss_sum = 0.0
    n = 0
    pos = start
    status = 0
    while pos < stop:
        end = min(pos + batch_size, stop)
        B = end - pos
        rows = order[pos:end]
        fused = opt.kind == SGD
        # Plain SGD folds its step into the first layer's inputs (see backward_batch).
        n_used = gather_batch(data, rows, work.pixels, -(opt.learning_rate / B) if fused else 1.0)
        if opt.lazy_rows:
            # Each layer's rows that the batch reads are brought up to date
            # first. Not on-line RMSProp's in float64 (where writing an
            # accumulator and reading it back rounds nothing): the forward pass
            # does not read the accumulators, and its step decays them in the
            # same pass (decays_in_step; 8 % faster at m = 1 than a pass
            # of its own; through the tiles, at m = 10, 4-8 % slower).
            for l in range(len(net.weights)):
                if B == 1 and decays_in_step(opt):
                    pass
                elif l == 0:
                    catch_up_rows(opt, net.params, net.weight_offsets[0], net.shapes[0, 1], work.pixels.pixels,
                                  n_used, work.row_updated_at[0], step)
                else:
                    n_rows = used_units(work.outputs[l - 1], B, work.block_units, work.unit_max)
                    catch_up_rows(opt, net.params, net.weight_offsets[l], net.shapes[l, 1], work.block_units,
                                  n_rows, work.row_updated_at[l], step)
                forward_layer(net, data, rows, work, l)
            loss = batch_loss(net, work, data, rows)
        else:
            loss = forward_loss(net, work, data, rows)
        loss_sum += loss
        n += B
        if not math.isfinite(loss):
            status = 1
            break
        step += 1
        if fused:
            how = Stepping(SGD_FUSED, opt, net.params, opt.learning_rate / B, (1.0, 1.0), step)
        else:
            how = Stepping(RULE, opt, net.params, 1.0 / B, bias_corrections(opt.b1, opt.b2, step), step)
        if B == 1 and not fused:
            backward_online(net, n_used, work, how)
        else:
            backward_batch(net, n_used, B, work, how)
        pos = end
    if opt.lazy_rows:
        for l in range(len(net.weights)):
            every = np.arange(net.shapes[l, 0])
            catch_up_rows(opt, net.params, net.weight_offsets[l], net.shapes[l, 1], every, every.shape[0],
                          work.row_updated_at[l], step)
    return loss_sum, n, step, status
