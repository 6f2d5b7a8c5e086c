import numpy as np
import pytest

import ex3lib


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (cached after the first fetch)."""
    return ex3lib.load_mnist()


class Small:
    """A small synthetic data set shaped like MNIST: sparse non-negative pixels, 10 classes."""

    def __init__(self, n_train=200, n_test=100, seed=0):
        rng = np.random.default_rng(seed)
        def make(n):
            x = rng.random((n, 784)) * (rng.random((n, 784)) < 0.2)
            return x, rng.integers(0, 10, n)
        self.x_train, self.y_train = make(n_train)
        self.x_test, self.y_test = make(n_test)


@pytest.fixture
def small():
    return Small()
