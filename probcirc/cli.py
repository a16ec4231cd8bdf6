"""The ``probcirc`` console script: a thin dispatcher over subcommands.

A module joins by exposing ``register(subparsers)``, which adds its
subcommands and sets ``func`` (``args -> exit code``) on each parser. Errors
raised as :class:`CliError` end the program with their one-line message and
exit code; nothing prints a traceback unless ``PROBCIRC_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys

#: modules whose ``register(subparsers)`` adds subcommands
SUBCOMMAND_MODULES = ["probcirc.compress.cli"]


class CliError(Exception):
    """A user-facing failure: ``str(err)`` is the one-line message, ``code`` the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="probcirc", description="Probabilistic circuits from the command line.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as err:
        print(f"probcirc {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"probcirc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the promise is one line, never a traceback
        if os.environ.get("PROBCIRC_DEBUG"):
            raise
        print(f"probcirc {args.command}: internal error: {type(err).__name__}: {err} (set PROBCIRC_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
