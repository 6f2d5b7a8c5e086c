"""ex3lib: a Numba-accelerated MLP on MNIST, its optimisers, schedules, training loop and gradient checks.

The library behind the ex3 book, which reproduces a coursework report on
gradient-based optimisation (a 784-300-100-100-10 ReLU/softmax network trained
with on-line and mini-batch SGD, learning-rate decay, momentum and AdaGrad).

>>> import ex3lib
>>> data = ex3lib.load_mnist()                                     # doctest: +SKIP
>>> net = ex3lib.MLP(seed=0)
>>> hist = ex3lib.train(net, data, learning_rate=0.1, batch_size=10, epochs=1)  # doctest: +SKIP
"""

from .data import MNIST, load_mnist
from .network import MLP, REPORT_LAYERS
from .optimisers import OPTIMISERS, Optimiser, OptState, make_optimiser
from .schedules import BATCH_SCHEDULES, SCHEDULES, BatchSchedule, Schedule, make_batch_schedule, make_schedule
from .fingerprint import source_fingerprint
from .params import chapter_parameters, check_parameters
from .runner import run_many
from .store import ResultsStore
from .training import History, RunConfig, run, train

__version__ = "0.1.0"

__all__ = [
    "MNIST", "load_mnist", "MLP", "REPORT_LAYERS", "OPTIMISERS", "Optimiser", "OptState",
    "make_optimiser", "SCHEDULES", "Schedule", "make_schedule", "BATCH_SCHEDULES", "BatchSchedule",
    "make_batch_schedule", "History", "RunConfig", "run",
    "train", "ResultsStore", "run_many", "source_fingerprint", "chapter_parameters", "check_parameters", "__version__",
]
