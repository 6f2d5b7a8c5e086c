"""Which register tiles the kernels are compiled with: sized for 32 vector registers, or for 16.

The register tiles of :mod:`ex3lib.kernels.tiles` keep a block of sums in
vector registers while they loop. Sized for AVX-512's 32 registers (the forward
tile's 20 eight-lane accumulators, the gradient tile's 16, the pair tile's 16),
they need twice that many of AVX2's 16 half-width registers, and LLVM spills
the rest to the stack: on an AMD EPYC with AVX2 only, plain SGD at m = 10 and
100 ran 1.4-1.8x slower with them than with tiles of 8 columns (README,
"Speed"). So
the tiles come in two widths, with the same sums in the same order (every
result is the same bits either way; tested):

* ``wide``: 32 vector registers (AVX-512F), the forward tile 32 columns wide,
  the gradient tile 16, the error sent back for two samples at once;
* ``narrow``: everything else, 8 columns (one eight-lane vector) at a time,
  and the error sent back one sample at a time over the units it used.

The choice follows the CPU features Numba compiles for (``NUMBA_CPU_FEATURES``
if set, else the host's); ``EX3_TILES=wide`` or ``narrow`` forces one. It is
part of the kernels' cache fingerprint (:func:`ex3lib.kernels.kernel_fingerprint`),
so the two never share compiled code. This file defines no kernel.
"""

import os

from numba.core import config
from numba.core.codegen import get_host_cpu_features

TILES_ENV_VAR = "EX3_TILES"
TILE_CHOICES = ("auto", "wide", "narrow")


def compile_features() -> list[str]:
    """The CPU features Numba compiles for, e.g. ``["+avx2", "-avx512f", ...]``."""
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    return [f.strip() for f in features.split(",") if f.strip()]


def tile_width() -> str:
    """``"wide"`` or ``"narrow"``: ``$EX3_TILES`` if it names one, else by the compile target's registers.

    Raises ``ValueError`` naming the allowed values for any other setting.
    """
    choice = os.environ.get(TILES_ENV_VAR, "auto").strip().lower() or "auto"
    if choice not in TILE_CHOICES:
        raise ValueError(f"{TILES_ENV_VAR}={os.environ[TILES_ENV_VAR]!r} is not one of {', '.join(TILE_CHOICES)}")
    if choice != "auto":
        return choice
    return "wide" if "+avx512f" in compile_features() else "narrow"


#: Whether the tiles are sized for 32 vector registers (read once, when the kernels are imported).
WIDE_TILES = tile_width() == "wide"
