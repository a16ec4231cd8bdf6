"""The categorical leaves keep their log table between passes: used only for the parameter values it came from."""

import weakref

import pytest
import torch

from probcirc.inputs import Categorical
from probcirc.layers.input_layer import InputLayer
from probcirc.learn import em
from probcirc.queries import max_log_prob

from .circuits import FAMILIES, all_assignments, compiled, structures


def build():
    root = dict(structures(FAMILIES["categorical"]))["hclt"]
    return root, compiled(root)


def leaves(pc):
    return [l for l in pc._input_layers if isinstance(l.dist, Categorical)]


def fresh(root, pc):
    """A new circuit with ``pc``'s parameters: it has never kept a table."""
    other = compiled(root)
    other.load_state_dict(pc.state_dict())
    return other.to(pc.dtype)


def scale_through_a_view(pc):
    leaves(pc)[0].params.view(-1)[:4].mul_(0.5)


def load_other_parameters(pc):
    other = compiled(dict(structures(FAMILIES["categorical"]))["hclt"], seed=7)
    pc.load_state_dict(other.state_dict())


def assign_a_new_tensor(pc):
    leaf = leaves(pc)[0]
    leaf.params = leaf.params * 0.5 + 0.5 / leaf.dist.num_cats


def one_em_epoch(pc):
    data = torch.tensor(all_assignments(pc.num_vars, 3)[::3])
    em(pc, data, epochs=1, batch_size=8, chunk_size=4)


def cast_to_float32(pc):
    pc.to(torch.float32)


@pytest.mark.parametrize(
    "change", [scale_through_a_view, load_other_parameters, assign_a_new_tensor, one_em_epoch, cast_to_float32]
)
def test_a_change_of_parameters_is_never_served_a_stale_table(change):
    root, pc = build()
    x = torch.tensor(all_assignments(pc.num_vars, 3))
    half = torch.zeros_like(x, dtype=torch.bool)
    half[:, 2:] = True  # max-product reads each leaf's mode where its variable is missing
    before = pc.log_prob(x)
    pc.mpe(x, half)
    assert all({"log", "mode"} <= set(l._kept) for l in leaves(pc))  # the passes kept what they derived
    change(pc)
    x = x.to(pc.dtype)
    after = pc.log_prob(x)
    # the change matters: other likelihoods, or another dtype
    assert after.dtype != before.dtype or not torch.allclose(after, before)
    other = fresh(root, pc)
    assert torch.equal(after, other.log_prob(x))
    assert torch.equal(max_log_prob(pc, x, half), max_log_prob(other, x, half))
    assert torch.equal(pc.mpe(x, half), other.mpe(x, half))


def test_repeated_queries_compute_the_table_once(monkeypatch):
    _, pc = build()
    x = torch.tensor(all_assignments(pc.num_vars, 3))
    calls = []
    compute = InputLayer._log_table
    monkeypatch.setattr(InputLayer, "_log_table", staticmethod(lambda g: calls.append(1) or compute(g)))
    first = pc.log_prob(x)
    assert len(calls) == len(leaves(pc))
    for rows in (slice(0, 1), slice(5, 9), slice(None)):
        torch.testing.assert_close(pc.log_prob(x[rows]), first[rows], rtol=1e-12, atol=0)
    assert len(calls) == len(leaves(pc))


def test_parameters_whose_changes_go_uncounted_are_computed_afresh():
    _, pc = build()
    x = torch.tensor(all_assignments(pc.num_vars, 3))
    expected = pc.log_prob(x)
    leaf = leaves(pc)[0]
    leaf.params = leaf.params.clone().requires_grad_()  # autograd tools perturb these through .data
    with torch.no_grad():
        assert torch.equal(pc.log_prob(x), expected)
        leaf.params.data.mul_(0.5)  # counts no version
        assert not torch.allclose(pc.log_prob(x), expected)
    leaf.params = leaf.params.detach().clone()
    expected = pc.log_prob(x)
    with torch.inference_mode():
        leaf.params = leaf.params.clone()  # an inference tensor counts no versions: nothing can be kept
        assert torch.equal(pc.log_prob(x), expected)
        leaf.params.mul_(0.5)
        assert not torch.allclose(pc.log_prob(x), expected)


def test_a_stale_value_is_let_go_before_its_successor_is_computed():
    # Holding the old table while the new one is built would page in fresh memory every update.
    _, pc = build()
    leaf = leaves(pc)[0]
    stale = weakref.ref(leaf._derived("probe", lambda p: p.clone()))
    alive = []

    def compute(p):
        alive.append(stale() is not None)  # no reference left anywhere: the kept entry's, nor a local's
        return p.clone()

    leaf.params.mul_(1.0)  # a new version, the same values
    value = leaf._derived("probe", compute)
    assert alive == [False]
    assert torch.equal(value, leaf.params)
    assert leaf._derived("probe", compute) is value and alive == [False]  # kept again
