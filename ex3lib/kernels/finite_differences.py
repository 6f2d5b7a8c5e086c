r"""Losses of one sample with each weight moved by a step ``h``: the finite differences of report §2.2.

For a weight :math:`w` of layer :math:`l`, moving it by :math:`h` changes only
the pre-activation it feeds, by :math:`h x_j` (:math:`x_j` its input), so the
layers before it are reused and the layers after it recomputed from there.
:mod:`ex3lib.gradcheck` turns these losses into the forward, backward and
central differences :math:`(L(w+h) - L(w))/h`, :math:`(L(w) - L(w-h))/h` and
:math:`(L(w+h) - L(w-h))/2h`. Reference: the loss of
:func:`ex3lib.reference.loss_and_grad` with the weight moved (tested).
"""

import math

from numba import njit

from .backward import axpy


@njit(cache=True, fastmath={"contract"})
def relu_into(z, out):
    """``out = max(z, 0)``."""
    for k in range(z.shape[0]):
        out[k] = z[k] if z[k] > 0.0 else 0.0


@njit(cache=True, fastmath={"contract"})
def sample_loss(logits, y):
    """``-log softmax(logits)_y`` of one sample, shifted by the largest logit (report Eq. 1)."""
    zmax = logits[0]
    for k in range(1, logits.shape[0]):
        if logits[k] > zmax:
            zmax = logits[k]
    acc = 0.0
    for k in range(logits.shape[0]):
        acc += math.exp(logits[k] - zmax)
    return zmax + math.log(acc) - logits[y]


@njit(cache=True, fastmath={"contract"})
def perturbed_losses(weights, biases, has_bias, Z, H, y, layer, x_in, hs, out):
    """Loss of one sample with each weight of ``weights[layer]`` moved by each step in ``hs``.

    ``Z[l]``/``H[l]`` are the sample's pre-activations and outputs of layer
    ``l`` (``H[L-1]`` = logits), ``x_in`` the input of ``layer``.  Moving
    ``weights[layer][j, k]`` by ``h`` moves only ``Z[layer][k]`` by ``h * x_in[j]``,
    so the layers before it are reused and the next layer is updated
    incrementally.  A weight whose input is 0 cannot change the loss: its
    entries are the unperturbed loss.  ``out`` has shape (fan_in, fan_out, len(hs)).
    """
    L = len(weights)
    fan_in, fan_out = weights[layer].shape
    base = sample_loss(H[L - 1], y)
    nh = hs.shape[0]
    for j in range(fan_in):
        if x_in[j] == 0.0:
            for k in range(fan_out):
                for q in range(nh):
                    out[j, k, q] = base
    if layer == L - 1:
        logits = H[L - 1].copy()
        for j in range(fan_in):
            if x_in[j] == 0.0:
                continue
            for k in range(fan_out):
                z0 = logits[k]
                for q in range(nh):
                    logits[k] = z0 + hs[q] * x_in[j]
                    out[j, k, q] = sample_loss(logits, y)
                logits[k] = z0
        return
    # layer < L-1: one hidden unit k of this layer changes; propagate onwards.
    bufs_z = [Z[l].copy() for l in range(L)]
    bufs_h = [H[l].copy() for l in range(L)]
    Wn = weights[layer + 1]
    for j in range(fan_in):
        if x_in[j] == 0.0:
            continue
        for k in range(fan_out):
            z0 = Z[layer][k]
            h0 = H[layer][k]
            for q in range(nh):
                zk = z0 + hs[q] * x_in[j]
                hk = zk if zk > 0.0 else 0.0
                dh = hk - h0
                zn = bufs_z[layer + 1]
                if dh == 0.0:
                    zn[:] = Z[layer + 1]
                else:
                    for c in range(zn.shape[0]):
                        zn[c] = Z[layer + 1][c] + dh * Wn[k, c]
                if layer + 1 == L - 1:
                    out[j, k, q] = sample_loss(zn, y)
                    continue
                relu_into(zn, bufs_h[layer + 1])
                for l in range(layer + 2, L):
                    zl = bufs_z[l]
                    if has_bias:
                        zl[:] = biases[l]
                    else:
                        zl[:] = 0.0
                    hin = bufs_h[l - 1]
                    Wl = weights[l]
                    for c in range(hin.shape[0]):
                        a = hin[c]
                        if a != 0.0:
                            axpy(a, Wl[c], zl)
                    if l < L - 1:
                        relu_into(zl, bufs_h[l])
                out[j, k, q] = sample_loss(bufs_z[L - 1], y)
