"""The engine's public hooks: the node graph and the forward pass with a leaf hook (issue #15, section 2).

Each hook is checked against an independent computation: the graph is walked
by a plain recursion in float64 numpy and must give the circuit's probabilities;
leaf flows and soft evidence are checked by enumerating every assignment.
"""

import numpy as np
import pytest
import torch

from probcirc.compile import INPUT, PRODUCT, SUM
from probcirc.inputs import Bernoulli, Categorical
from probcirc.queries import soft_evidence

from .circuits import all_assignments, compiled, dag, structures


def _graph_prob(graph, x: np.ndarray) -> float:
    """p(x) by walking the exported graph in node order, with each leaf's pmf."""
    kind = graph.kind.numpy()
    ptr, child, weight = graph.child_ptr.numpy(), graph.child.numpy(), graph.weight.numpy()
    value = np.zeros(graph.num_nodes)
    for g in graph.leaves:
        table = g.dist.pmf(g.params).numpy()
        value[g.nodes.numpy()] = table[np.arange(len(table)), x[g.var.numpy()].astype(int)]
    for n in range(graph.num_nodes):
        kids, w = child[ptr[n] : ptr[n + 1]], weight[ptr[n] : ptr[n + 1]]
        if kind[n] == PRODUCT:
            value[n] = np.prod(value[kids])
        elif kind[n] == SUM:
            value[n] = w @ value[kids]
    return value[-1]


@pytest.mark.parametrize("dist", [Categorical(3), Bernoulli()], ids=["categorical", "bernoulli"])
def test_graph_reproduces_the_circuit(dist):
    for name, root in structures(dist):
        pc = compiled(root, seed=3)
        g = pc.graph()
        assert g.num_nodes == pc.num_nodes and g.kind[-1] != INPUT, name
        parent = torch.repeat_interleave(torch.arange(g.num_nodes), g.child_ptr.diff())
        assert bool((g.child < parent).all()), f"{name}: children come before parents"
        assert bool(((g.kind == INPUT) == (g.var >= 0)).all()) and bool(
            (g.child_ptr.diff()[g.kind == INPUT] == 0).all()
        )
        assert torch.equal(
            torch.cat([l.nodes for l in g.leaves]).sort().values, (g.kind == INPUT).nonzero().squeeze(-1)
        )
        X = all_assignments(pc.num_vars, dist.num_values)
        want = pc.log_prob(torch.tensor(X)).exp().numpy()
        got = np.array([_graph_prob(g, x) for x in X])
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)


def test_forward_with_leaves_matches_log_prob_and_gives_leaf_flows():
    pc = compiled(dag(Categorical(3)), seed=4)
    X = torch.tensor(all_assignments(4, 3))
    mask = torch.zeros(X.shape, dtype=torch.bool)
    mask[::2, 1] = True
    out = pc.forward_with_leaves(lambda g: None, X, mask, flows=True)
    torch.testing.assert_close(out.log_value, pc.log_prob(X, mask), rtol=0, atol=0)

    def hook(g):  # the same leaf values, supplied from outside: log pmf at x, log 1 where missing
        table = g.dist.pmf(g.params).log()
        vals = table.gather(1, X.T[g.var].long())
        return torch.where(mask.T[g.var], torch.zeros_like(vals), vals)

    hooked = pc.forward_with_leaves(hook, flows=True)
    torch.testing.assert_close(hooked.log_value, out.log_value, rtol=1e-12, atol=1e-12)
    # Each variable's leaf flows sum to 1 per sample in a smooth, decomposable circuit.
    per_var = torch.zeros(4, len(X), dtype=torch.float64)
    for g, f in zip(pc.leaf_groups, out.leaf_flows):
        per_var.index_add_(0, g.var, f)
    torch.testing.assert_close(per_var, torch.ones_like(per_var))


def test_forward_with_leaves_rejects_bad_hook_output():
    pc = compiled(dag(Bernoulli()))
    with pytest.raises(ValueError, match="leaf_fn must return"):
        pc.forward_with_leaves(lambda g: torch.zeros(1, 2))
    with pytest.raises(ValueError, match="x"):
        pc.forward_with_leaves(lambda g: None)


def test_soft_evidence_is_the_enumerated_posterior():
    pc = compiled(dag(Bernoulli()), seed=5)
    X = torch.tensor(all_assignments(4, 2))
    p = pc.log_prob(X).exp()
    q = torch.rand(3, 4, dtype=torch.float64)
    lik = torch.where(X.bool(), q[:, None], 1 - q[:, None]).prod(-1)  # (3, 16): the evidence's weight of each x
    z = lik @ p
    post, logz = soft_evidence(pc, q)
    torch.testing.assert_close(logz, z.log())
    torch.testing.assert_close(post, (lik * p) @ X / z[:, None])
    assert post.dtype == pc.dtype and post.device == pc.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_hooks_follow_the_device():
    pc = compiled(dag(Bernoulli()), seed=5)
    q = torch.rand(3, 4, dtype=torch.float64)
    ref = soft_evidence(pc, q)
    gpu = pc.to("cuda")
    got = soft_evidence(gpu, q.cuda())
    assert got[0].device.type == "cuda" and gpu.graph().child.device.type == "cuda"
    torch.testing.assert_close(got[0].cpu(), ref[0])
    torch.testing.assert_close(got[1].cpu(), ref[1])
