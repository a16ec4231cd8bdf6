"""Every block of the README runs as written, each on its own, in an empty folder (issue #15, section 6).

A reader may start at any section, so each README block is self-contained: a bash block makes its
own small inputs in its first lines, and a Python block imports what it uses. Only blocks marked
``<!-- doc-run: skip: ... -->`` are left out, and the test below pins which ones those may be.
"""

import pytest

from .docrun import ROOT, blocks, run_bash, run_python

README = ROOT / "README.md"
BLOCKS = blocks(README)
RUNNABLE = [b for b in BLOCKS if b.skip is None]


def test_readme_has_blocks_to_run():
    # A doc-run that attempts nothing must fail rather than pass vacuously.
    assert sum(b.lang == "python" for b in RUNNABLE) >= 3
    assert sum(b.lang == "bash" for b in RUNNABLE) >= 3


def test_only_make_lines_are_skipped():
    # `make demo` / `make test` build the venv and run the whole suite (this test among it), so they
    # are the one thing the README may show without running it here.
    for block in BLOCKS:
        if block.skip is not None:
            commands = [line.split("#")[0].strip() for line in block.code.splitlines()]
            assert all(c.startswith("make ") for c in commands if c), f"{block.where} is skipped but is not make lines"


def test_readme_documents_the_data_folder():
    text = README.read_text(encoding="utf-8")
    assert "PROBMOD_DATA" in text


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"{b.lang}-line{b.line}" for b in RUNNABLE])
def test_readme_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if block.lang == "bash":
        run_bash(block, tmp_path)
    else:
        run_python(block, {"__name__": "__readme__"})
