"""The three command lines speak one dialect: shared flags, help with defaults and one exit-code table."""

from __future__ import annotations

import contextlib
import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from probmod.errors import exit_code_table

BIN = Path(sys.executable).parent
#: console script -> (subcommands that compute, that write a file, that draw random numbers)
TOOLS = {
    "probcirc": (["train-codec", "compress", "decompress"], ["train-codec", "compress", "decompress"], ["train-codec"]),
    "sparsecoding": (["train", "data patches"], ["train", "data patches"], ["train", "data patches"]),
    "amortized": (["train", "evaluate"], ["train"], ["train", "evaluate"]),
}


def _help(tool: str, *argv: str) -> str:
    """``TOOL ARGV --help`` in-process (the console scripts themselves are checked once, below)."""
    main = importlib.import_module(f"{tool}.cli").main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_console_script_is_installed(tool):
    done = subprocess.run([str(BIN / tool), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and exit_code_table() in done.stdout, done.stderr


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_ends_with_the_exit_code_table_and_names_real_commands(tool):
    text = _help(tool)
    assert exit_code_table() in text
    if tool == "amortized":
        assert "filter" not in text  # there is no such command


@pytest.mark.parametrize(("tool", "command"), [(t, c) for t, (computing, *_) in TOOLS.items() for c in computing])
def test_computing_commands_share_flags(tool, command):
    text = _help(tool, *command.split())
    for flag in ("-q, --quiet", "--threads"):
        assert flag in text, f"{tool} {command} lacks {flag}"
    assert exit_code_table() in text


@pytest.mark.parametrize(("tool", "command"), [(t, c) for t, (*_, seeded) in TOOLS.items() for c in seeded])
def test_random_commands_take_a_seed(tool, command):
    assert "--seed SEED" in _help(tool, *command.split())


@pytest.mark.parametrize(("tool", "command"), [(t, c) for t, (_, writing, _) in TOOLS.items() for c in writing])
def test_writing_commands_share_output_flags(tool, command):
    text = _help(tool, *command.split())
    assert "-o OUTPUT, --output OUTPUT" in text
    assert "--force" in text
    for hidden in ("--overwrite", "--no-progress"):
        assert hidden not in text


def test_probcirc_subpackages_load_on_first_use():
    done = subprocess.run(
        [sys.executable, "-c", "import probcirc; print(probcirc.structures.HCLT.__name__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.stdout.strip() == "HCLT", done.stderr
