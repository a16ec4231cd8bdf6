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
    p = {"W": W, "pi": 0.3, "sigma": 0.7, "Hprime": Hprime, "gamma": gamma}
    if name == "bsc":
        return BSC.from_params(**p)
    if name == "tsc":
        return TSC.from_params(**p)
    if name == "dsc":
        return DSC.from_params(values=(0, 1, 2.5), W=W, prior=[0.6, 0.3, 0.1], sigma=0.7, Hprime=Hprime, gamma=gamma)
    if name == "mca":
        return MCA.from_params(**{**p, "W": np.abs(W)})
    if name == "mmca":
        return MMCA.from_params(**p)
    A = rng.normal(size=(H, H))
    Psi = A @ A.T + 0.5 * np.eye(H) if name == "gsc" else np.diag(rng.uniform(0.3, 2.0, size=H))
    return GSC.from_params(**p, mu=rng.normal(size=H), Psi=Psi)


def prior_table(m):
    vals = np.concatenate([[0.0], m.nonzero_values()])
    if isinstance(m, DSC):
        probs = m.prior_
    elif isinstance(m, TSC):
        probs = np.array([1 - m.pi_, m.pi_ / 2, m.pi_ / 2])
    else:
        probs = np.array([1 - m.pi_, m.pi_])
    return vals, probs


def direct_log_lik(m, s, Y):
    """log p(y | s) from the generative model's definition, with a dense Gaussian."""
    W, s2 = m.components_.T, m.sigma_**2
    D = W.shape[0]
    if isinstance(m, GSC):
        a = s != 0
        mean = W[:, a] @ m.mu_[a]
        C = s2 * np.eye(D) + W[:, a] @ m.Psi_[np.ix_(a, a)] @ W[:, a].T
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
    lj = np.stack(
        [np.atleast_1d(direct_log_lik(m, s, Y)) + np.log(probs[st]).sum() for s, st in zip(S, states)], axis=1
    )
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
    blocks = et.blocks(m.params_, Y)
    np.testing.assert_allclose(et.log_marginal(blocks), logZ, rtol=0, atol=1e-10)
    # posterior marginals <s_h> and the full posterior over states
    if not name.startswith("gsc"):
        np.testing.assert_allclose(m.transform(Y), post @ S, atol=1e-10)
    q = et.posterior(blocks, 1.0)
    engine_states = np.concatenate(
        [
            np.broadcast_to(b.vals, (len(Y),) + b.vals.shape)
            if b.idx is None
            else np.stack([_place(b.vals, i, H) for i in b.idx])
            for b in blocks
        ],
        axis=1,
    )
    qq = np.concatenate(q, axis=1)
    for n in range(len(Y)):
        lookup = {tuple(s): p for s, p in zip(engine_states[n], qq[n])}
        np.testing.assert_allclose([lookup[tuple(s)] for s in S], post[n], atol=1e-12)
    # the Distribution face: log_prob is exact, and so is the bound with the full state set
    assert isinstance(m, Distribution)
    np.testing.assert_allclose(m.log_prob(torch.as_tensor(Y)).numpy(), logZ, atol=1e-10)
    np.testing.assert_allclose(m.log_prob_lower_bound(torch.as_tensor(Y)).numpy(), logZ, atol=1e-10)


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
    blocks = et.blocks(m.params_, Y)
    T = 1.7
    q = np.concatenate(et.posterior(blocks, T), axis=1)
    lz = et.log_marginal(blocks)
    for n in range(len(Y)):
        states = [_place(b.vals, np.arange(H) if b.idx is None else b.idx[n], H) for b in blocks]
        states = np.concatenate(states)
        assert len({tuple(s) for s in states}) == len(states)  # no state twice
        assert len(states) == 1 + len(et.values) * H + len(et.multi_vals)
        # every multi-cause state uses only the candidates, at most gamma of them
        ids = [np.nonzero((s == S).all(axis=1))[0][0] for s in states]
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
    ll = m.log_lik(m.params_, Y, None, None, S)
    ll = np.broadcast_to(ll, (len(Y), len(S)))
    ref = np.stack([direct_log_lik(m, s, Y) for s in S], axis=1)
    np.testing.assert_allclose(ll, ref, atol=1e-10)
    # the same states through per-point candidate slots
    idx = np.tile(rng.permutation(H), (len(Y), 1))
    ll2 = m.log_lik(m.params_, Y, None, idx, S[:, idx[0]])  # slot j holds cause idx[n, j]
    np.testing.assert_allclose(np.broadcast_to(ll2, ll.shape), ref, atol=1e-10)


