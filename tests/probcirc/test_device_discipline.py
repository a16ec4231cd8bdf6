"""The device guard (issue #21): it catches a buffer allocated off the circuit's device on the CPU alone.

The soft_evidence bug the issue found (buffers built with ``torch.zeros(shape, dtype=...)``, no
``device=``) passed every CPU test and would have failed on the first GPU. These tests replant that
bug in the real module's code and show the guard names its file and line, and show the guard stays
silent on the library as it is.
"""

from __future__ import annotations

import inspect
import os

import pytest
import torch

import probcirc
from probcirc.inputs import Bernoulli
from probcirc.learn import em
from probcirc.queries import log_prob, soft_evidence
from probcirc.queries import soft_evidence as soft_evidence_module
from probcirc.testing import DeviceDisciplineError, DeviceGuard

from .circuits import dag, randomize

MODULE = inspect.getmodule(soft_evidence_module)


def bernoulli_circuit(dtype=torch.float64):
    return probcirc.compile(randomize(dag(Bernoulli()), seed=1), dtype=dtype)


def replant_the_bug() -> tuple:
    """soft_evidence as it was before the fix: its two buffers take torch's default device.

    The source is the module's own, compiled under the module's file name, so the guard attributes
    the calls exactly as it would the shipped code.
    """
    source = inspect.getsource(MODULE)
    fixed = "torch.zeros(qn.shape, dtype=pc.dtype, device=pc.device)"
    assert source.count(fixed) == 2, "soft_evidence's buffers changed: update this test's replanted bug"
    namespace: dict = {"__name__": MODULE.__name__, "__package__": MODULE.__package__}
    exec(compile(source.replace(fixed, "torch.zeros(qn.shape, dtype=pc.dtype)"), MODULE.__file__, "exec"), namespace)
    lines = [i for i, text in enumerate(source.splitlines(), 1) if fixed in text]
    return namespace["soft_evidence"], lines


def test_the_guard_fails_on_a_replanted_misplaced_buffer():
    buggy, lines = replant_the_bug()
    pc = bernoulli_circuit()
    q = torch.rand(5, pc.num_vars, dtype=torch.float64)
    with pytest.raises(DeviceDisciplineError) as err, DeviceGuard():
        post, _ = buggy(pc, q)
    message = str(err.value)
    for line in lines:
        assert f"probcirc/queries/soft_evidence.py:{line}: torch.zeros without device=" in message
    # On the CPU the bug is invisible to the numbers: the same posteriors as the fixed code.
    torch.testing.assert_close(post, soft_evidence(pc, q)[0])


def test_the_guard_is_silent_on_the_library():
    pc = bernoulli_circuit()
    x = torch.randint(0, 2, (16, pc.num_vars)).double()
    mask = torch.rand(x.shape) < 0.3
    with DeviceGuard() as guard:
        soft_evidence(pc, torch.rand(4, pc.num_vars, dtype=torch.float64))
        log_prob(pc, x, mask)
        pc.sample(3)
        em(pc, x, epochs=1, batch_size=8, full_batch_epochs=1)
    assert guard.violations == []


def test_the_guard_reads_device_and_dtype_but_lets_inheriting_calls_pass():
    here = [__file__]  # this file joins the scope, as a probcirc file would be in it
    like = torch.ones(2, dtype=torch.float64)
    with pytest.raises(DeviceDisciplineError, match=r"torch.full without device, dtype="), DeviceGuard(files=here):
        torch.full((2,), 0.5)
    with pytest.raises(DeviceDisciplineError, match=r"torch.arange without device=  ->"), DeviceGuard(files=here):
        torch.arange(3)  # integers: the dtype is not the circuit's business
    with DeviceGuard(files=here) as guard:
        torch.zeros(2, dtype=torch.float64, device="cpu")  # a deliberate host tensor says so
        torch.zeros_like(like), like.new_zeros(3), torch.as_tensor(like)
        torch.arange(3, device=like.device)
    assert guard.violations == []
    with DeviceGuard() as guard:  # out of scope: tests and user code allocate as they like
        torch.zeros(2)
    assert guard.violations == []


def test_the_engine_passes_make_no_host_synchronisation():
    """Forward and backward (flows) over given leaf values: no .item(), bool(t), .tolist() on the way."""
    pc = bernoulli_circuit(torch.float32)
    with DeviceGuard(files=[__file__]) as guard:
        leaves = [torch.zeros(len(g.nodes), 8, dtype=pc.dtype, device=pc.device) for g in pc.leaf_groups]
        out = pc.forward_with_leaves(lambda g: leaves.pop(0), flows=True)
        float(out.log_value.sum())  # one sync from this file, so that an empty count below means something
    here = os.path.relpath(__file__, os.path.dirname(os.path.dirname(os.path.abspath(probcirc.__file__))))
    assert [where.split(":")[0] for where in guard.syncs] == [here.replace(os.sep, "/")]
    assert sum(guard.syncs.values()) == 1


@pytest.mark.device_guard
def test_the_marker_puts_a_test_under_the_guard(_device_guard):
    assert isinstance(_device_guard, DeviceGuard)
    assert _device_guard in torch.overrides._get_current_function_mode_stack()
