"""The guides' ```python and ```bash blocks run as written, top to bottom, as a reader follows them.

Each guide runs in a fresh folder with one Python namespace for its blocks (see ``docrun``). Blocks
that need MNIST, a GPU or minutes of training carry a ``<!-- doc-run: skip: reason -->`` marker;
the test keeps that list short so that skipping does not become the way to pass.
"""

import pytest

from .docrun import ROOT, blocks, run_file_isolated

GUIDES = sorted((ROOT / "docs").glob("*.md"))
WITH_BLOCKS = [p for p in GUIDES if blocks(p)]
#: at most this many blocks across all guides may be skipped; raise it only with a reason in the marker
MAX_SKIPPED = 7


#: guides that are reference text only (API pages rendered by mkdocstrings, architecture, threat model);
#: every other guide must have a block that runs, so a guide cannot lose its examples unnoticed
WITHOUT_EXAMPLES = {"architecture.md", "distribution.md", "gmm.md", "security.md"}


def test_guides_were_found():
    assert len(GUIDES) >= 8 and len(WITH_BLOCKS) >= 5


def test_every_guide_has_a_runnable_example():
    without = {p.name for p in GUIDES if not any(b.skip is None for b in blocks(p))}
    assert without == WITHOUT_EXAMPLES


def test_skip_list_is_small():
    skipped = [b.where for p in GUIDES for b in blocks(p) if b.skip is not None]
    ran = [b for p in GUIDES for b in blocks(p) if b.skip is None]
    assert len(skipped) <= MAX_SKIPPED, skipped
    assert len(ran) > len(skipped), (len(ran), skipped)


@pytest.mark.slow
@pytest.mark.parametrize("path", WITH_BLOCKS, ids=[p.name for p in WITH_BLOCKS])
def test_guide_runs(path, tmp_path):
    # run_file fails when every block of a guide is skipped: a doc-run must attempt something.
    run_file_isolated(path, tmp_path)
