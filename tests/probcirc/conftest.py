"""The query and learning tests run under the device guard (issue #21; docs/gpu.md, "Device discipline").

Every test in ``GUARDED`` (or marked ``device_guard``) runs inside :class:`probcirc.testing.DeviceGuard`:
a tensor that library code in the guard's scope allocates without ``device=`` (or a float without
``dtype=``) fails the test, naming the file and line, although every tensor here lives on the CPU.
``PROBMOD_DEVICE_GUARD=0`` switches the guard off (to tell a guard failure from a numerical one).
"""

import os

import pytest

from probcirc.testing import DeviceGuard

# The query and EM matrix, the engine hooks, the GMM and the Distribution contract.
GUARDED = {
    "test_circuit_exact.py",
    "test_circuit_learning.py",
    "test_engine_hooks.py",
    "test_distribution_contract.py",
    "test_gmm.py",
    "test_codec.py",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "device_guard: run the test under probcirc.testing.DeviceGuard")


@pytest.fixture(autouse=True)
def _device_guard(request):
    wanted = request.node.path.name in GUARDED or request.node.get_closest_marker("device_guard") is not None
    if not wanted or os.environ.get("PROBMOD_DEVICE_GUARD", "1").strip() == "0":
        yield None
        return
    # Offences are collected and raised when the block ends (at teardown), so no library try/except hides one.
    with DeviceGuard() as guard:
        yield guard
