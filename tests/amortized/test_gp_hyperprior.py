"""The GP-hyperprior reference against textbook GP formulas integrated over ℓ by adaptive quadrature."""

import math

import numpy as np
import torch
from scipy import integrate, stats

from amortized.tasks import GPHyperprior
from probcirc import GaussianMixture


def _textbook(x, y, ell, task):
    """Standard GP predictive at 0 and the marginal likelihood, for an N(0, signal_var) prior on f*."""
    K = task.signal_var * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / ell**2) + task.noise_var * np.eye(len(x))
    k = task.signal_var * np.exp(-0.5 * x**2 / ell**2)
    sol = np.linalg.solve(K, np.stack([y, k], -1))
    mean, var = k @ sol[:, 0], task.signal_var - k @ sol[:, 1]
    ev = stats.multivariate_normal(np.zeros(len(x)), K).pdf(y)
    return mean, var, ev


def test_reference_matches_adaptive_quadrature(gen):
    task = GPHyperprior(n_components=1, max_obs=5, min_obs=5, n_quad=256)
    p = task.sample(1, gen)
    prior = GaussianMixture(
        torch.ones(1, 1, dtype=torch.float64),
        torch.zeros(1, 1, 1, dtype=torch.float64),
        task.signal_var * torch.ones(1, 1, 1, 1, dtype=torch.float64),
    )
    post = task.posterior(prior, p.observations, p.obs_mask)
    x, y = p.observations[0, :, 0].numpy(), p.observations[0, :, 1].numpy()
    hyper = stats.gamma(task.shape, scale=1 / task.rate)

    def integral(g):
        return integrate.quad(lambda ell: hyper.pdf(ell) * g(*_textbook(x, y, ell, task)), 1e-4, 30, limit=400)[0]

    z = integral(lambda m, v, e: e)
    mean = integral(lambda m, v, e: e * m) / z
    second = integral(lambda m, v, e: e * (v + m * m)) / z
    w = post.weights[0]
    q_mean = (w * post.means[0, :, 0]).sum().item()
    q_second = (w * (post.covariances[0, :, 0, 0] + post.means[0, :, 0] ** 2)).sum().item()
    assert math.isclose(q_mean, mean, abs_tol=5e-3)
    assert math.isclose(q_second, second, abs_tol=5e-3)
    for f in (-1.0, mean, 1.0):
        dens = integral(lambda m, v, e, f=f: e * stats.norm(m, math.sqrt(v)).pdf(f)) / z
        q = post.log_prob(torch.tensor([[[f]]], dtype=torch.float64)).exp().item()
        assert math.isclose(q, dens, rel_tol=1e-2, abs_tol=1e-3)


def test_log_likelihood_consistent_with_posterior_weights(gen):
    """Bayes' rule on a grid of f* with log_likelihood reproduces the reference density."""
    task = GPHyperprior(n_components=2, max_obs=6, min_obs=3)
    p = task.sample(2, gen)
    post = task.posterior(p.prior, p.observations, p.obs_mask)
    f = torch.linspace(-5, 5, 4001, dtype=torch.float64)[:, None, None].expand(-1, 2, 1)
    log_un = p.prior.log_prob(f) + task.log_likelihood(f, p.observations, p.obs_mask)
    dens = torch.softmax(log_un, 0) / float(f[1, 0, 0] - f[0, 0, 0])
    assert torch.allclose(post.log_prob(f).exp(), dens, atol=1e-3 * dens.max())
