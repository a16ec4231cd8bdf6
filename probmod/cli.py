"""Command-line conventions shared by ``probcirc``, ``sparsecoding`` and ``amortized``.

Every command line in probmod

* builds its parser with :func:`make_parser`, so ``--help`` shows every
  option's default and ends with the one exit-code table
  (:data:`probmod.errors.EXIT_CODES`);
* spells the shared options the same way, through :func:`add_output`,
  :func:`add_force`, :func:`add_quiet`, :func:`add_threads` and
  :func:`add_seed`: ``-o/--output``, ``--force`` (old spellings stay as
  hidden aliases), ``-q/--quiet``, ``--threads`` and ``--seed``;
* runs through :func:`run`, which turns every error into one line
  ``PROG: error: MESSAGE`` on stderr and the exit status of its kind, and
  turns SIGTERM into a clean exit so no temporary file is left behind.

Example:
    >>> p = make_parser("demo", "A demo tool.")
    >>> add_output(p); add_force(p); add_quiet(p)
    >>> args = p.parse_args(["-o", "x.h5", "--overwrite", "-q"])
    >>> args.output, args.force, args.quiet
    ('x.h5', True, True)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

from .errors import ProbmodError, exit_code, exit_code_table

__all__ = [
    "make_parser",
    "add_output",
    "add_force",
    "add_quiet",
    "add_threads",
    "add_seed",
    "set_threads",
    "run",
    "DEBUG_ENV",
    "HIDDEN_ALIASES",
    "subparser",
    "int_at_least",
    "add_common",
]

#: old spellings accepted for compatibility but not shown in ``--help``
HIDDEN_ALIASES = frozenset({"--out", "--overwrite", "--no-progress"})
#: set to 1 to get a traceback instead of the one-line message for internal errors
DEBUG_ENV = "PROBMOD_DEBUG"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, keeps the epilog's table as written."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if o not in HIDDEN_ALIASES]
        if shown == action.option_strings:
            return super()._format_action_invocation(action)
        visible = argparse.Action(
            shown,
            action.dest,
            action.nargs,
            action.const,
            action.default,
            action.type,  # type: ignore[arg-type]  # typeshed's Action.type is wider than its __init__ accepts
            action.choices,
            action.required,
            action.help,
            action.metavar,
        )
        return super()._format_action_invocation(visible)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if hidden or "%(default)" in text or "default" in text:
            return text
        return super()._get_help_string(action)


def make_parser(prog: str, description: str, **kwargs) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with probmod's help format and the exit-code table as its epilog."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=_Formatter,
        epilog=kwargs.pop("epilog", exit_code_table()),
        **kwargs,
    )


def subparser(sub, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser with the same format and epilog as :func:`make_parser`."""
    return sub.add_parser(
        name,
        help=help,
        description=kwargs.pop("description", help),
        formatter_class=_Formatter,
        epilog=kwargs.pop("epilog", exit_code_table()),
        **kwargs,
    )


def add_output(p: argparse.ArgumentParser, help: str = "output file", required: bool = True, **kwargs) -> None:
    """``-o/--output`` (hidden alias ``--out``)."""
    p.add_argument("-o", "--output", "--out", dest="output", required=required, help=help, **kwargs)


def add_force(p: argparse.ArgumentParser, help: str = "replace existing output", target=None) -> None:
    """``--force`` (hidden alias ``--overwrite``)."""
    (target or p).add_argument("--force", "--overwrite", dest="force", action="store_true", help=help)


def add_quiet(p: argparse.ArgumentParser) -> None:
    """``-q/--quiet`` (hidden alias ``--no-progress``)."""
    p.add_argument(
        "-q", "--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bar or progress lines"
    )


def add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: CPU threads for torch, BLAS and numba (default: the libraries' own)."""
    p.add_argument("--threads", type=int_at_least(1), default=None, help="CPU threads (default: all cores)")


def add_seed(p: argparse.ArgumentParser, default: int | None = 0) -> None:
    """``--seed``: the seed of every random draw the command makes."""
    p.add_argument("--seed", type=int, default=default, help="random seed")


def add_common(p: argparse.ArgumentParser, output_help: str, seed: bool = True) -> None:
    """The flags of a command that computes and writes one output: -o, --force, -q, --threads (and --seed)."""
    add_output(p, help=output_help)
    add_force(p)
    add_quiet(p)
    add_threads(p)
    if seed:
        add_seed(p)


def set_threads(n: int | None) -> None:
    """Limit torch, BLAS/OpenMP and numba to ``n`` threads (no-op for None)."""
    if n is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    try:
        import numba

        # numba.config fills its attributes at import, so the stub does not know them.
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - numba is a dependency, but keep the CLI usable without it
        pass
    # Last: numba's first set_num_threads starts its OpenMP layer, which put torch back to every core.
    torch.set_num_threads(n)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for integers of at least ``minimum``, with a one-line message otherwise.

    Example:
        >>> int_at_least(1)("3")
        3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise SystemExit(128 + signum)


def run(
    prog: str,
    command: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv``, call ``command(args)`` and map any error to one line and its exit status.

    ``ProbmodError`` subclasses keep their own code; builtin ``OSError``,
    ``MemoryError`` and ``KeyboardInterrupt`` get theirs from
    :func:`probmod.errors.exit_code`; anything else is an internal error
    (exit 1), with a traceback only when ``PROBMOD_DEBUG=1``.
    """
    args = parser.parse_args(argv)
    name = " ".join(filter(None, [prog, getattr(args, "command", None)]))
    previous = signal.signal(signal.SIGTERM, _sigterm) if _main_thread() else None
    try:
        return int(command(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except ProbmodError as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except (OSError, MemoryError) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        text = "out of memory" if isinstance(err, MemoryError) else _os_message(err)
        print(f"{name}: error: {text}", file=sys.stderr)
        return exit_code(err)
    except Exception as err:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get(DEBUG_ENV):
            raise
        print(
            f"{name}: internal error: {type(err).__name__}: {err} (set {DEBUG_ENV}=1 for a traceback)", file=sys.stderr
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _os_message(err: OSError) -> str:
    if err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
