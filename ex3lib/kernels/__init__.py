"""Compiled kernels of ex3lib, one file per stage of the computation.

=========================  ===================================================================
``target.py``              which register tiles to compile: for 32 vector registers or for 16
``simd.py``                an 8-lane SIMD vector type for Numba (loads, stores, FMA, reductions)
``tiles.py``               register tiles of a layer's three matrix products
``forward.py``             forward pass and loss of a batch (report Eq. 1-3)
``backward.py``            back-propagation: weight gradients and the error sent back
``updates.py``             every update rule, once, and its loops over the flat parameters
``loop.py``                a logging window of mini-batches in one call (report Algorithm 1)
``evaluation.py``          loss, accuracy and predictions; one batch's loss and gradient
``finite_differences.py``  losses with each weight moved by ``h`` (report §2.2)
=========================  ===================================================================

Each file opens with the equation it computes and the function of
:mod:`ex3lib.reference` it must match. The Python modules (``network``,
``optimisers``, ``training``, ``gradcheck``) validate arguments, lay out memory
in named tuples and call in here; everything runs serially, so a seeded run is
bit-for-bit reproducible (parallelism is across runs, in processes).

Numba's on-disk cache (``cache=True``) checks only the file that defines a
kernel: a kernel that inlines or calls a helper from another file would keep
running stale machine code after the helper changed. So, before any kernel
file is imported, ``numba.config.CACHE_DIR`` points at a folder named by the
fingerprint of every file of this package and of the tile width
(:func:`kernel_fingerprint`, :mod:`~ex3lib.kernels.target`): an edit
to any of them compiles every kernel afresh, and an unchanged package reuses
its cache. The folder lies in ``$NUMBA_CACHE_DIR`` if that is set, else in
this package's ``__pycache__`` (else the user cache folder, if the package is
read-only).
"""

import hashlib
import shutil
import tempfile
import warnings
from pathlib import Path

import numba

from .target import WIDE_TILES

_HERE = Path(__file__).resolve().parent


def kernel_fingerprint() -> str:
    """The sha256 of every ``*.py`` file of this package (names and contents), Numba's version and the tile width."""
    h = hashlib.sha256()
    for path in sorted(_HERE.glob("*.py")):
        for part in (path.name.encode(), path.read_bytes()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    h.update(numba.__version__.encode())
    h.update(b"wide tiles" if WIDE_TILES else b"narrow tiles")
    return h.hexdigest()


#: Cache folders of earlier versions of the kernels kept beside the current one.
KEEP_OLD_CACHES = 3


def cache_dir() -> Path | None:
    """The folder the kernels' compiled code is cached in (None: none of the candidates is writable).

    Creating it removes all but the ``KEEP_OLD_CACHES`` most recently used
    folders of other kernel versions beside it, so editing the kernels does
    not fill the disk with stale machine code.
    """
    import platformdirs

    name = f"ex3-kernels-{kernel_fingerprint()[:20]}"
    bases = [Path(numba.config.CACHE_DIR)] if numba.config.CACHE_DIR else []
    bases += [_HERE / "__pycache__", Path(platformdirs.user_cache_dir("ex3")) / "numba"]
    for base in bases:
        folder = base / name
        try:
            fresh = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            continue
        if fresh:
            _prune(base, keep=folder)
        return folder
    return None


def _prune(base: Path, keep: Path) -> None:
    others = [p for p in base.glob("ex3-kernels-*") if p != keep and p.is_dir()]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[KEEP_OLD_CACHES:]:
        shutil.rmtree(old, ignore_errors=True)


def _use_cache_dir() -> str:
    """Point Numba's cache at :func:`cache_dir`; returns the setting to restore."""
    folder = cache_dir()
    if folder is None:
        warnings.warn("no writable folder for ex3lib's compiled kernels (tried $NUMBA_CACHE_DIR, the "
                      "package's __pycache__ and the user cache): they are compiled in every process",
                      stacklevel=3)
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = str(folder) if folder else saved
    return saved


# A kernel's cache locator is chosen when its decorator runs, so the folder
# only needs to be set while the kernel files are imported.
_saved_cache_dir = _use_cache_dir()
try:
    from .evaluation import evaluate, loss_and_grad
    from .finite_differences import perturbed_losses, sample_loss
    from .loop import train_window
    from .simd import LANES
    from .tiles import FWD_BLOCK, GRAD_BLOCK
    from .updates import (
        ADAGRAD, ADAM, LAZY_ROWS, MOMENTUM, NESTEROV, RMSPROP, RULE, SGD, SPARSE_SAFE, Stepping,
        bias_corrections, step_rows,
    )
finally:
    numba.config.CACHE_DIR = _saved_cache_dir

__all__ = ["ADAGRAD", "ADAM", "FWD_BLOCK", "GRAD_BLOCK", "LANES", "LAZY_ROWS", "MOMENTUM", "NESTEROV",
           "RMSPROP", "RULE", "SGD", "SPARSE_SAFE", "Stepping", "bias_corrections", "cache_dir", "evaluate",
           "kernel_fingerprint", "loss_and_grad", "perturbed_losses", "sample_loss", "step_rows", "train_window"]
