"""``python -m probcirc``: the ``probcirc`` command line, also what ``torchrun -m probcirc train`` runs on every rank.

Example:
    >>> from probcirc.cli import build_parser
    >>> build_parser().parse_args(["train", "x.npy", "-o", "m.h5"]).dist_timeout
    300.0
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