def test_gsc_closed_form_vs_numerical_integration():
    rng = np.random.default_rng(4)
    W = rng.normal(size=(3, 2))
    mu = np.array([0.5, -1.0])
    Psi = np.array([[0.8, 0.3], [0.3, 0.5]])
    sigma = 0.9
    m = GSC.from_params(W=W, pi=0.4, sigma=sigma, mu=mu, Psi=Psi)
    y = rng.normal(size=3)

    def lik(z):  # p(y | s, z) with the slab values z on the active causes
        return mvn(W @ z, sigma**2 * np.eye(3)).pdf(y)

    # one active cause: integrate z_1 numerically
    def f1(z):
        return lik(np.array([z, 0.0])) * mvn(mu[0], Psi[0, 0]).pdf(z)

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
    ll = m.log_lik(m.params_, y[None], None, None, S)[0]
    np.testing.assert_allclose(np.exp(ll), [ref1, ref2], rtol=1e-6)
    # posterior mean of the slab given s=(1,1): numerical first moments
    num = [integrate.trapezoid(integrate.trapezoid(f2 * Zk, g, axis=1), g) for Zk in (Z1, Z2)]
    kappa = m._gauss(m.params_, y[None], None, None, S)[1][0, 1]
    np.testing.assert_allclose(kappa, np.array(num) / ref2, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bound", [False, True])
def test_masked_log_prob_drops_missing_dimensions(name, bound):
    rng = np.random.default_rng(5)
    m = make(name, rng)
    Y = rng.normal(size=(5, D)) * 2
    mask = np.zeros((5, D), dtype=bool)
    mask[:, [1, 3]] = True
    mask[0, 0] = True  # a different pattern for one row
    x = torch.as_tensor(np.where(mask, np.nan, Y))
    query = m.log_prob_lower_bound if bound else m.log_prob
    lp = query(x, torch.as_tensor(mask)).numpy()
    for n in range(5):
        obs = ~mask[n]
        # the same model on the observed pixels only: drop those rows of W
        sub = {**m.params_, "W": m.params_["W"][obs]}
        kw = {"values": m.values} if isinstance(m, DSC) else {}
        small = type(m).from_params(**kw, **sub)
        np.testing.assert_allclose(lp[n], small.log_prob(torch.as_tensor(Y[n, obs][None])).numpy()[0], atol=1e-9)
    with pytest.raises(ValueError, match="mask"):  # NaN is missing only where the mask says so
        query(x)


@pytest.mark.parametrize("name", NAMES)
def test_exact_log_prob_against_brute_force_where_truncation_is_only_a_bound(name):
    # H' = 3, gamma = 2 < H: the truncated value is a strict lower bound; log_prob is the exact sum over all states
    rng = np.random.default_rng(7)
    m = make(name, rng, Hprime=3, gamma=2)
    Y = rng.normal(size=(7, D)) * 2
    exact = logsumexp(brute_force(m, Y)[1], axis=1)
    lp = m.log_prob(torch.as_tensor(Y))
    assert lp.dtype == torch.float64
    np.testing.assert_allclose(lp.numpy(), exact, rtol=0, atol=1e-10)
    bound = m.log_prob_lower_bound(torch.as_tensor(Y)).numpy()
    assert np.all(bound <= exact + 1e-12) and np.any(bound < exact - 1e-6)
    # tiny chunks: enumeration per chunk gives the same values
    np.testing.assert_allclose(m.set_params(chunk_size=2).log_prob(torch.as_tensor(Y)).numpy(), exact, atol=1e-10)


def test_exact_log_prob_normalises_in_one_dimension():
    # D = 1, H = 2: the density integrates to one over the real line
    m = BSC.from_params(W=np.array([[1.5, -2.0]]), pi=0.3, sigma=0.8)
    grid = torch.linspace(-12.0, 12.0, 24001, dtype=torch.float64)[:, None]
    dens = m.log_prob(grid).exp().numpy()
    assert integrate.trapezoid(dens, grid[:, 0].numpy()) == pytest.approx(1.0, abs=1e-9)


def test_log_prob_refuses_state_spaces_it_cannot_enumerate():
    from probmod.errors import UsageError
    from sparsecoding import EXACT_STATES_LIMIT, ExactIntractableError

    assert EXACT_STATES_LIMIT == 2**12
    rng = np.random.default_rng(8)
    BSC.from_params(W=rng.normal(size=(3, 12)), pi=0.1, sigma=1.0).log_prob(torch.zeros(1, 3))  # 2**12 states
    for m in (
        BSC.from_params(W=rng.normal(size=(3, 13)), pi=0.1, sigma=1.0, Hprime=4, gamma=2),
        TSC.from_params(W=rng.normal(size=(3, 8)), pi=0.1, sigma=1.0, Hprime=4, gamma=2),
    ):  # 2**13, 3**8
        with pytest.raises(ExactIntractableError, match="log_prob_lower_bound") as err:
            m.log_prob(torch.zeros(1, 3))
        assert isinstance(err.value, UsageError) and isinstance(err.value, NotImplementedError)
        assert m.log_prob_lower_bound(torch.zeros(2, 3)).shape == (2,)


@pytest.mark.parametrize("name", NAMES)
def test_distribution_face(name):
    rng = np.random.default_rng(6)
    m = make(name, rng, Hprime=3, gamma=2)
    before = torch.get_rng_state()
    x = m.sample((3, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), before)  # the global generator was not touched
    assert x.shape == (3, 2, D) and tuple(m.event_shape) == (D,)
    assert torch.equal(m.sample((3, 2), generator=torch.Generator().manual_seed(0)), x)
    assert not torch.equal(m.sample((3, 2), generator=torch.Generator().manual_seed(1)), x)
    lp = m.log_prob(x)
    assert lp.shape == (3, 2) and torch.isfinite(lp).all()
    torch.manual_seed(0)
    y = m.sample(4)
    torch.manual_seed(0)
    assert torch.equal(m.sample(4), y)  # without a generator, torch's global one seeds the draw


@pytest.mark.parametrize("name", ["bsc", "tsc", "dsc", "mca", "gsc"])
def test_samples_follow_the_exact_density(name):
    # D = 1: the empirical CDF of 20000 samples matches the CDF integrated from the exact log_prob
    rng = np.random.default_rng(9)
    W = np.abs(rng.normal(size=(1, 3))) + 0.5
    kw = {"W": W, "pi": 0.4, "sigma": 0.6}
    m = {
        "bsc": lambda: BSC.from_params(**kw),
        "tsc": lambda: TSC.from_params(**kw),
        "dsc": lambda: DSC.from_params(values=(0, 1, 2), W=W, prior=[0.5, 0.3, 0.2], sigma=0.6),
        "mca": lambda: MCA.from_params(**kw),
        "gsc": lambda: GSC.from_params(**kw, mu=np.ones(3), Psi=0.2 * np.eye(3)),
    }[name]()
    x = m.sample(20000, generator=torch.Generator().manual_seed(3))[:, 0].numpy()
    grid = np.linspace(x.min() - 3, x.max() + 3, 6001)
    cdf = integrate.cumulative_trapezoid(m.log_prob(torch.as_tensor(grid[:, None])).exp().numpy(), grid, initial=0)
    emp = np.searchsorted(np.sort(x), grid, side="right") / len(x)
    assert np.max(np.abs(cdf - emp)) < 0.015  # Kolmogorov-Smirnov: 1.36/sqrt(20000) = 0.0096 at the 5% level
