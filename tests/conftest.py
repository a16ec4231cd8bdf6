"""Test-wide settings: one thread, and every test seeded (issue #15, section 7).

Each test starts with Python's, numpy's and torch's global generators seeded from the session seed
and the test's id, so a test draws the same numbers alone or in the full suite, in any order.
The session seed is 0; ``PROBMOD_TEST_SEED=random`` picks a fresh one (``PROBMOD_TEST_SEED=N``
repeats it). The seed is printed in pytest's header and beside every failure.
"""

import os
import random
import zlib

import numpy as np
import pytest
import torch

# Test tensors are small: one thread avoids OpenMP spin-waits on busy machines.
torch.set_num_threads(1)

DEFAULT_SEED = 0


def _session_seed() -> int:
    raw = os.environ.get("PROBMOD_TEST_SEED", "").strip()
    if not raw:
        return DEFAULT_SEED
    if raw == "random":
        return random.SystemRandom().randrange(2**32)
    try:
        return int(raw) % 2**32
    except ValueError:
        raise pytest.UsageError(f"PROBMOD_TEST_SEED must be an integer or 'random', got {raw!r}") from None


SESSION_SEED = _session_seed()


def test_seed(nodeid: str) -> int:
    """The seed of one test: the session seed mixed with a stable hash of its id (not ``hash()``)."""
    return (SESSION_SEED + zlib.crc32(nodeid.encode())) % 2**32


test_seed.__test__ = False  # a helper, not a test


def pytest_report_header(config):
    return f"probmod test seed: {SESSION_SEED} (repeat with PROBMOD_TEST_SEED={SESSION_SEED})"


def pytest_terminal_summary(terminalreporter):
    # The header is hidden under -q; a random seed must still be visible to repeat a failure.
    if os.environ.get("PROBMOD_TEST_SEED", "").strip() == "random":
        terminalreporter.write_line(f"probmod test seed: {SESSION_SEED} (repeat with PROBMOD_TEST_SEED={SESSION_SEED})")


@pytest.fixture(autouse=True)
def _seed_everything(request):
    seed = test_seed(request.node.nodeid)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    yield
    # A command line run in process sets the thread count for the whole process (--threads, default
    # every core); the next module's fixtures would inherit it, so each test gives back one thread.
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        report.sections.append(
            ("probmod test seed", f"PROBMOD_TEST_SEED={SESSION_SEED} (this test: {test_seed(item.nodeid)})")
        )
    return report
