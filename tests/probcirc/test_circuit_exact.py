"""Exact queries against brute-force enumeration and an independent recursive evaluator, in float64."""

import numpy as np
import pytest
import torch
from scipy import stats

from .circuits import FAMILIES, all_assignments, compiled, reference, structures

CASES = [(fam, name) for fam in FAMILIES for name, _ in structures(FAMILIES[fam])]


def build(fam, name, seed=0, **kw):
    dist = FAMILIES[fam]
    root = dict(structures(dist, seed))[name]
    return root, compiled(root, seed, **kw), dist.num_values


def enumerate_joint(pc, v):
    """Every assignment ``X`` and the joint table ``p[x_0, ..., x_{D-1}]``, from full-evidence queries."""
    X = all_assignments(pc.num_vars, v)
    return X, pc.log_prob(torch.tensor(X)).exp().numpy().reshape((v,) * pc.num_vars)


def random_evidence(rng, X, n, p_missing):
    """``n`` rows of ``X`` drawn at random, and a mask that marks each entry missing with probability ``p_missing``."""
    x = X[rng.integers(0, len(X), n)]
    return x, rng.random(x.shape) < p_missing


def evidence_slice(x, mask):
    """Index into the joint table that fixes the observed entries and keeps an axis per missing one."""
    return tuple(slice(None) if m else int(val) for val, m in zip(x, mask))


