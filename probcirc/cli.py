"""The ``probcirc`` console script: a thin dispatcher over subcommands.

A module joins by exposing ``register(subparsers)``, which adds its
subcommands (built with :func:`probmod.cli.subparser`) and sets ``func``
(``args -> exit code``) on each parser. Errors are :mod:`probmod.errors`
classes; :func:`probmod.cli.run` prints them as one line and returns their
exit status (the table at the end of every ``--help``); a traceback is
printed only for internal errors with ``PROBMOD_DEBUG=1``.

Example:
    >>> build_parser().parse_args(["info", "x.pcz"]).command
    'info'
"""

from __future__ import annotations

import argparse
import sys

from probmod.cli import make_parser, run
from probmod.errors import ProbmodError

#: modules whose ``register(subparsers)`` adds subcommands
SUBCOMMAND_MODULES = ["probcirc.compress.cli", "probcirc.density.cli", "probcirc.inpaint.cli"]

#: kept importable for code written against the old name; raise :mod:`probmod.errors` classes instead
CliError = ProbmodError


def build_parser() -> argparse.ArgumentParser:
    """The ``probcirc`` parser with every registered subcommand."""
    import importlib

    parser = make_parser("probcirc", "Probabilistic circuits from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``probcirc`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()

    def dispatch(args: argparse.Namespace) -> int:
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)

    return run("probcirc", dispatch, parser, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
