"""Slow, obvious NumPy twins of the compiled kernels, written straight from the equations."""

import numpy as np


def forward(weights, biases, x):
    """Pre-activations of every layer (ReLU between layers, raw logits last)."""
    zs = []
    h = x
    for l, w in enumerate(weights):
        z = h @ w + (biases[l] if biases else 0.0)
        zs.append(z)
        h = np.maximum(z, 0.0)
    return zs


def loss_and_grad(weights, biases, x, y):
    """Mean cross-entropy (report Eq. 1) and its gradients by back-propagation."""
    zs = forward(weights, biases, x)
    logits = zs[-1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = x.shape[0]
    loss = -logp[np.arange(n), y].mean()
    delta = np.exp(logp)
    delta[np.arange(n), y] -= 1.0
    delta /= n
    gw, gb = [None] * len(weights), [None] * len(weights)
    for l in range(len(weights) - 1, -1, -1):
        inp = x if l == 0 else np.maximum(zs[l - 1], 0.0)
        gw[l] = inp.T @ delta
        gb[l] = delta.sum(axis=0)
        if l > 0:
            delta = (delta @ weights[l].T) * (zs[l - 1] > 0)
    return loss, gw, (gb if biases else [])


def optimiser_step(name, w, g, state, lr, momentum=0.0, nesterov=False, b1=0.9, b2=0.999, eps=1e-8):
    """One update of ``w`` (returned as a new array) with the mean gradient ``g``; ``state`` is a dict."""
    t = state.setdefault("t", 0) + 1
    state["t"] = t
    if name == "sgd" and momentum == 0.0:
        return w - lr * g
    if name == "sgd":
        v = momentum * state.get("v", np.zeros_like(w)) + lr * g
        state["v"] = v
        return w - (momentum * v + lr * g) if nesterov else w - v
    if name == "adagrad":
        G = state.get("G", np.zeros_like(w)) + g**2
        state["G"] = G
        return w - lr / np.sqrt(G + eps) * g
    if name == "rmsprop":
        E = b2 * state.get("E", np.zeros_like(w)) + (1 - b2) * g**2
        state["E"] = E
        return w - lr / np.sqrt(E + eps) * g
    if name == "adam":
        m = b1 * state.get("m", np.zeros_like(w)) + (1 - b1) * g
        v = b2 * state.get("v", np.zeros_like(w)) + (1 - b2) * g**2
        state["m"], state["v"] = m, v
        return w - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    raise ValueError(name)
