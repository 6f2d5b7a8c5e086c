import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ex3lib import MLP, kernels, network
from ex3lib.network import block_order

from ex3lib.reference import forward, loss_and_grad


def test_report_network_has_276200_parameters():
    net = MLP()
    assert net.layers == (784, 300, 100, 100, 10)
    assert net.n_params == 784 * 300 + 300 * 100 + 100 * 100 + 100 * 10 == 276_200
    assert [w.shape for w in net.weights] == [(784, 300), (300, 100), (100, 100), (100, 10)]
    assert net.biases == []


def test_weights_are_views_of_the_flat_parameters():
    net = MLP(seed=1)
    net.weights[2][3, 4] = 123.0
    assert 123.0 in net.params
    assert all(np.shares_memory(w, net.params) for w in net.weights)


def test_glorot_uniform_initialisation_is_seeded():
    a, b, c = MLP(seed=0), MLP(seed=0), MLP(seed=1)
    assert np.array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    for w in a.weights:
        limit = np.sqrt(6 / sum(w.shape))
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.95 * limit
        assert abs(w.std() - limit / np.sqrt(3)) < 0.05 * limit


def test_biases_are_optional_and_start_at_zero():
    net = MLP(bias=True)
    assert net.n_params == 276_200 + 300 + 100 + 100 + 10
    assert [b.shape for b in net.biases] == [(300,), (100,), (100,), (10,)]
    assert all(not b.any() for b in net.biases)


# Widths below, at and above the 8-lane vectors and 16/32-column tiles of the kernels.
@pytest.mark.parametrize("layers", [(784, 64, 32, 10), (784, 300, 100, 100, 10), (784, 7, 5, 10), (784, 33, 17, 10)])
@pytest.mark.parametrize("bias", [False, True])
def test_loss_and_grad_match_the_numpy_twin(small, bias, layers):
    net = MLP(layers, bias=bias, seed=3)
    if bias:
        rng = np.random.default_rng(0)
        for b in net.biases:
            b[:] = rng.normal(0, 0.1, b.shape)
    x, y = small.x_train[:37], small.y_train[:37]
    loss, grads = net.loss_and_grad(x, y)
    ref_loss, ref_gw, ref_gb = loss_and_grad(net.weights, x, y, net.biases or None)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for g, r in zip(grads, ref_gw + ref_gb):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)


def test_gradient_matches_central_differences(small):
    net = MLP((784, 20, 15, 10), seed=4)
    x, y = small.x_train[:5], small.y_train[:5]
    _, grads = net.loss_and_grad(x, y)
    rng = np.random.default_rng(1)
    h = 1e-6
    errors = []
    for l, w in enumerate(net.weights):
        for _ in range(15):
            i, j = rng.integers(w.shape[0]), rng.integers(w.shape[1])
            if l == 0:
                i = int(np.nonzero(x[0])[0][0])
            old = w[i, j]
            w[i, j] = old + h
            up = net.loss_and_grad(x, y)[0]
            w[i, j] = old - h
            down = net.loss_and_grad(x, y)[0]
            w[i, j] = old
            num = (up - down) / (2 * h)
            errors.append(abs(num - grads[l][i, j]) / max(abs(num), abs(grads[l][i, j]), 1e-8))
    assert max(errors) < 1e-5
    assert np.mean(errors) < 1e-6


def test_softmax_is_stable_for_huge_logits(small):
    net = MLP((784, 16, 10), seed=0)
    net.params *= 1e4
    loss, grads = net.loss_and_grad(small.x_train[:20], small.y_train[:20])
    assert np.isfinite(loss) and loss > 100
    assert all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("layers, bias, dtype", [((784, 300, 100, 100, 10), False, np.float64),
                                                  ((784, 37, 19, 10), True, np.float64),
                                                  ((784, 64, 10), False, np.float32)])
def test_a_samples_outputs_do_not_depend_on_its_batch(small, layers, bias, dtype):
    # The kernels take samples through a layer in register-tile blocks and
    # one by one; both sum a sample's non-zero inputs in the same order, so a
    # sample's outputs in every layer must be the same bits in any batch.
    net = MLP(layers, bias=bias, seed=6, dtype=dtype)
    if bias:
        for b in net.biases:
            b[:] = np.random.default_rng(1).normal(0, 0.1, b.shape)
    data = net.sparse(small.x_train, small.y_train)
    n = data.y.shape[0]

    def outputs(batch):
        work = net.workspace(batch)
        arrays = net.arrays()
        layers_out = [[] for _ in net.weights]
        for start in range(0, n, batch):
            rows = np.arange(start, min(start + batch, n), dtype=np.int64)
            kernels.forward.forward_batch(arrays, data, rows, work)
            for l, a in enumerate(work.outputs):
                layers_out[l].append(a[:rows.shape[0]].copy())
        return [np.concatenate(o) for o in layers_out]

    alone = outputs(1)
    assert np.isfinite(alone[-1]).all() and (alone[0] > 0).any()
    for batch in (4, 5, 13, n):
        for l, (a, b) in enumerate(zip(outputs(batch), alone)):
            assert np.array_equal(a, b), (batch, l)


