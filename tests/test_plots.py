import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ex3lib import MLP, train  # noqa: E402
from ex3lib.plots import colour_for, loss_and_accuracy, plot_metric  # noqa: E402


def test_loss_and_accuracy_draws_mean_and_spread(small):
    hists = [train(MLP((784, 8, 10), seed=s), small, train_size=100, log_every=50, epochs=1,
                   progress=False) for s in range(3)]
    fig = loss_and_accuracy(hists, title="t")
    left, right = fig.axes
    x, y = left.lines[0].get_data()
    np.testing.assert_allclose(x, [0, 0.5, 1])
    np.testing.assert_allclose(y, np.mean([h.loss for h in hists], axis=0))
    assert len(left.collections) == 1 and right.get_ylabel() == "test accuracy"
    plt.close(fig)


def test_plot_metric_needs_histories():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="histories"):
        plot_metric(ax, [])
    plt.close(fig)


def test_colours_are_stable():
    assert colour_for(learning_rate=0.1) == "tab:red"
    assert colour_for(method="AdaGrad η=0.01") == colour_for(method="AdaGrad")
