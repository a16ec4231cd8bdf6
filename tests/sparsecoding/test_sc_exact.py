"""The truncated E-step against brute-force enumeration, and each model's log-joint against direct formulas.

Every reference here is computed independently of the engine: dense Gaussian
densities (scipy), explicit loops over all states, numerical integration.
"""

import itertools

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import logsumexp
from scipy.stats import multivariate_normal as mvn

from probcirc.distribution import Distribution
from sparsecoding import BSC, DSC, GSC, MCA, MMCA, TSC

H, D = 4, 5
NAMES = ["bsc", "tsc", "dsc", "mca", "mmca", "gsc", "gsc_diag"]


def make(name, rng, Hprime=H, gamma=H):
    W = rng.normal(size=(D, H))
    p = dict(W=W, pi=0.3, sigma=0.7)
    if name == "bsc":
        return BSC(H, Hprime, gamma, **p)
    if name == "tsc":
        return TSC(H, Hprime, gamma, **p)
    if name == "dsc":
        return DSC(H, Hprime, gamma, values=(0, 1, 2.5), W=W, prior=[0.6, 0.3, 0.1], sigma=0.7)
    if name == "mca":
        return MCA(H, Hprime, gamma, **{**p, "W": np.abs(W)})
    if name == "mmca":
        return MMCA(H, Hprime, gamma, **p)
    A = rng.normal(size=(H, H))
    Psi = A @ A.T + 0.5 * np.eye(H) if name == "gsc" else np.diag(rng.uniform(0.3, 2.0, size=H))
    return GSC(H, Hprime, gamma, **p, mu=rng.normal(size=H), Psi=Psi)


def prior_table(m):
    vals = np.concatenate([[0.0], m.nonzero_values()])
    if isinstance(m, DSC):
        probs = np.asarray(m.prior)
    elif isinstance(m, TSC):
        probs = np.array([1 - m.pi, m.pi / 2, m.pi / 2])
    else:
        probs = np.array([1 - m.pi, m.pi])
    return vals, probs


def direct_log_lik(m, s, Y):
    """log p(y | s) from the generative model's definition, with a dense Gaussian."""
    W, s2 = m.W, float(m.sigma) ** 2
    if isinstance(m, GSC):
        a = s != 0
        mean = W[:, a] @ m.mu[a]
        C = s2 * np.eye(D) + W[:, a] @ m.Psi[np.ix_(a, a)] @ W[:, a].T
        return mvn(mean, C).logpdf(Y)
    contrib = s[:, None] * W.T  # (H, D)
    if isinstance(m, MMCA):
        mean = np.zeros(D)
        for h in range(H):  # first cause of largest magnitude wins
            mean = np.where(np.abs(contrib[h]) > np.abs(mean), contrib[h], mean)
    elif isinstance(m, MCA):
        mean = np.maximum(contrib.max(axis=0), 0.0)
    else:
        mean = W @ s
    return mvn(mean, s2 * np.eye(D)).logpdf(Y)


def brute_force(m, Y):
    vals, probs = prior_table(m)
    states = np.array(list(itertools.product(range(len(vals)), repeat=H)))
    S = vals[states]
    lj = np.stack([direct_log_lik(m, s, Y) + np.log(probs[st]).sum() for s, st in zip(S, states)], axis=1)
    return S, lj


@pytest.mark.parametrize("name", NAMES)
def test_full_truncation_equals_exact_posterior(name):
    rng = np.random.default_rng(1)
    m = make(name, rng)
    Y = rng.normal(size=(9, D)) * 2
    S, lj = brute_force(m, Y)
    logZ = logsumexp(lj, axis=1)
    post = np.exp(lj - logZ[:, None])
    et = m.engine()
    assert et.n_states == len(S)
    blocks = et.blocks(m.params, Y)
    np.testing.assert_allclose(et.log_marginal(blocks), logZ, rtol=0, atol=1e-10)
    # posterior marginals <s_h> and the full posterior over states
    if not name.startswith("gsc"):
        np.testing.assert_allclose(m.transform(Y), post @ S, atol=1e-10)
    q = et.posterior(blocks, 1.0)
    engine_states = np.concatenate([np.broadcast_to(b.vals, (len(Y),) + b.vals.shape) if b.idx is None else
                                    np.stack([_place(b.vals, i, H) for i in b.idx]) for b in blocks], axis=1)
    qq = np.concatenate(q, axis=1)
    for n in range(len(Y)):
        lookup = {tuple(s): p for s, p in zip(engine_states[n], qq[n])}
        np.testing.assert_allclose([lookup[tuple(s)] for s in S], post[n], atol=1e-12)
    # the Distribution face: log_prob is the same (here exact) log-likelihood
    assert isinstance(m, Distribution)
    lp = m.log_prob(torch.as_tensor(Y))
    np.testing.assert_allclose(lp.numpy(), logZ, atol=1e-10)


def _place(vals, idx, H):
    out = np.zeros((len(vals), H))
    out[:, idx] = vals
    return out


