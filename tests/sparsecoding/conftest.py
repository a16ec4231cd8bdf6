import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def no_mpi(monkeypatch):
    """In-process CLI calls run serially (no MPI_Init inside pytest)."""
    monkeypatch.setenv("SPARSECODING_NO_MPI", "1")
