"""EM, SGD, numerics at the edges, save/load, and errors that name the problem."""

import numpy as np
import pytest
import torch

import probcirc
from probcirc import io
from probcirc.inputs import Bernoulli, Categorical, Gaussian
from probcirc.learn import em, sgd
from probcirc.nodes import inputs, multiply, summate
from probcirc.structures import HCLT, PD

from .circuits import compiled, dag, randomize


def data_from(pc, n, seed=0):
    return pc.sample(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("missing", [0.0, 0.3])
def test_full_batch_em_never_lowers_the_likelihood(missing):
    teacher = compiled(dag(Categorical(3)), seed=1)
    data = data_from(teacher, 400)
    mask = torch.rand(data.shape, generator=torch.Generator().manual_seed(2)) < missing
    student = compiled(dag(Categorical(3)), seed=3)
    history = em(
        student, data, epochs=0, full_batch_epochs=12, batch_size=64, pseudocount=0.1, mask=mask, progress=False
    )
    # The pseudocount makes EM maximise a posterior; with α = 0 it is the plain likelihood.
    plain = compiled(dag(Categorical(3)), seed=3)
    history = em(plain, data, epochs=0, full_batch_epochs=12, batch_size=64, pseudocount=0.0, mask=mask, progress=False)
    for before, after in zip(history, history[1:]):
        assert after >= before - 1e-6 * abs(before)
    assert history[-1] > history[0] + 0.05


def test_mini_batch_em_learns_towards_the_teacher():
    teacher = compiled(HCLT(np.random.default_rng(0).integers(0, 3, (100, 6)), 3, input_dist=Categorical(3)), seed=4)
    train, test = data_from(teacher, 3000, 1), data_from(teacher, 1000, 2)
    student = probcirc.compile(HCLT(train.numpy(), 4, input_dist=Categorical(3), init="random"), dtype=torch.float64)
    before = float(student.log_prob(test).mean())
    em(student, train, epochs=4, batch_size=256, step_size=0.2, full_batch_epochs=2, progress=False)
    after, best = float(student.log_prob(test).mean()), float(teacher.log_prob(test).mean())
    assert after > before + 0.1
    assert after > best - 0.05
    clustered = probcirc.compile(HCLT(train.numpy(), 4, input_dist=Categorical(3)), dtype=torch.float64)
    assert float(clustered.log_prob(test).mean()) > before + 0.1, "the clustering start beats a random one"


def test_sgd_raises_the_likelihood():
    teacher = compiled(dag(Bernoulli()), seed=5)
    data = data_from(teacher, 1000)
    student = compiled(dag(Bernoulli()), seed=6)
    before = float(student.log_prob(data).mean())
    sgd(student, data, epochs=15, batch_size=100, lr=0.05, progress=False)
    after = float(student.log_prob(data).mean())
    assert after > before + 0.02
    p = student.log_prob(torch.tensor(np.array(np.meshgrid(*[[0, 1]] * 4)).reshape(4, -1).T, dtype=torch.float64)).exp()
    assert abs(float(p.sum()) - 1) < 1e-9  # still a normalised distribution


def _gauss_legendre(low: float, high: float, panels: int = 48, order: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of composite Gauss-Legendre quadrature on [low, high] (exact to degree 2·order - 1
    on every panel: far below 1e-9 for the leaves' widths, std >= 0.5, on panels of 0.5)."""
    x, w = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(low, high, panels + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    return (mid[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


def test_gaussian_leaves_integrate_to_one_and_fit():
    root = randomize(summate(multiply(inputs(0, 2, Gaussian()), inputs(1, 2, Gaussian())), num_nodes=1), 0)
    pc = probcirc.compile(root, dtype=torch.float64)
    # The density on a tensor grid of quadrature nodes, in one batch (scipy's dblquad asked for it point by point).
    nodes, weights = _gauss_legendre(-12, 12)
    a, b = np.meshgrid(nodes, nodes, indexing="ij")
    grid = torch.from_numpy(np.stack([a.ravel(), b.ravel()], 1))
    density = pc.log_prob(grid).exp().numpy().reshape(a.shape)
    assert abs(weights @ density @ weights - 1) < 1e-6
    x = torch.tensor([[0.3, 0.0]], dtype=torch.float64)
    line = torch.from_numpy(np.stack([np.full_like(nodes, 0.3), nodes], 1))
    marg = float(weights @ pc.log_prob(line).exp().numpy())
    assert float(pc.log_prob(x, torch.tensor([[False, True]])).exp()) == pytest.approx(marg, rel=1e-8)
    data = torch.cat([torch.randn(500, 2) * 0.5 - 2, torch.randn(500, 2) * 0.5 + 2]).double()
    history = em(pc, data, epochs=0, full_batch_epochs=15, pseudocount=0.0, progress=False)
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(history, history[1:]))
    assert history[-1] > -2.8


def test_zero_parameters_and_extreme_inputs_stay_finite():
    pc = compiled(dag(Categorical(3)), seed=7, zero_fraction=0.5)
    X = torch.tensor(np.array(np.meshgrid(*[range(3)] * 4)).reshape(4, -1).T, dtype=torch.float64)
    lp = pc.log_prob(X)
    assert not torch.isnan(lp).any()
    assert torch.isinf(lp).any(), "some assignments should be impossible with zeroed parameters"
    assert abs(float(lp.exp().sum()) - 1) < 1e-10
    history = em(pc, X, epochs=2, full_batch_epochs=2, batch_size=20, pseudocount=0.0, progress=False)
    assert all(np.isfinite(h) or h == -np.inf for h in history)
    for layer in pc._sum_layers:
        assert torch.isfinite(layer.weight).all()
    for layer in pc._input_layers:
        assert torch.isfinite(layer.params).all()
    # float32 with long chains: no NaN even where every value underflows.
    deep = probcirc.compile(PD((3, 4), 2, input_dist=Categorical(256)))
    x = torch.full((4, 12), 255.0)
    assert torch.isfinite(deep.log_prob(x)).all()
    flows, _ = deep._backward_pass(deep._forward_pass(*deep._prepare(x, None)), torch.ones(4))
    assert torch.isfinite(flows).all()


def test_save_and_load_give_identical_likelihoods(tmp_path):
    pc = compiled(dag(Categorical(3)), seed=8)
    pc_g = probcirc.compile(randomize(summate(inputs(0, 3, Gaussian()), num_nodes=1), 1))
    x = torch.tensor([[0.0, 1.0, 2.0, 1.0], [2.0, 2.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, False, False], [False] * 4])
    io.save(pc, tmp_path / "pc.h5")
    io.save(pc_g, tmp_path / "g.h5")
    back = io.load(tmp_path / "pc.h5", kind=probcirc.TensorCircuit)
    assert torch.equal(back.log_prob(x, mask), pc.log_prob(x, mask))
    assert back.fingerprint() == pc.fingerprint()
    y = torch.randn(5, 1)
    assert torch.equal(io.load(tmp_path / "g.h5").log_prob(y), pc_g.log_prob(y))


def test_bad_input_names_the_problem():
    pc = compiled(dag(Categorical(3)), seed=9)
    with pytest.raises(ValueError, match=r"out of range \[0, 2\]"):
        pc.log_prob(torch.tensor([[0, 1, 3, 0]]))
    with pytest.raises(ValueError, match="4 variables"):
        pc.log_prob(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="mask has shape"):
        pc.log_prob(torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.bool))
    # an out-of-range value under the mask is ignored: it is missing
    assert torch.isfinite(pc.log_prob(torch.tensor([[0, 1, 7, 0]]), torch.tensor([[False, False, True, False]]))).all()
    a, b = inputs(0, 2, Bernoulli()), inputs(0, 2, Bernoulli(), name="x0_again")
    with pytest.raises(ValueError, match="not decomposable.*x0_again"):
        multiply(a, b)
    with pytest.raises(ValueError, match="not smooth"):
        summate(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli()), num_nodes=1)
    with pytest.raises(ValueError, match="exactly one node"):
        probcirc.compile(summate(inputs(0, 2, Bernoulli()), num_nodes=2))
    with pytest.raises(ValueError, match="lacks"):
        probcirc.compile(summate(inputs(1, 2, Bernoulli()), num_nodes=1))
    with pytest.raises(ValueError, match="targets"):
        pc.conditional(torch.zeros(1, 4), None, [5])


def _reference_passes(pc, x, missing, rows, monkeypatch):
    """Forward and backward passes by the plain formulas: every sum layer gathers its children, every
    product adds all its children to zeros, every flow is added to zeros."""
    from probcirc.layers import ProductLayer, SumLayer

    def products(self, mars, max_mode=False):
        out = mars.new_zeros(self.num_nodes, mars.shape[1])
        mars[self.start : self.stop] = out.index_add_(0, self.parent_idx, mars.index_select(0, self.child_idx))

    with monkeypatch.context() as m:
        m.setattr(SumLayer, "_child_slots", lambda self: None)
        m.setattr(ProductLayer, "forward", products)
        m.setattr(pc, "_one_parent_each", False)
        mars = pc._forward_pass(x, missing)
        return mars, *pc._backward_pass(mars, torch.ones(rows))


@pytest.mark.parametrize("structure", ["dag", "hclt"])
def test_a_tape_from_the_forward_pass_gives_the_backward_pass_the_same_bits(structure, monkeypatch):
    """Keeping the sum layers' scaled children and mixtures, reading consecutive children in place,
    copying each product's first child and writing (not adding) the flows of a tree change nothing,
    batch after batch (buffer reuse)."""
    from probcirc.layers import Tape

    if structure == "dag":
        pc = compiled(dag(Categorical(3)), seed=1)
    else:
        data = torch.randint(0, 3, (50, 6), generator=torch.Generator().manual_seed(0))
        pc = probcirc.compile(HCLT(data, 3, input_dist=Categorical(3)), seed=1)
        assert pc._one_parent_each  # so its flows are written in place
    tape = Tape()
    for rows in (40, 17):  # a smaller batch reuses the front of the tape's buffer
        x, missing = pc._prepare(data_from(pc, rows, seed=rows), None)
        mars, flows, grads = _reference_passes(pc, x, missing, rows, monkeypatch)
        kept = pc._forward_pass(x, missing, tape=tape)
        flows2, grads2 = pc._backward_pass(kept, torch.ones(rows), tape=tape)
        for a, b in zip([mars, flows, *grads], [kept, flows2, *grads2]):
            assert a.numpy().tobytes() == b.numpy().tobytes()
        assert all(tape.pop(layer) is None for layer in pc._sum_layers)  # each kept pair is used once


def test_the_fused_categorical_update_is_the_m_step_mixed_in():
    """θ ← (1-s)θ + s·(F + α/C)/(ΣF + α), against the same formula in float64; a NaN row keeps its θ."""
    pc = compiled(dag(Categorical(5)), seed=2)
    layer = pc._input_layers[0]
    gen = torch.Generator().manual_seed(0)
    stats = torch.rand(layer.params.shape, generator=gen) * 30 * (torch.rand(layer.params.shape, generator=gen) < 0.5)
    old = layer.params.double().clone()
    total = stats.double().sum(-1, keepdim=True) + 0.5
    expected = 0.7 * old + 0.3 * (stats.double() + 0.5 / 5) / total
    layer.em_update(stats.clone(), 0.3, 0.5)
    torch.testing.assert_close(layer.params.double(), expected, rtol=1e-6, atol=1e-7)
    before = layer.params.clone()
    stats[0, 0] = float("nan")  # a diverged statistic: the general M-step keeps that node's row
    layer.em_update(stats, 0.3, 0.5)
    torch.testing.assert_close(layer.params[0], before[0])  # (1-s)θ + sθ
    assert not torch.allclose(layer.params[1:], before[1:])


@pytest.mark.parametrize("masked", [False, True])
def test_the_sum_layers_update_in_place_gives_the_bytes_of_one_on_a_copy(masked):
    """The update that uses up its flows gives the same bytes as one that copies them, and both follow the
    formula in float64; a node with no flow and no pseudocount, or a NaN, keeps its weights."""
    gen = torch.Generator().manual_seed(4)
    pc = compiled(dag(Categorical(5)), seed=3)
    layer = max(pc._sum_layers, key=lambda l: l.weight.numel())
    if masked:
        layer.edge_mask = torch.rand(layer.weight.shape, generator=gen) < 0.7
        layer.edge_mask[..., 0] = True
        layer.weight.mul_(layer.edge_mask)
        layer.weight.div_(layer.weight.sum(-1, keepdim=True))
    start = layer.weight.clone()
    flows = torch.rand(layer.weight.shape, generator=gen) * 20 * layer.weight
    for alpha in (0.5, 0.0):
        flows[0, 0] = 0.0  # with alpha 0: no flow at all, so that node keeps its weights
        flows[-1, -1, 0] = float("nan") if alpha == 0 else flows[-1, -1, 0]
        results = []
        for owned in (False, True):
            layer.weight.copy_(start)
            layer.em_update(flows.clone(), 0.3, alpha, owned=owned)
            results.append(layer.weight.clone())
        assert results[0].numpy().tobytes() == results[1].numpy().tobytes()
        live = torch.ones_like(flows) if layer.edge_mask is None else layer.edge_mask.to(flows.dtype)
        smoothed = (flows.double() + alpha / live.sum(-1, keepdim=True).double()) * live
        expected = 0.7 * start.double() + 0.3 * smoothed / smoothed.sum(-1, keepdim=True)
        if alpha == 0:
            expected[0, 0] = start[0, 0].double()
            expected[-1, -1] = start[-1, -1].double()
        torch.testing.assert_close(results[1].double(), expected, rtol=1e-5, atol=1e-6)


def test_the_categorical_update_from_a_support_alone_is_the_formula():
    """Given only a batch's support entries, θ ← (1-s)θ + s·(F + α/C)/(ΣF + α) over the whole table,
    against float64; a NaN takes the general M-step, which keeps that node's row."""
    gen = torch.Generator().manual_seed(3)
    pc = probcirc.compile(summate(multiply(inputs(0, 3, Categorical(6)), inputs(1, 3, Categorical(6))), num_nodes=1))
    layer = pc._input_layers[0]
    x = torch.randint(0, 3, (10, 2), generator=gen) * torch.tensor([1, 2])  # values 0..2 and 0, 2, 4
    support = layer.support_of(layer.stat_seen(*pc._prepare(x, None)))
    assert 0 < len(support) < layer.params.numel()
    stats = torch.zeros(layer.params.numel())
    stats[support] = torch.rand(len(support), generator=gen) * 30
    stats = stats.view_as(layer.params)
    old = layer.params.double().clone()
    expected = 0.7 * old + 0.3 * (stats.double() + 0.5 / 6) / (stats.double().sum(-1, keepdim=True) + 0.5)
    layer.em_update(stats.view(-1)[support].clone(), 0.3, 0.5, support=support)
    torch.testing.assert_close(layer.params.double(), expected, rtol=1e-6, atol=1e-7)
    before, entries = layer.params.clone(), stats.view(-1)[support].clone()
    entries[0] = float("nan")
    layer.em_update(entries, 0.3, 0.5, support=support)
    row = int(support[0]) // 6
    torch.testing.assert_close(layer.params[row], before[row])
    assert not torch.allclose(layer.params[row + 1 :], before[row + 1 :])


def test_sum_pseudocount_smooths_the_sum_layers_alone():
    """One full-batch step from the same start: the sums take sum_pseudocount, the leaves pseudocount,
    each exactly as a run with that one pseudocount everywhere."""
    start = compiled(dag(Categorical(5)), seed=5)
    data = data_from(start, 60, seed=1)
    runs = {}
    for name, kwargs in {
        "split": dict(pseudocount=0.5, sum_pseudocount=0.0),
        "zero": dict(pseudocount=0.0),
        "half": dict(pseudocount=0.5),
    }.items():
        pc = compiled(dag(Categorical(5)), seed=5)  # the same start each time
        em(pc, data, epochs=0, full_batch_epochs=1, progress=False, **kwargs)
        runs[name] = pc
    for a, b in zip(runs["split"]._sum_layers, runs["zero"]._sum_layers):
        assert torch.equal(a.weight, b.weight)
    for a, b in zip(runs["split"]._input_layers, runs["half"]._input_layers):
        assert torch.equal(a.params, b.params)
    assert not all(torch.equal(a.weight, b.weight) for a, b in zip(runs["split"]._sum_layers, runs["half"]._sum_layers))
    with pytest.raises(ValueError, match="sum_pseudocount"):
        em(start, data, sum_pseudocount=-1.0, progress=False)
