"""One error hierarchy for every probmod package, and the exit code each kind maps to.

Library code raises these; the command lines turn them into one line on
stderr and the exit status in :data:`EXIT_CODES`. Each class also derives from
the builtin exception a Python user would catch (``ValueError``,
``FileExistsError``, ...), so ``except ValueError`` keeps working.

Example:
    >>> from probmod.errors import FormatError, ProbmodError, exit_code
    >>> err = FormatError("model.h5: truncated")
    >>> isinstance(err, ProbmodError), isinstance(err, ValueError), exit_code(err)
    (True, True, 4)
"""

from __future__ import annotations

__all__ = [
    "ProbmodError",
    "UsageError",
    "InputError",
    "MissingInputError",
    "FormatError",
    "ModelMismatchError",
    "OutputExistsError",
    "LimitError",
    "NumericalError",
    "OutputError",
    "EXIT_CODES",
    "CHECK_FAILED",
    "exit_code",
    "exit_code_table",
]


class ProbmodError(Exception):
    """Base of every error probmod raises on purpose; ``exit_code`` is what a command line returns."""

    exit_code = 1


class UsageError(ProbmodError, ValueError):
    """A bad option or argument value: wrong shape, dtype, range or combination."""

    exit_code = 2


class InputError(ProbmodError, OSError):
    """An input cannot be read: missing, unreadable, not a regular file, or not the expected kind."""

    exit_code = 3


class MissingInputError(InputError, FileNotFoundError):
    """An input file or folder does not exist."""


class FormatError(ProbmodError, ValueError):
    """A file is not a probmod file, is truncated or corrupt, or is of another version or kind."""

    exit_code = 4


class ModelMismatchError(FormatError):
    """A well-formed model that does not match the data or file it is used with."""

    exit_code = 5


class OutputExistsError(ProbmodError, FileExistsError):
    """The output exists and ``--force`` (``overwrite=True``) was not given."""

    exit_code = 6


class LimitError(ProbmodError, ValueError):
    """A declared size exceeds a documented limit (or memory ran out); the limit can be raised by a flag."""

    exit_code = 7


class NumericalError(ProbmodError, ArithmeticError):
    """Computation produced non-finite values (NaN or infinity) where finite ones are required."""

    exit_code = 8


class OutputError(ProbmodError, OSError):
    """An output cannot be written: unwritable folder, disk full, or a path that is not a folder."""

    exit_code = 9


#: exit status -> meaning; the one table every command line documents in ``--help``
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "internal error (a bug: please report it)",
    2: "usage: a bad option or argument",
    3: "an input cannot be read",
    4: "a corrupt, truncated or foreign file",
    5: "a model that does not match the data or file",
    6: "the output exists (pass --force)",
    7: "a size limit was exceeded or memory ran out",
    8: "non-finite values (NaN or infinity) in the computation",
    9: "an output cannot be written",
    10: "a check ran and did not pass (its result is printed)",
    130: "interrupted",
}


#: the status of a command that checks something and finds it wanting (not an error: the result is printed)
CHECK_FAILED = 10


def exit_code(err: BaseException) -> int:
    """The exit status for ``err``: its own for probmod errors, a best match for builtin ones."""
    if isinstance(err, ProbmodError):
        return err.exit_code
    if isinstance(err, KeyboardInterrupt):
        return 130
    if isinstance(err, MemoryError):
        return LimitError.exit_code
    if isinstance(err, FileExistsError):
        return OutputExistsError.exit_code
    if isinstance(err, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)):
        return InputError.exit_code
    if isinstance(err, OSError):
        return OutputError.exit_code if getattr(err, "errno", None) in _WRITE_ERRNOS else InputError.exit_code
    return 1


def exit_code_table() -> str:
    """The exit-code table as text, for the epilog of every ``--help``."""
    rows = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items())
    return "exit codes:\n" + rows


def _write_errnos() -> frozenset[int]:
    import errno

    return frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG") if hasattr(errno, n))


_WRITE_ERRNOS = _write_errnos()
