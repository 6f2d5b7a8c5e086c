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


def _runs():
    from synthetic import dead, seeds

    return (seeds(0.97, learning_rate=0.1, batch_size=10) + [dead(learning_rate=0.1, batch_size=1, seed=s)
                                                              for s in range(3)])


def test_curves_draws_each_group_in_both_panels():
    from ex3lib.plots import curves
    from synthetic import seeds

    a, b = seeds(0.97, learning_rate=0.1), seeds(0.95, learning_rate=0.01)
    fig = curves([(a, "a", "tab:red", None), (b, "b", "tab:blue", "--")], acc_ylim=(0.9, 1.0), legend="figure",
                 title="t")
    left, right = fig.axes
    assert left.get_yscale() == "log" and right.get_ylim() == (0.9, 1.0)
    assert [line.get_linestyle() for line in right.lines] == ["-", "--"]
    np.testing.assert_allclose(right.lines[0].get_ydata(), np.mean([h.test_accuracy for h in a], axis=0))
    assert len(fig.legends) == 1
    plt.close(fig)


def test_accuracy_grid_marks_stopped_runs():
    from ex3lib.plots import accuracy_grid

    fig = accuracy_grid(_runs(), [0.1], [1, 10])
    top_left = fig.axes[0]
    assert sum(line.get_marker() == "x" for line in top_left.lines) == 3  # three stopped seeds
    assert fig.axes[1].get_title() == "m = 10" and fig.axes[3].get_ylim()[0] == 0.85
    plt.close(fig)


@pytest.mark.parametrize("name", ["long_run", "overflow", "message", "accuracy_vs_ratio", "schedules", "by_batch_size",
                                  "accuracy", "effective_steps", "pixel_steps", "digits", "class_balance", "network",
                                  "gradcheck_bars", "rel_errors", "h_sweep", "combined"])
def test_every_figure_builds(name, small):
    import ex3lib
    from ex3lib import gradcheck, plots
    from synthetic import hist, seeds

    runs = seeds(0.97)
    long = [hist(np.concatenate([[0.1], np.linspace(0.95, 0.98, 40)]), seed=s) for s in range(2)]
    steps = [[[1.0 / (t + 1)] * 3] * 4 for t in range(3)]
    ada = hist([0.1, 0.9, 0.95], optimiser="adagrad", learning_rate=0.01,
               extra={"effective_step": steps, "first_layer_step_by_input": list(np.linspace(1, 2, 784))})
    activity = np.linspace(0, 1, 784)
    net = ex3lib.MLP((784, 8, 10), seed=0)
    x, y = small.x_train[0], int(small.y_train[0])
    check = gradcheck.gradcheck(net, x, y, h=1e-6)
    build = {
        "long_run": lambda: plots.long_run(long, 10, 20, "tab:red", "η = 0.1, m = 10"),
        "overflow": lambda: plots.overflow([90, 95, 99], [1.0, 10.0, 1e5], 100, "seed 0"),
        "message": lambda: plots.message("nothing to show"),
        "accuracy_vs_ratio": lambda: plots.accuracy_vs_ratio({(0.1, 10): np.array([0.97, 0.98]), (0.01, 1): np.array([0.97])}),
        "schedules": lambda: plots.schedules([(ex3lib.make_schedule("linear_decay", 0.1, lr_final=0.001, epochs=10),
                                               "decay", "tab:red", "-")], 10),
        "by_batch_size": lambda: plots.by_batch_size(lambda m: [(runs, "a", "tab:red", "--", 0.5)], [10, 100],
                                                     ylim=(0.9, 1.0), figsize=(8, 3))[0],
        "accuracy": lambda: plots.accuracy([(runs, "a", "tab:red", ":"), (long, "b", "tab:blue", None)]),
        "effective_steps": lambda: plots.effective_steps({"AdaGrad": [ada], "RMSProp": [ada]}, ["W1", "W2", "W3", "W4"]),
        "pixel_steps": lambda: plots.pixel_steps(ada, activity),
        "digits": lambda: plots.digits(small.x_train[:12], small.y_train[:12]),
        "class_balance": lambda: plots.class_balance(np.bincount(small.y_train, minlength=10),
                                                     np.bincount(small.y_test, minlength=10)),
        "network": lambda: plots.network(ex3lib.MLP()),
        "gradcheck_bars": lambda: plots.gradcheck_bars(gradcheck.summary(check, x), {m: 1e-5 for m in gradcheck.METHODS}, "t"),
        "rel_errors": lambda: plots.rel_errors(check, report={m: 1e-5 for m in gradcheck.METHODS}),
        "h_sweep": lambda: plots.h_sweep(gradcheck.h_sweep(net, x, y, hs=[1e-2, 1e-5, 1e-8]), 1e-8),
        "combined": lambda: plots.combined({10: [], 100: runs}, {10: runs, 100: runs}, [10, 100], 0.9, str),
    }
    fig = build[name]()
    assert fig.axes and all(ax.get_xlabel() or ax.get_ylabel() or ax.get_title() or not ax.axison for ax in fig.axes)
    plt.close(fig)


