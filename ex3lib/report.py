"""The numbers the report published, for the chapters to set beside their own.

These are data from the report (``shared/seed``), typed once here and nowhere
else; everything the chapters compute comes from the library.
"""

# Table 2: SGD after 10 epochs, sequential order, one run each.
# (learning_rate, batch_size) -> (avg loss, test accuracy, seconds); loss None = nan.
TABLE2 = {
    (0.1, 1): (None, 0.098, 3533),
    (0.1, 10): (0.025, 0.977, 3268),
    (0.1, 100): (0.017, 0.976, 3268),
    (0.01, 1): (0.027, 0.977, 3557),
    (0.01, 10): (0.019, 0.976, 3338),
    (0.01, 100): (0.17, 0.950, 3301),
    (0.001, 1): (0.019, 0.978, 3553),
    (0.001, 10): (0.16, 0.952, 3332),
    (0.001, 100): (0.53, 0.872, 3288),
}

# Table 1: linear learning-rate decay (Eq. 5), eta_0 = 0.1 -> eta_N = 0.001, 10 epochs.
# (learning_rate, lr_final, batch_size) -> (avg loss, test accuracy)
TABLE1 = {
    (0.1, 0.001, 1): (2.303, 0.098),
    (0.1, 0.001, 10): (0.002, 0.983),
    (0.1, 0.001, 100): (0.031, 0.977),
}

# Section 2.2: analytical vs numerical gradients "differ by less than 3e-4 %
# (central difference) on average", h = 1e-8, one sample after the first epoch
# of eta = 0.1, m = 10.  Fig. 4's bars, read off the figure, as fractions.
GRADCHECK_H = 1e-8
GRADCHECK_MEAN_REL_ERROR = {"central": 3.0e-6, "forward": 7.5e-6, "backward": 7.8e-6}

# The report's wall-clock time per 10-epoch run of its C code (Table 2): 3,268-3,557 s.
SECONDS_PER_RUN = (3268, 3557)


def table2_row(learning_rate, batch_size):
    """The report's Table 2 row ``(loss, accuracy, seconds)`` for a setting, nan where it has none (its nan loss too)."""
    loss, acc, seconds = TABLE2.get((learning_rate, batch_size), (None, float("nan"), float("nan")))
    return float("nan") if loss is None else float(loss), float(acc), float(seconds)
