"""Structure learning: prune and grow keep exact, normalised circuits; EM respects pruned edges; saving; the CLI.

Exactness is checked against an evaluator written here on ``pc.graph()`` (plain
numpy, float64), which shares no code with the compiled layers that prune and
grow rewrite.
"""

import re

import h5py
import numpy as np
import pytest
import torch

import probcirc
import probcirc.density.cli as density_cli
from probcirc.cli import main
from probcirc.compile.graph import INPUT, PRODUCT
from probcirc.learn import check_structure, edge_flows, em, grow, prune, prune_grow
from probcirc.nodes import inputs, multiply, summate
from probmod.errors import UsageError

from .circuits import FAMILIES, all_assignments, compiled, structures

CASES = [(f, name) for f in ("categorical", "bernoulli") for name, _ in structures(FAMILIES[f])]


def _circuit(family, name):
    root = dict(structures(FAMILIES[family]))[name]
    return compiled(root, seed=3)


def _graph_prob(pc, x, missing):
    """p(x_observed) for each row by walking pc.graph() bottom-up in float64 numpy."""
    g = pc.graph()
    kind, ptr, child = g.kind.numpy(), g.child_ptr.numpy(), g.child.numpy()
    w, var = g.weight.double().numpy(), g.var.numpy()
    pmf = np.zeros((g.num_nodes, 8))
    for group in g.leaves:
        table = group.dist.pmf(group.params.double()).numpy()
        pmf[group.nodes.numpy(), : table.shape[1]] = table
    out = np.zeros((len(x), g.num_nodes))
    for v in range(g.num_nodes):
        kids = child[ptr[v] : ptr[v + 1]]
        if kind[v] == INPUT:
            vals = pmf[v, x[:, var[v]].astype(int)]
            out[:, v] = np.where(missing[:, var[v]], 1.0, vals)
        elif kind[v] == PRODUCT:
            out[:, v] = out[:, kids].prod(1)
        else:
            out[:, v] = out[:, kids] @ w[ptr[v] : ptr[v + 1]]
    return out[:, -1]


def _check_exact(pc, values):
    """Normalised over every assignment, and every marginal equals the engine's and the graph walk's."""
    x = all_assignments(pc.num_vars, values)
    full = np.zeros_like(x, dtype=bool)
    p = pc.log_prob(torch.tensor(x)).exp().double().numpy()
    assert abs(p.sum() - 1.0) < 1e-10
    np.testing.assert_allclose(p, _graph_prob(pc, x, full), rtol=1e-10, atol=1e-14)
    rng = np.random.default_rng(0)
    miss = rng.random(x.shape) < 0.4
    got = pc.log_prob(torch.tensor(x), torch.tensor(miss)).exp().double().numpy()
    for i in rng.choice(len(x), 12, replace=False):
        match = np.all((x == x[i]) | miss[i], axis=1)  # the assignments that agree on the observed entries
        assert got[i] == pytest.approx(p[match].sum(), rel=1e-10, abs=1e-14)
    np.testing.assert_allclose(got, _graph_prob(pc, x, miss), rtol=1e-10, atol=1e-14)
    check_structure(pc)


