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
MAX_SKIPPED = 6


def test_guides_were_found():
    assert len(GUIDES) >= 8 and len(WITH_BLOCKS) >= 5


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
