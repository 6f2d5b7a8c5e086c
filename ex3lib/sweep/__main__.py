"""``python -m ex3lib.sweep``: the sweep command line (:func:`ex3lib.sweep.cli.main`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
