"""Small helpers for the book's chapters: glue a dict of results, say why a cell has nothing to show."""

from __future__ import annotations

_GLUABLE = (str, int, float)


def glue_all(numbers, prefix="", keys=None) -> None:
    """Glue each number or text of ``numbers`` (myst-nb ``glue``, not displayed) as ``prefix + key``.

    ``keys`` chooses which entries (all by default); entries that are not a
    number or a text (arrays, lists, dicts, booleans, NumPy scalars) are left out.  Values are glued as
    they are, so their type decides how the page prints them.

    Examples
    --------
    >>> glue_all({"acc": 0.98, "n": 3}, prefix="sgd_")                 # doctest: +SKIP
    """
    from myst_nb import glue

    for key in numbers if keys is None else keys:
        value = numbers[key]
        if type(value) in _GLUABLE:
            glue(prefix + key, value, display=False)


def skip(what, why) -> None:
    """Print the one line a cell shows when this run of the chapter lacks the runs it needs."""
    print(f"{what} skipped: {why}")


def glue_figure(name, fig) -> None:
    """Glue a matplotlib figure under ``name`` (not displayed) and close it."""
    import matplotlib.pyplot as plt
    from myst_nb import glue

    glue(name, fig, display=False)
    plt.close(fig)


def train_subset(train_size, n_train=60_000):
    """The ``train_size`` of a RunConfig for a chapter's parameter: None (all images) from ``n_train`` on."""
    return None if train_size >= n_train else train_size


def report_scale(epochs, train_size) -> bool:
    """Whether a chapter runs at the report's scale (10 epochs on all 60,000 images), where its checks of the
    report's numbers apply."""
    return epochs == 10 and train_size >= 60_000



def set_up(train_size, epochs):
    """A chapter's first steps once its parameters are checked: MNIST, and the scale it runs at.

    Silences numpy's overflow warnings (diverged runs end with infinite or
    nan losses, whose summaries should show nan, not warn) and returns
    ``(data, n_train, full_scale)``: the MNIST data, the ``train_size`` of a
    RunConfig for the chapter's ``train_size`` (:func:`train_subset`) and
    whether it runs at the report's scale (:func:`report_scale`).

    Examples
    --------
    >>> ex3lib.chapter_parameters(globals(), "adaptive")               # doctest: +SKIP
    >>> data, n_train, full_scale = set_up(train_size, epochs)         # doctest: +SKIP
    """
    import numpy as np

    from .data import load_mnist

    np.seterr(over="ignore", invalid="ignore")
    return load_mnist(), train_subset(train_size), report_scale(epochs, train_size)