def _data(pc, values, n=60, seed=0):
    return torch.randint(0, values, (n, pc.num_vars), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family,name", CASES)
def test_prune_then_grow_keeps_the_circuit_exact_and_normalised(family, name):
    values = FAMILIES[family].num_values
    pc = _circuit(family, name)
    pruned = prune(pc, _data(pc, values), 0.5)
    assert pruned.num_edges < pc.num_edges
    _check_exact(pruned, values)
    grown = grow(pruned, factor=2, noise=0.5, generator=torch.Generator().manual_seed(1))
    assert grown.num_nodes == 2 * (pc.num_nodes - 1) + 1  # every node but the root, twice
    _check_exact(grown, values)


def test_prune_removes_the_smallest_flows_and_keeps_one_edge_per_node():
    pc = _circuit("categorical", "hclt")
    data = _data(pc, 3)
    flows = torch.cat([f.flatten() for f in edge_flows(pc, data)])
    pruned = prune(pc, data, 0.3)
    kept = torch.cat([l.edge_mask.flatten() for l in pruned._sum_layers])
    cut = int((~kept).sum())
    assert cut == int(0.3 * kept.numel()) or cut < int(0.3 * kept.numel())  # capped by one edge per node
    assert cut > 0 and float(flows[~kept].max()) <= float(flows[kept].median())
    assert all(bool(l.edge_mask.any(-1).all()) for l in pruned._sum_layers)


def test_prune_zero_changes_nothing():
    pc = _circuit("categorical", "dag")
    same = prune(pc, _data(pc, 3), 0.0)
    assert same is not pc and same.fingerprint() == pc.fingerprint()
    for (name, a), (_, b) in zip(pc.named_buffers(), same.named_buffers()):
        assert a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes(), name


@pytest.mark.parametrize("factor", [1, 2, 3])
@pytest.mark.parametrize("name", ["hclt", "dag", "ratspn"])
def test_grow_without_noise_leaves_every_likelihood_unchanged(name, factor):
    pc = prune(_circuit("categorical", name), _data(_circuit("categorical", name), 3), 0.3)
    big = grow(pc, factor=factor, noise=0.0)
    x = torch.tensor(all_assignments(pc.num_vars, 3))
    miss = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.3
    for m in (None, miss):
        np.testing.assert_allclose(big.log_prob(x, m).numpy(), pc.log_prob(x, m).numpy(), rtol=0, atol=1e-12)
    check_structure(big)


def test_em_never_brings_a_pruned_edge_back_and_grow_keeps_the_mask():
    pc = _circuit("categorical", "pd")
    data = _data(pc, 3, 200)
    pruned = grow(prune(pc, data, 0.5), 2, 0.1, generator=torch.Generator().manual_seed(0))
    masks = [l.edge_mask.clone() for l in pruned._sum_layers]
    em(pruned, data, epochs=2, pseudocount=5.0, full_batch_epochs=1, batch_size=32)
    for layer, m in zip(pruned._sum_layers, masks):
        assert torch.equal(layer.edge_mask, m) and bool((layer.weight[~m] == 0).all())
    _check_exact(pruned, 3)


def test_a_pruned_and_grown_circuit_saves_and_loads(tmp_path):
    pc = _circuit("bernoulli", "hclt")
    big = grow(prune(pc, _data(pc, 2), 0.4), 2, 0.2, generator=torch.Generator().manual_seed(2))
    probcirc.io.save(big, tmp_path / "pc.h5")
    back = probcirc.io.load(tmp_path / "pc.h5")
    assert back.fingerprint() == big.fingerprint()
    x = torch.tensor(all_assignments(pc.num_vars, 2))
    assert torch.equal(back.log_prob(x), big.log_prob(x))


def test_the_schedule_is_reproducible_and_learns():
    pc = _circuit("categorical", "hclt")
    data = _data(pc, 3, 200)
    data[:, 1] = data[:, 0]

    def run():
        seen = []
        out = prune_grow(
            pc, data, rounds=2, fraction=0.5, factor=2, epochs=2, generator=torch.Generator().manual_seed(4),
            callback=lambda r, c, h: seen.append(h[-1]),
        )  # fmt: skip
        return out, seen

    (a, hist), (b, _) = run(), run()
    assert a.fingerprint() == b.fingerprint() and len(hist) == 2
    assert float(a.log_prob(data).mean()) > float(pc.log_prob(data).mean())
    _check_exact(a, 3)


def test_bad_arguments_are_named():
    pc = _circuit("bernoulli", "dag")
    data = _data(pc, 2)
    for fraction in (-0.1, 1.0, float("nan"), "half"):
        with pytest.raises(UsageError, match="fraction must be in"):
            prune(pc, data, fraction)
    for factor in (0, 1.5, True):
        with pytest.raises(UsageError, match="factor must be an integer"):
            grow(pc, factor)
    for noise in (-1.0, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="noise must be"):
            grow(pc, 2, noise)
    product_root = probcirc.compile(multiply(inputs(0, 1, FAMILIES["bernoulli"]), inputs(1, 1, FAMILIES["bernoulli"])))
    with pytest.raises(UsageError, match="root is a single sum node"):
        grow(product_root, 2)
    with pytest.raises(UsageError, match="data must be"):
        prune(pc, torch.zeros(0, pc.num_vars), 0.5)
    broken = probcirc.compile(summate(inputs(0, 2, FAMILIES["bernoulli"]), num_nodes=1))
    broken._sum_layers[0].weight.mul_(2.0)
    with pytest.raises(ValueError, match="sum to 2"):
        check_structure(broken)


# ------------------------------------------------------------------ probcirc train --prune-grow
DIGITS = (np.random.default_rng(0).random((160, 16)) < 0.3).astype(np.uint8)
FAST = ["--latents", "2", "--batch-size", "64", "--step-size", "0.5", "-q", "--prune-grow", "1:0.5:2"]


def _arrays(path):
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_train_with_prune_grow_resumes_bit_identically_after_a_kill(tmp_path, capsys, monkeypatch):
    data = tmp_path / "x.npy"
    np.save(data, DIGITS)
    straight, stopped = tmp_path / "straight.h5", tmp_path / "stopped.h5"
    run = ["train", data, *FAST, "--epochs", "2", "--full-epochs", "1"]
    assert main([str(a) for a in [*run, "-o", straight]]) == 0
    calls = []

    def killed_in_second_epoch(*args, **kwargs):  # the first epoch after the prune and grow
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return em(*args, **kwargs)

    monkeypatch.setattr(density_cli, "em", killed_in_second_epoch)
    assert main([str(a) for a in [*run, "-o", stopped]]) == 130
    assert probcirc.io.load(stopped).epochs_done == 1
    monkeypatch.undo()
    capsys.readouterr()
    other = ["train", data, *FAST[:-1], "2:0.5:2", "--epochs", "2", "--full-epochs", "1", "-o", stopped, "--resume"]
    assert main([str(a) for a in other]) == 2
    assert re.search(r"used --prune-grow 1:0.5:2:0.1, not 2:0.5:2:0.1", capsys.readouterr().err)
    assert main([str(a) for a in [*run, "-o", stopped, "--resume"]]) == 0
    a, b = _arrays(straight), _arrays(stopped)
    assert a.keys() == b.keys()
    for name in a:
        if name != "history/seconds":
            assert a[name].tobytes() == b[name].tobytes(), name
    model = probcirc.io.load(stopped)
    assert model.circuit.num_nodes > 2 * 16 * 2 and model.prune_grow == "1:0.5:2:0.1"
    check_structure(model.circuit)
    capsys.readouterr()
    assert main([str(a) for a in ["train", data, *FAST[:-1], "1:2:2", "-o", tmp_path / "bad.h5"]]) == 2
    assert "FRACTION in [0, 1)" in capsys.readouterr().err