@pytest.mark.parametrize("fam,name", CASES)
def test_probabilities_sum_to_one_and_match_reference(fam, name):
    root, pc, v = build(fam, name)
    X = all_assignments(pc.num_vars, v)
    p = pc.log_prob(torch.tensor(X)).exp()
    assert abs(float(p.sum()) - 1.0) < 1e-10
    ref = np.array([reference(root, x) for x in X[::7]])
    np.testing.assert_allclose(p[::7].numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("fam,name", CASES)
def test_masked_log_prob_is_the_enumerated_sum(fam, name):
    root, pc, v = build(fam, name, seed=1)
    X, joint = enumerate_joint(pc, v)
    rng = np.random.default_rng(2)
    x, mask = random_evidence(rng, X, 16, 0.5)
    ours = pc.log_prob(torch.tensor(x), torch.tensor(mask)).exp().numpy()
    for xi, mi, oi in zip(x, mask, ours):
        index = evidence_slice(xi, mi)
        assert abs(joint[index].sum() - oi) < 1e-12
        assert abs(reference(root, xi, mi) - oi) < 1e-12


@pytest.mark.parametrize("fam,name", CASES)
def test_conditional_is_the_enumerated_ratio(fam, name):
    root, pc, v = build(fam, name, seed=3)
    X, joint = enumerate_joint(pc, v)
    rng = np.random.default_rng(4)
    x, mask = random_evidence(rng, X, 8, 0.3)
    targets = [0, 2]
    cond = pc.conditional(torch.tensor(x), torch.tensor(mask), targets).numpy()
    assert cond.shape == (8, 2, v)
    for b in range(8):
        hidden = mask[b].copy()
        hidden[targets] = True
        for ti, t in enumerate(targets):
            index = tuple(slice(None) if (hidden[d] or d == t) else int(x[b, d]) for d in range(pc.num_vars))
            table = joint[index]
            axis_t = int(np.sum(hidden[:t]))
            marg = table.sum(axis=tuple(i for i in range(table.ndim) if i != axis_t))
            np.testing.assert_allclose(cond[b, ti], marg / marg.sum(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("fam,name", CASES)
def test_sample_frequencies_match_probabilities(fam, name):
    _, pc, v = build(fam, name, seed=5)
    X = all_assignments(pc.num_vars, v)
    probs = pc.log_prob(torch.tensor(X)).exp().numpy()
    n = 20000
    s = pc.sample(n, generator=torch.Generator().manual_seed(0)).numpy().astype(int)
    codes = np.ravel_multi_index(s.T, (v,) * pc.num_vars)
    counts = np.bincount(codes, minlength=len(X))
    expected = probs * n
    big = expected >= 5  # pool rare outcomes so the chi-square approximation holds
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    obs, exp = obs[exp > 0], exp[exp > 0]
    assert stats.chisquare(obs, exp).pvalue > 1e-3


@pytest.mark.parametrize("name", ["hclt", "dag"])
def test_conditional_sample_frequencies(name):
    _, pc, v = build("categorical", name, seed=6)
    x = torch.tensor([[2.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[False, True, False, True]])
    n = 20000
    draws = pc.sample_conditional(x.expand(n, -1), mask.expand(n, -1), generator=torch.Generator().manual_seed(1))
    assert torch.equal(draws[:, [0, 2]], x[:, [0, 2]].expand(n, -1))
    grid = torch.tensor([[2.0, a, 1.0, b] for a in range(v) for b in range(v)])
    probs = pc.log_prob(grid).exp().numpy()
    probs /= probs.sum()
    codes = (draws[:, 1] * v + draws[:, 3]).long().numpy()
    counts = np.bincount(codes, minlength=v * v)
    assert stats.chisquare(counts, probs * n).pvalue > 1e-3


@pytest.mark.parametrize("fam,name", CASES)
def test_mpe_attains_the_enumerated_maximum(fam, name):
    root, pc, v = build(fam, name, seed=7)
    X = all_assignments(pc.num_vars, v)
    rng = np.random.default_rng(8)
    x, mask = random_evidence(rng, X, 6, 0.6)
    best = pc.mpe(torch.tensor(x), torch.tensor(mask)).numpy()
    for xi, mi, bi in zip(x, mask, best):
        assert np.array_equal(bi[~mi], xi[~mi])
        candidates = [c for c in X if np.array_equal(c[~mi], xi[~mi])]
        brute = max(reference(root, c, max_product=True) for c in candidates)
        assert reference(root, bi, max_product=True) == pytest.approx(brute, rel=1e-12)
        assert reference(root, xi, mi, max_product=True) == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("fam,name", CASES)
def test_mpe_on_full_evidence_returns_the_evidence(fam, name):
    _, pc, v = build(fam, name)
    X = torch.tensor(all_assignments(pc.num_vars, v)[:20])
    assert torch.equal(pc.mpe(X, torch.zeros_like(X, dtype=torch.bool)), X)


def test_gradients_match_finite_differences():
    _, pc, _ = build("categorical", "dag", seed=9)
    from probcirc.queries import parameters

    params = parameters(pc)
    x = torch.tensor(all_assignments(4, 3)[::5])
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.3

    def f(*ps):
        for layer, p in zip(pc._sum_layers + pc._input_layers, ps):
            if hasattr(layer, "weight"):
                layer.weight = p
            else:
                layer.params = p
        return pc.log_prob(x, mask)

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_marginal_distribution_is_the_enumerated_sum():
    _, pc, v = build("categorical", "pd", seed=10)
    X, joint = enumerate_joint(pc, v)
    marg = pc.marginal([3, 1])
    pairs = torch.tensor(all_assignments(2, v))
    ours = marg.log_prob(pairs).exp().numpy()
    expected = joint.sum(axis=(0, 2)).T.reshape(-1)  # axes (x1, x3) -> order (x3, x1)
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    assert marg.sample(4).shape == (4, 2)


@pytest.mark.parametrize("fam,name", CASES)
def test_condition_is_the_enumerated_posterior(fam, name):
    """pc.condition(x, mask): log p(x_missing | x_observed) equals joint / evidence by enumeration, and sums to 1."""
    root, pc, v = build(fam, name, seed=7)
    X, joint = enumerate_joint(pc, v)
    rng = np.random.default_rng(8)
    x, mask = random_evidence(rng, X, 6, 0.5)
    mask[:, 1] = True  # something to infer in every sample
    post = pc.condition(torch.tensor(x), torch.tensor(mask))
    assert len(post) == 6
    for b in range(6):
        evidence = joint[evidence_slice(x[b], mask[b])].sum()
        completions = np.array([c for c in X if all(c[d] == x[b, d] for d in range(pc.num_vars) if not mask[b, d])])
        noise = X[rng.integers(0, len(X), len(completions))]  # observed entries of the query are ignored
        query = np.where(mask[b], completions, noise)
        batch = np.repeat(x[b : b + 1], len(completions), 0)
        sub = pc.condition(torch.tensor(batch), torch.tensor(np.repeat(mask[b : b + 1], len(completions), 0)))
        got = sub.log_prob(torch.tensor(query)).exp().numpy()
        want = np.array([joint[tuple(int(c) for c in comp)] for comp in completions]) / evidence
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
        assert abs(got.sum() - 1.0) < 1e-10
    draws = post.sample(generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws[torch.tensor(~mask)], torch.tensor(x, dtype=draws.dtype)[torch.tensor(~mask)])
    assert post.marginals([1]).shape == (6, 1, v)
    with pytest.raises(ValueError, match="needs a mask"):
        pc.condition(torch.tensor(x), None)


@pytest.mark.parametrize("fam,name", CASES)
def test_posterior_and_conditional_moments_are_the_enumerated_ones(fam, name):
    """Means and variances of missing entries (each given its sample's evidence)
    and of forced targets, by enumeration."""
    from probcirc.queries import conditional_moments

    root, pc, v = build(fam, name, seed=9)
    X, joint = enumerate_joint(pc, v)
    rng = np.random.default_rng(10)
    x, mask = random_evidence(rng, X, 5, 0.5)
    mask[:, 0] = True
    post = pc.condition(torch.tensor(x), torch.tensor(mask))
    mean, var = post.mean.numpy(), post.variance.numpy()
    values = np.arange(v)
    for b in range(5):
        table = joint[evidence_slice(x[b], mask[b])]
        hidden = np.flatnonzero(mask[b])
        for axis, d in enumerate(hidden):
            p = table.sum(axis=tuple(i for i in range(table.ndim) if i != axis))
            p = p / p.sum()
            np.testing.assert_allclose(mean[b, d], p @ values, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(var[b, d], p @ values**2 - (p @ values) ** 2, rtol=1e-9, atol=1e-12)
        observed = ~mask[b]
        np.testing.assert_array_equal(mean[b, observed], x[b, observed])
        assert (var[b, observed] == 0).all()
    cond = pc.conditional(torch.tensor(x), torch.tensor(mask), [0, 2]).numpy()  # targets summed out for everyone
    m, s2 = (t.numpy() for t in conditional_moments(pc, torch.tensor(x), torch.tensor(mask), [0, 2]))
    np.testing.assert_allclose(m, cond @ values, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s2, cond @ values**2 - (cond @ values) ** 2, rtol=1e-9, atol=1e-12)


def test_gaussian_posterior_moments_match_the_closed_form():
    """A mixture of products of Gaussians: E[x1 | x0] and Var[x1 | x0] from the component posteriors, by hand."""
    import probcirc
    from probcirc.inputs import Gaussian
    from probcirc.nodes import inputs, multiply, summate

    mu0, s0 = np.array([-1.0, 0.5, 2.0]), np.array([0.7, 1.0, 0.4])
    mu1, s1 = np.array([3.0, -2.0, 0.5]), np.array([1.0, 0.3, 2.0])
    w = np.array([0.2, 0.5, 0.3])
    a = inputs(0, 3, Gaussian(), params=torch.tensor(np.stack([mu0, s0], 1)))
    b = inputs(1, 3, Gaussian(), params=torch.tensor(np.stack([mu1, s1], 1)))
    pc = probcirc.compile(summate(multiply(a, b), num_nodes=1, params=torch.tensor(w)[None]), dtype=torch.float64)
    x0 = np.array([-1.5, 0.0, 0.7, 2.2])
    x = torch.tensor(np.stack([x0, np.full(4, np.nan)], 1))
    post = pc.condition(x, torch.isnan(x))
    lik = stats.norm.pdf(x0[:, None], mu0, s0) * w
    r = lik / lik.sum(1, keepdims=True)
    want_mean = r @ mu1
    want_var = r @ (s1**2 + mu1**2) - want_mean**2
    np.testing.assert_allclose(post.mean[:, 1].numpy(), want_mean, rtol=1e-10)
    np.testing.assert_allclose(post.variance[:, 1].numpy(), want_var, rtol=1e-9)
    np.testing.assert_allclose(post.mean[:, 0].numpy(), x0)
