"""Shared helpers for the sparse coding tests (imported by the test modules)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def venv_bin() -> Path:
    return Path(sys.executable).parent


def mpiexec() -> str | None:
    cand = venv_bin() / "mpiexec"
    if cand.exists():
        return str(cand)
    return shutil.which("mpiexec")


def run_cli(args: list[str], ranks: int | None = None, env: dict | None = None, timeout: float = 240):
    """Run ``python -m sparsecoding`` (under ``mpiexec -n ranks`` when given) from the repo root."""
    cmd = [sys.executable, "-m", "sparsecoding", *args]
    if ranks is not None:
        exe = mpiexec()
        if exe is None:
            pytest.skip("mpiexec not found")
        cmd = [exe, "-n", str(ranks), *cmd]
    full_env = {**os.environ, "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
    return subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
