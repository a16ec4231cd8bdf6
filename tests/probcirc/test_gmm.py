"""GaussianMixture against independent references: scipy, textbook formulas, quadrature."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import multivariate_normal as mvn

from probcirc import GaussianMixture


def random_gmm(k=3, d=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(k, d, d, generator=g, dtype=dtype)
    cov = a @ a.mT + 0.5 * torch.eye(d, dtype=dtype)
    w = torch.softmax(torch.randn(k, generator=g, dtype=dtype), 0)
    mu = 2 * torch.randn(k, d, generator=g, dtype=dtype)
    return GaussianMixture(w, mu, cov), (w.numpy(), mu.numpy(), cov.numpy())


def scipy_log_prob(params, x, dims=None):
    w, mu, cov = params
    dims = np.arange(mu.shape[1]) if dims is None else np.asarray(dims)
    if len(dims) == 0:
        return 0.0
    dens = sum(w[k] * mvn(mu[k][dims], cov[k][np.ix_(dims, dims)]).pdf(x[dims]) for k in range(len(w)))
    return float(np.log(dens))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_log_prob_matches_scipy(dtype, tol):
    gmm, params = random_gmm(dtype=dtype)
    x = torch.randn(20, 4, dtype=dtype)
    ours = gmm.log_prob(x)
    assert ours.dtype == dtype
    ref = [scipy_log_prob(params, xi) for xi in x.double().numpy()]
    np.testing.assert_allclose(ours.double().numpy(), ref, rtol=tol, atol=tol)


def test_masked_log_prob_matches_sub_mixture():
    gmm, params = random_gmm()
    x = torch.randn(30, 4, dtype=torch.float64)
    mask = torch.rand(30, 4, generator=torch.Generator().manual_seed(1)) < 0.5
    x_nan = x.masked_fill(mask, float("nan"))
    ours = gmm.log_prob(x_nan, mask)
    ref = [scipy_log_prob(params, xi, np.flatnonzero(~mi)) for xi, mi in zip(x.numpy(), mask.numpy())]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_marginal_is_sub_mixture():
    gmm, params = random_gmm()
    marg = gmm.marginal([3, 1])
    x = torch.randn(10, 2, dtype=torch.float64)
    full = np.zeros((10, 4))
    full[:, [3, 1]] = x.numpy()
    ref = [scipy_log_prob(params, xi, [3, 1]) for xi in full]
    np.testing.assert_allclose(marg.log_prob(x).numpy(), ref, rtol=1e-10)


def test_condition_matches_textbook_formulas():
    gmm, (w, mu, cov) = random_gmm(k=2, d=5)
    x = torch.randn(6, 5, dtype=torch.float64)
    mask = torch.tensor([[False, True, False, True, True]] * 3 + [[True, False, False, False, False]] * 3)
    post = gmm.condition(x, mask)
    for i in range(6):
        m, o = np.flatnonzero(mask[i]), np.flatnonzero(~mask[i])
        xo = x[i].numpy()[o]
        logw = []
        for k in range(2):
            s_oo_inv = np.linalg.inv(cov[k][np.ix_(o, o)])
            s_mo = cov[k][np.ix_(m, o)]
            mean = mu[k][m] + s_mo @ s_oo_inv @ (xo - mu[k][o])
            c = cov[k][np.ix_(m, m)] - s_mo @ s_oo_inv @ s_mo.T
            np.testing.assert_allclose(post.means[i, k, m].numpy(), mean, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(post.covariances[i, k][np.ix_(m, m)].numpy(), c, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(post.means[i, k, o].numpy(), xo)
            logw.append(np.log(w[k]) + mvn(mu[k][o], cov[k][np.ix_(o, o)]).logpdf(xo))
        logw = np.array(logw)
        np.testing.assert_allclose(post.weights[i].numpy(), np.exp(logw - np.logaddexp.reduce(logw)), rtol=1e-9)


def test_condition_matches_numerical_integration_2d():
    gmm, params = random_gmm(k=3, d=2, seed=3)
    x0 = 0.7
    post = gmm.condition(torch.tensor([[x0, 0.0]], dtype=torch.float64), torch.tensor([[False, True]]))[0]
    w, mu, cov = params

    def joint(x1):
        return sum(w[k] * mvn(mu[k], cov[k]).pdf([x0, x1]) for k in range(3))

    z, _ = integrate.quad(joint, -np.inf, np.inf, epsabs=1e-13)
    grid = np.linspace(-4, 4, 17)
    ref = np.log([joint(t) / z for t in grid])
    np.testing.assert_allclose(post.log_prob(torch.tensor(grid)[:, None]).numpy(), ref, rtol=1e-7, atol=1e-8)
    mean_ref, _ = integrate.quad(lambda t: t * joint(t) / z, -np.inf, np.inf)
    assert abs(float((post.weights * post.means[:, 0]).sum()) - mean_ref) < 1e-7


def test_sample_moments_match_mixture():
    torch.manual_seed(0)
    gmm, (w, mu, cov) = random_gmm(k=2, d=2)
    s = gmm.sample(200_000)
    mean = (w[:, None] * mu).sum(0)
    second = sum(w[k] * (cov[k] + np.outer(mu[k], mu[k])) for k in range(2)) - np.outer(mean, mean)
    np.testing.assert_allclose(s.mean(0).numpy(), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(s.numpy().T), second, rtol=0.03, atol=0.05)


def test_conditional_sample_keeps_evidence():
    gmm, _ = random_gmm()
    x = torch.randn(50, 4, dtype=torch.float64)
    mask = torch.rand(50, 4) < 0.5
    s = gmm.condition(x, mask).sample()
    assert torch.equal(s[~mask], x[~mask])
    assert torch.isfinite(s).all()


def test_fit_recovers_separated_mixture():
    g = torch.Generator().manual_seed(0)
    true_mu = torch.tensor([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]], dtype=torch.float64)
    true_cov = torch.tensor(
        [[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]], [[1.5, -0.3], [-0.3, 0.6]]], dtype=torch.float64
    )
    true_w = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    torch.manual_seed(1)
    X = GaussianMixture(true_w, true_mu, true_cov).sample(6000)
    X[torch.rand(X.shape, generator=g) < 0.1] = float("nan")  # exact handling of missing entries
    X[X.isnan().all(1), 0] = 0.0
    fit = GaussianMixture.fit(X, 3, progress=False)
    order = [int(torch.cdist(true_mu[j : j + 1], fit.means).argmin()) for j in range(3)]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(fit.means[order], true_mu, atol=0.1, rtol=0)
    torch.testing.assert_close(fit.weights[order], true_w, atol=0.02, rtol=0)
    torch.testing.assert_close(fit.covariances[order], true_cov, atol=0.15, rtol=0)


@pytest.mark.parametrize(
    "weights,means,covs,match",
    [
        ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "sum to 1"),
        ([1.5, -0.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "non-negative"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "positive definite"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([0.5, 0.5], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]], "weights must have shape"),
        ([1.0], [[0.0, 0.0]], [[[1.0]]], "covariances must have shape"),
    ],
)
def test_bad_parameters_name_the_problem(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(torch.tensor(weights), torch.tensor(means), torch.tensor(covs))


def test_bad_queries_name_the_problem():
    gmm, _ = random_gmm()
    with pytest.raises(ValueError, match="event dimension 4"):
        gmm.log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="mask has shape"):
        gmm.log_prob(torch.zeros(3, 4), torch.zeros(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="torch.bool"):
        gmm.log_prob(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="distinct indices"):
        gmm.marginal([0, 7])


def test_batched_mixture_matches_unbatched():
    gmm, _ = random_gmm()
    batched = GaussianMixture(
        gmm.weights.expand(5, -1), gmm.means.expand(5, -1, -1), gmm.covariances.expand(5, -1, -1, -1)
    )
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    mask = torch.rand(2, 5, 4) < 0.4
    torch.testing.assert_close(batched.log_prob(x, mask), gmm.log_prob(x, mask))
    assert batched.sample(3).shape == (3, 5, 4)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 3),
    d=st.integers(1, 4),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_property_masked_log_prob_equals_marginal(k, d, n, seed):
    gmm, _ = random_gmm(k, d, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    mask = torch.rand(n, d, generator=g) < 0.5
    lp = gmm.log_prob(x, mask)
    assert lp.shape == (n,)
    for i in range(n):
        obs = (~mask[i]).nonzero().squeeze(-1).tolist()
        expect = 0.0 if not obs else float(gmm.marginal(obs).log_prob(x[i, obs]))
        assert abs(float(lp[i]) - expect) < 1e-9
    if bool(mask.any()):
        post = gmm.condition(x, mask)
        assert torch.equal(post.mean[~mask], x[~mask])
        torch.testing.assert_close(post.weights.sum(-1), torch.ones(n, dtype=torch.float64))


def test_conditional_mixture_log_prob_variance_and_seeded_samples():
    """log p(x_m | x_o) = log p(x) - log p(x_o); variances match seeded draws; a generator makes draws repeatable."""
    gmm, _ = random_gmm(k=3, d=4)
    x = torch.randn(6, 4, dtype=torch.float64)
    mask = torch.tensor(
        [[False, True, False, True]] * 2 + [[True, False, False, False]] * 2 + [[False, True, True, True]] * 2
    )
    post = gmm.condition(x, mask)
    query = torch.randn(6, 4, dtype=torch.float64)
    full = torch.where(mask, query, x)
    want = gmm.log_prob(full) - gmm.log_prob(x, mask)
    torch.testing.assert_close(post.log_prob(query), want, rtol=1e-10, atol=1e-10)
    reps = 20000
    big = gmm.condition(x.repeat(reps, 1), mask.repeat(reps, 1))
    draws = big.sample(generator=torch.Generator().manual_seed(0)).reshape(reps, 6, 4)
    var = post.variance
    assert (var[~mask] == 0).all()
    np.testing.assert_allclose(draws.var(0)[mask].numpy(), var[mask].numpy(), rtol=0.06)
    again = big.sample(generator=torch.Generator().manual_seed(0)).reshape(reps, 6, 4)
    assert torch.equal(draws, again)


def test_empty_batch_gives_empty_log_prob():
    gmm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.randn(2, 3), torch.eye(3).expand(2, 3, 3))
    assert gmm.log_prob(torch.zeros(0, 3)).shape == (0,)
    assert gmm.log_prob(torch.zeros(0, 4, 3)).shape == (0, 4)