def test_predict_and_accuracy_match_numpy(small):
    net = MLP((784, 32, 10), seed=2)
    logits = forward(net.weights, small.x_test)[-1]
    assert np.array_equal(net.predict(small.x_test), logits.argmax(axis=1))
    assert net.accuracy(small.x_test, small.y_test) == np.mean(logits.argmax(axis=1) == small.y_test)


def test_float32_network_agrees_with_float64(small):
    a = MLP((784, 32, 10), seed=5)
    b = MLP((784, 32, 10), seed=5, dtype=np.float32)
    assert b.params.dtype == np.float32
    la, ga = a.loss_and_grad(small.x_train[:50], small.y_train[:50])
    lb, gb = b.loss_and_grad(small.x_train[:50], small.y_train[:50])
    assert lb == pytest.approx(la, rel=1e-5)
    for g32, g64 in zip(gb, ga):
        np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-6)


def test_copy_is_independent():
    net = MLP((784, 8, 10))
    twin = net.copy()
    twin.params[0] += 1
    assert net.params[0] != twin.params[0]


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"layers": (784,)}, ValueError, "layers"),
    ({"layers": (784, 0, 10)}, ValueError, "layers"),
    ({"layers": (784, 3.5, 10)}, TypeError, "layers"),
    ({"layers": (784, 1)}, ValueError, "output"),
    ({"bias": "yes"}, TypeError, "bias"),
    ({"dtype": np.int32}, TypeError, "dtype"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_bad_network_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        MLP(**kwargs)


@pytest.mark.parametrize("x, y, exc, word", [
    (np.zeros((3, 783)), np.zeros(3, int), ValueError, "x must have shape"),
    (np.zeros((0, 784)), np.zeros(0, int), ValueError, "at least one sample"),
    (np.full((2, 784), np.nan), np.zeros(2, int), ValueError, "NaN"),
    (np.zeros((2, 784), complex), np.zeros(2, int), TypeError, "real numbers"),
    (np.zeros((2, 784)), np.zeros(3, int), ValueError, "y must have shape"),
    (np.zeros((2, 784)), np.array([0.0, 1.0]), TypeError, "integer class labels"),
    (np.zeros((2, 784)), np.array([0, 10]), ValueError, "labels from 0 to 9"),
])
def test_bad_loss_and_grad_inputs(x, y, exc, word):
    with pytest.raises(exc, match=word):
        MLP((784, 8, 10)).loss_and_grad(x, y)


BOUNDS_SCRIPT = """
import numpy as np
import ex3lib
from conftest import Small

small = Small()
net = ex3lib.MLP((784, 13, 7, 10), bias=True, seed=0)
x = small.x_train[:37]
assert (x != 0).any(axis=0).all()  # a batch that uses every input pixel
net.loss_and_grad(x, small.y_train[:37])
for kw in ({"batch_size": 1}, {"batch_size": 10}, {"batch_size": 1, "momentum": 0.9},
           {"batch_size": 7, "optimiser": "adam"}, {"batch_size": 200, "optimiser": "adagrad"}):
    ex3lib.train(ex3lib.MLP((784, 13, 7, 10), seed=0), small, epochs=1, learning_rate=0.01,
                 log_every=100, progress=False, **kw)
print("ok")
"""


def test_kernels_stay_inside_their_arrays(tmp_path):
    # Numba does not check indices unless asked; a write past an array's end
    # corrupts memory silently.  Recompile the kernels with bounds checks (in
    # a scratch cache) and run every path, with batches that use all pixels.
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", BOUNDS_SCRIPT], env=env, cwd=Path(__file__).parent,
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("kwargs, exc, message", [
    ({"layers": 5}, TypeError, r"layers must be a sequence of layer widths .* got 5 \(int\)"),
    ({"layers": "784,10"}, TypeError, r"layers must be a sequence of layer widths"),
    ({"layers": None}, TypeError, r"layers must be a sequence of layer widths"),
    ({"dtype": "float16"}, TypeError, "dtype must be float64 or float32, got float16"),
    ({"dtype": "no-such-type"}, TypeError, "dtype must be float64 or float32, got 'no-such-type'"),
    ({"seed": 1.5}, TypeError, "seed must be an integer"),
])
def test_network_refusals_name_the_parameter(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        MLP(**kwargs)


def test_mlp_of_one_int_names_layers():
    # The example: MLP(5) said "'int' object is not iterable".
    with pytest.raises(TypeError, match=r"layers must be a sequence of layer widths from input to output, "
                                        r"e\.g\. \(784, 300, 100, 100, 10\); got 5"):
        MLP(5)


@pytest.mark.parametrize("call", [
    lambda net, x: net.loss_and_grad(x, None),
    lambda net, x: net.evaluate(x, None),
    lambda net, x: net.accuracy(x, None),
], ids=["loss_and_grad", "evaluate", "accuracy"])
def test_labels_are_required_where_they_give_the_result_its_meaning(small, call):
    # loss_and_grad(x, None) used to score every sample against label 0.
    with pytest.raises(TypeError, match=r"y must be the integer labels of x.*got None"):
        call(MLP((784, 8, 10)), small.x_train[:5])


def test_predict_needs_no_labels(small):
    net = MLP((784, 8, 10), seed=1)
    assert np.array_equal(net.predict(small.x_test), net.evaluate(small.x_test, small.y_test)[2])


@pytest.mark.parametrize("chunk, exc, message", [
    (0, ValueError, "chunk must be an integer >= 1, got 0"),
    (-5, ValueError, "chunk must be an integer >= 1"),
    (2.5, TypeError, "chunk must be an integer"),
])
def test_evaluate_chunk_is_checked(small, chunk, exc, message):
    with pytest.raises(exc, match=message):
        MLP((784, 8, 10)).evaluate(small.x_test, small.y_test, chunk=chunk)


def test_evaluate_sparse_takes_sparse_data(small):
    net = MLP((784, 8, 10))
    with pytest.raises(TypeError, match="data must be an ex3lib.network.SparseData"):
        net.evaluate_sparse(small.x_test)
    assert net.evaluate_sparse(net.sparse(small.x_test, small.y_test), chunk=7)[1] == net.accuracy(
        small.x_test, small.y_test)


def test_unscaled_pixels_are_refused_or_warned_about(small):
    net = MLP((784, 8, 10))
    with pytest.raises(ValueError, match=r"x holds integer pixels from 0 to \d+; .*divide them by 255"):
        net.evaluate((small.x_test * 255).astype(np.uint8), small.y_test)
    with pytest.warns(UserWarning, match=r"x has values from 0 to .*outside \[0, 1\].*divide them by 255"):
        net.loss_and_grad(small.x_train[:5] * 255, small.y_train[:5])


def _mean_block_union(data, order):
    """Mean number of inputs a forward tile's block of FWD_BLOCK consecutive samples of ``order`` uses."""
    on = np.zeros((data.y.shape[0], 784), bool)
    for r in range(data.y.shape[0]):
        on[r, data.indices[data.indptr[r]:data.indptr[r + 1]]] = True
    n = order.shape[0] // kernels.FWD_BLOCK * kernels.FWD_BLOCK
    return on[order[:n]].reshape(-1, kernels.FWD_BLOCK, 784).any(axis=1).sum(axis=1).mean()


def test_block_order_goes_by_label_and_puts_look_alike_images_side_by_side(mnist):
    data = MLP().sparse(mnist.x_test[:3000], mnist.y_test[:3000])
    order = block_order(data)
    assert order.dtype == np.int64 and np.array_equal(np.sort(order), np.arange(3000))
    assert np.all(np.diff(data.y[order]) >= 0)
    natural = _mean_block_union(data, np.arange(3000))
    by_label = _mean_block_union(data, np.argsort(data.y, kind="stable"))
    chained = _mean_block_union(data, order)
    # On MNIST's test set: 318, 263 and 216 pixels.
    assert chained < 0.9 * by_label < 0.9 * natural


def test_block_order_chains_a_label_in_groups_and_takes_any_data(small, monkeypatch):
    monkeypatch.setattr(network, "ORDER_GROUP", 7)
    data = MLP((784, 8, 10)).sparse(small.x_test, small.y_test)
    order = block_order(data)
    assert np.array_equal(np.sort(order), np.arange(small.y_test.shape[0]))
    assert np.all(np.diff(data.y[order]) >= 0)
    empty = MLP((784, 8, 10)).sparse(np.zeros((3, 784)), np.array([2, 0, 2]))
    assert np.array_equal(block_order(empty), [1, 0, 2])


@pytest.mark.parametrize("dtype, bias", [("float64", False), ("float32", True)])
def test_evaluation_gives_the_same_bits_in_any_order(mnist, dtype, bias):
    net = MLP(seed=4, dtype=dtype, bias=bias)
    rng = np.random.default_rng(0)
    net.params[:] += 0.05 * rng.standard_normal(net.n_params).astype(dtype)
    data = net.sparse(mnist.x_test[:1203], mnist.y_test[:1203])
    n = data.y.shape[0]
    rows = np.arange(n, dtype=np.int64)
    results = []
    for order in (rows, block_order(data), rows[::-1].copy(), rng.permutation(n)):
        pred = np.full(n, -1, np.int64)
        loss, correct = kernels.evaluate(net.arrays(), net.workspace(500), data, rows, order, pred)
        results.append((loss, correct, pred))
    for loss, correct, pred in results[1:]:
        assert loss == results[0][0] and correct == results[0][1]
        assert np.array_equal(pred, results[0][2])
    # ...and they are the reference's, chunk by chunk in sample order.
    z = forward([w.astype(np.float64) for w in net.weights], mnist.x_test[:1203],
                [b.astype(np.float64) for b in net.biases] if bias else None)[-1]
    assert np.mean(results[0][2] == z.argmax(axis=1)) > (0.99 if dtype == "float32" else 1 - 1e-9)
    per_sample = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1) - z[np.arange(n), data.y]
    assert results[0][0] == pytest.approx(per_sample.sum(), rel=1e-4 if dtype == "float32" else 1e-12)