@pytest.mark.parametrize("name", NAMES)
def test_truncated_posterior_is_exact_posterior_restricted_to_the_set(name):
    rng = np.random.default_rng(2)
    m = make(name, rng, Hprime=3, gamma=2)
    Y = rng.normal(size=(6, D)) * 2
    S, lj = brute_force(m, Y)
    et = m.engine()
    blocks = et.blocks(m.params, Y)
    T = 1.7
    q = np.concatenate(et.posterior(blocks, T), axis=1)
    lz = et.log_marginal(blocks)
    for n in range(len(Y)):
        states = [_place(b.vals, np.arange(H) if b.idx is None else b.idx[n], H) for b in blocks]
        states = np.concatenate(states)
        assert len({tuple(s) for s in states}) == len(states)  # no state twice
        assert len(states) == 1 + len(et.values) * H + len(et.multi_vals)
        # every multi-cause state uses only the candidates, at most gamma of them
        ids = [np.nonzero((S == s).all(axis=1))[0][0] for s in states]
        ref = lj[n, ids] / T
        np.testing.assert_allclose(q[n], np.exp(ref - logsumexp(ref)), atol=1e-12)
        np.testing.assert_allclose(lz[n], logsumexp(lj[n, ids]), atol=1e-10)
        assert lz[n] <= logsumexp(lj[n]) + 1e-12  # a lower bound of the exact log-likelihood


@pytest.mark.parametrize("name", NAMES)
def test_log_lik_closed_form_per_state(name):
    rng = np.random.default_rng(3)
    m = make(name, rng)
    Y = rng.normal(size=(4, D)) * 2
    vals = np.concatenate([[0.0], m.nonzero_values()])
    S = vals[rng.integers(len(vals), size=(12, H))]
    ll = m.log_lik(m.params, Y, None, None, S)
    ll = np.broadcast_to(ll, (len(Y), len(S)))
    ref = np.stack([direct_log_lik(m, s, Y) for s in S], axis=1)
    np.testing.assert_allclose(ll, ref, atol=1e-10)
    # the same states through per-point candidate slots
    idx = np.tile(rng.permutation(H), (len(Y), 1))
    ll2 = m.log_lik(m.params, Y, None, idx, S[:, idx[0]])  # slot j holds cause idx[n, j]
    np.testing.assert_allclose(np.broadcast_to(ll2, ll.shape), ref, atol=1e-10)


def test_gsc_closed_form_vs_numerical_integration():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(3, 2))
    mu = np.array([0.5, -1.0])
    Psi = np.array([[0.8, 0.3], [0.3, 0.5]])
    sigma = 0.9
    m = GSC(2, 2, 2, W=W, pi=0.4, sigma=sigma, mu=mu, Psi=Psi)
    y = rng.normal(size=3)

    def lik(z):  # p(y | s, z) with the slab values z on the active causes
        return mvn(W @ z, sigma**2 * np.eye(3)).pdf(y)

    # one active cause: integrate z_1 numerically
    f1 = lambda z: lik(np.array([z, 0.0])) * mvn(mu[0], Psi[0, 0]).pdf(z)  # noqa: E731
    ref1 = integrate.quad(f1, -15, 15, epsabs=1e-13)[0]
    # two active causes: 2-D trapezoid rule on a fine grid (spectrally accurate for this smooth integrand)
    g = np.linspace(-9, 9, 1201)
    Z1, Z2 = np.meshgrid(g, g, indexing="ij")
    Z = np.stack([Z1.ravel(), Z2.ravel()], axis=1)
    r = y[None] - Z @ W.T
    lik2 = np.exp(-0.5 * (r**2).sum(1) / sigma**2) / (2 * np.pi * sigma**2) ** 1.5
    dz = Z - mu
    Pinv = np.linalg.inv(Psi)
    slab = np.exp(-0.5 * np.einsum("ni,ij,nj->n", dz, Pinv, dz)) / (2 * np.pi * np.sqrt(np.linalg.det(Psi)))
    f2 = (lik2 * slab).reshape(Z1.shape)
    ref2 = integrate.trapezoid(integrate.trapezoid(f2, g, axis=1), g)
    S = np.array([[1.0, 0.0], [1.0, 1.0]])
    ll = m.log_lik(m.params, y[None], None, None, S)[0]
    np.testing.assert_allclose(np.exp(ll), [ref1, ref2], rtol=1e-6)
    # posterior mean of the slab given s=(1,1): numerical first moments
    num = [integrate.trapezoid(integrate.trapezoid(f2 * Zk, g, axis=1), g) for Zk in (Z1, Z2)]
    kappa = m._gauss(m.params, y[None], None, None, S)[1][0, 1]
    np.testing.assert_allclose(kappa, np.array(num) / ref2, rtol=1e-6, atol=1e-9)

@pytest.mark.parametrize("name", NAMES)
def test_masked_log_prob_drops_missing_dimensions(name):
    rng = np.random.default_rng(5)
    m = make(name, rng)
    Y = rng.normal(size=(5, D)) * 2
    mask = np.zeros((5, D), dtype=bool)
    mask[:, [1, 3]] = True
    mask[0, 0] = True  # a different pattern for one row
    x = torch.as_tensor(np.where(mask, np.nan, Y))
    lp = m.log_prob(x, torch.as_tensor(mask)).numpy()
    for n in range(5):
        obs = ~mask[n]
        # the same model on the observed pixels only: drop those rows of W
        sub = dict(m.params)
        sub["W"] = m.W[obs]
        kw = {"values": tuple(m.values)} if isinstance(m, DSC) else {}
        small = type(m)(H, H, H, **kw, **sub)
        np.testing.assert_allclose(lp[n], small.log_prob(torch.as_tensor(Y[n, obs][None])).numpy()[0], atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_distribution_face(name):
    rng = np.random.default_rng(6)
    m = make(name, rng, Hprime=3, gamma=2)
    torch.manual_seed(0)
    x = m.sample((3, 2))
    assert x.shape == (3, 2, D) and tuple(m.event_shape) == (D,)
    lp = m.log_prob(x)
    assert lp.shape == (3, 2) and torch.isfinite(lp).all()
    torch.manual_seed(0)
    assert torch.equal(m.sample((3, 2)), x)  # seeded by torch's RNG
