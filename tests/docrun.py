"""Run the ```python and ```bash blocks of a Markdown file as a reader would, in document order.

A reader pastes a guide's Python blocks into one session and types its bash blocks into one
shell, in one folder; so a file's blocks share one namespace and one working directory (a fresh
temporary folder). A block that cannot run on a fresh clone in a test's time (it needs MNIST, a GPU
or minutes of training) says so on the line just above its fence::

    <!-- doc-run: skip: needs the MNIST files; minutes of training -->

The marker is an HTML comment, so neither GitHub nor mkdocs shows it; the reason is required.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
_FENCE = re.compile(r"^```(python|bash)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
_SKIP = re.compile(r"<!--\s*doc-run:\s*skip:\s*(?P<reason>\S.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, code, 1-based line of the fence, and skip reason if marked."""

    path: Path
    lang: str
    code: str
    line: int
    skip: str | None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} ({self.lang})"


def blocks(path: Path) -> list[Block]:
    """Every ```python and ```bash block of ``path``, with the skip marker read from the line above."""
    text = path.read_text(encoding="utf-8")
    found = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        found.append(Block(path, m.group(1), m.group(2), line, skip.group("reason") if skip else None))
    return found


def environment() -> dict[str, str]:
    """The environment of a fresh shell after `make`: the venv first on PATH, no display, no cached data."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PROBMOD_TEST"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["MPLBACKEND"] = "Agg"
    env.pop("PROBMOD_DATA", None)  # the data helper then looks beside the checkout, as on a fresh clone
    return env


def run_bash(block: Block, cwd: Path, timeout: float = 300) -> None:
    """Run a bash block with -e and pipefail; fail with its output when any command fails."""
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", block.code],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{block.where} exited {proc.returncode}\n--- block ---\n{block.code}"
            f"--- stdout ---\n{proc.stdout[-4000:]}--- stderr ---\n{proc.stderr[-4000:]}"
        )


def run_python(block: Block, namespace: dict) -> None:
    """Execute a Python block in ``namespace`` (shared by the file's blocks), in the current folder."""
    # Line numbers in a traceback then point into the Markdown file itself.
    code = "\n" * block.line + block.code
    exec(compile(code, str(block.path), "exec"), namespace)


def run_file(path: Path, cwd: Path) -> list[Block]:
    """Run every unmarked block of ``path`` in order, in ``cwd``; return the blocks that ran.

    Fails when the file has no runnable block at all: a doc-run that attempted nothing is not a pass.
    """
    found = blocks(path)
    ran = [b for b in found if b.skip is None]
    if not ran:
        where = path.relative_to(ROOT)
        raise AssertionError(f"{where}: no ```python or ```bash block to run (found {len(found)}, all skipped)")
    namespace: dict = {"__name__": "__docrun__"}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        for block in ran:
            print(f"running {block.where}", flush=True)
            if block.lang == "bash":
                run_bash(block, cwd)
            else:
                run_python(block, namespace)
    finally:
        os.chdir(old)
    return ran


def run_file_isolated(path: Path, cwd: Path, timeout: float = 900) -> None:
    """``run_file`` in a fresh interpreter, so that a guide's global settings (a backend, thread counts,
    seeds) cannot leak into the tests that follow."""
    proc = subprocess.run(
        # -P: the script's folder (tests/, which holds test packages named like the real ones) stays off sys.path
        [sys.executable, "-P", __file__, str(path)],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"{path.relative_to(ROOT)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")


if __name__ == "__main__":
    run_file(Path(sys.argv[1]).resolve(), Path.cwd())