def test_schedule_label_and_style():
    from ex3lib.plots import schedule_label, schedule_style

    decay = {"schedule": "linear_decay", "learning_rate": 0.1, "lr_final": 0.001}
    assert schedule_label(decay) == "decay η = 0.1 → 0.001"
    assert schedule_style(decay, {None: ":", 0.001: "-"}) == ("tab:red", "-")
    assert schedule_style({"schedule": "constant", "learning_rate": 0.01, "lr_final": 0.01}, {None: ":"}) == ("tab:blue", ":")


def test_protocol_figures():
    from ex3lib import hessian, plots, protocol
    from synthetic import dead, hist, seeds

    tuning = {"SGD": [hist([0.1, a], learning_rate=lr, validation_size=10_000, extra={"validation_accuracy": [0.1, a],
                                                                               "validation_loss": [2.3, 0.1]})
                      for a, lr in ((0.95, 0.01), (0.97, 0.1))]}
    tuning["SGD"][0] = dead(learning_rate=0.01, validation_size=10_000,
                            extra={"validation_accuracy": [0.1, 0.098, 0.098], "validation_loss": [2.3, 2.3, 2.3]})
    fig = plots.lr_sensitivity({name: protocol.lr_sensitivity(hs) for name, hs in tuning.items()}, {"SGD": 0.1})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylim()[0] == 0.85
    crosses = [l for l in ax.lines if l.get_marker() == "x"]
    assert len(crosses) == 1 and crosses[0].get_ydata()[0] > 0.85, "a failed run is drawn at the bottom edge"
    assert not ax.patches, "no declared grid given, none shaded"
    plt.close(fig)
    fig = plots.lr_sensitivity({name: protocol.lr_sensitivity(hs) for name, hs in tuning.items()}, {"SGD": 0.1},
                               declared=(0.01, 0.03))
    (band,) = fig.axes[0].patches
    assert band.get_x() == pytest.approx(0.01) and band.get_x() + band.get_width() == pytest.approx(0.03)
    plt.close(fig)
    fig = plots.seed_strip({"SGD": seeds(0.97, 4), "Adam": seeds(0.98, 4, optimiser="adam")})
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["SGD", "Adam"]
    plt.close(fig)
    rows = [{"group": "equal η", "learning_rate": 0.01, "batch_size": m, "seed": s, "top_eigenvalue": float(m)}
            for m in (1, 100) for s in range(2)]
    fig = plots.sharpness(rows)
    assert fig.axes[0].get_title() == "equal η" and fig.axes[0].get_yscale() == "log"
    plt.close(fig)
    line = hessian.LineLosses(np.array([0.0, 1.0]), np.array([0.1, 0.2]), np.array([0.9, 0.8]))
    plt.close(plots.line_losses({"a → b": line}))
    runs = [hist(0.98, extra={"updates_at": [0, 3000, 6000] + [6000 + 3000 * k for k in range(1, 19)]})]
    fig = plots.against_updates([(runs, "decay", "tab:gray", "--")])
    assert fig.axes[0].lines[0].get_xdata()[-1] == 60000 and fig.axes[1].get_xlabel() == "updates"
    plt.close(fig)
