"""probmod's shared foundation: the interfaces, errors, file IO, command-line and estimator conventions.

Every package of the distribution (``probcirc``, ``sparsecoding``,
``amortized``) stands on this one; it imports none of them.

Example:
    >>> import probmod
    >>> probmod.errors.EXIT_CODES[6]
    'the output exists (pass --force)'
"""

from . import cli, errors, estimator, io, progress
from .distribution import Conditional, Distribution, check_mask
from .errors import ProbmodError

__all__ = ["Distribution", "Conditional", "check_mask", "ProbmodError", "cli", "errors", "estimator", "io", "progress"]
