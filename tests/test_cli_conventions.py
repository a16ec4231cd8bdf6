"""The three command lines speak one dialect: shared flags, help with defaults and one exit-code table."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
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


THP_MODES = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(
    not THP_MODES.exists() or "[never]" in THP_MODES.read_text(), reason="no transparent huge pages here"
)
def test_every_command_line_asks_for_huge_pages_before_torch_allocates():
    """Torch reads THP_MEM_ALLOC_ENABLE at its first CPU allocation: importing every command line
    must allocate nothing, so that run() still gets there first. Measured by the page faults of
    filling 64 MiB (16,384 pages of 4 KiB, or 32 huge ones); a user's own setting wins."""
    script = (
        "import importlib, resource, torch\n"
        "import probcirc.cli, sparsecoding.cli, amortized.cli\n"
        "for name in probcirc.cli.SUBCOMMAND_MODULES: importlib.import_module(name)\n"
        "from probmod.cli import use_huge_pages\n"
        "use_huge_pages()\n"
        "t = torch.empty(64 << 20, dtype=torch.uint8)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "t.fill_(1)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    faults = {}
    for setting in (None, "0"):
        run_env = env if setting is None else {**env, "THP_MEM_ALLOC_ENABLE": setting}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=run_env)
        assert done.returncode == 0, done.stderr
        faults[setting] = int(done.stdout)
    assert faults[None] < 4096 < faults["0"], faults


def test_run_asks_for_huge_pages_first(monkeypatch):
    from probmod.cli import make_parser, run

    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE", raising=False)
    seen = []
    assert (
        run("demo", lambda args: seen.append(os.environ.get("THP_MEM_ALLOC_ENABLE")), make_parser("demo", "x"), []) == 0
    )
    assert seen == ["1"]
