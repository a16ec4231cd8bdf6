"""The exact linear_gaussian posterior against brute-force quadrature on a grid."""

import math

import pytest
import torch

from amortized.tasks import LinearGaussian


def _grid_posterior(task, prior, z, mask, axes):
    """Prior density × likelihood on a tensor grid, normalised by the cell volume (independent of the closed form)."""
    mesh = torch.meshgrid(*axes, indexing="ij")
    pts = torch.stack([m.reshape(-1) for m in mesh], -1)  # (G, D)
    log_prior = prior.log_prob(pts[:, None, :])[:, 0]
    log_lik = torch.zeros(len(pts), dtype=torch.float64)
    var = task.noise_std**2
    for n in range(z.shape[1]):
        if not mask[0, n]:
            resid = z[0, n] - pts @ task.A.T
            log_lik += (-0.5 * resid**2 / var - 0.5 * math.log(2 * math.pi * var)).sum(-1)
    vol = math.prod(float(a[1] - a[0]) for a in axes)
    log_un = log_prior + log_lik
    log_z = torch.logsumexp(log_un, 0) + math.log(vol)
    return pts, log_un - log_z


@pytest.mark.parametrize("dim, n_grid", [(1, 4001), (2, 401)])
def test_exact_posterior_matches_quadrature(dim, n_grid, gen):
    task = LinearGaussian(dim=dim, n_components=3, max_obs=4, min_obs=2)
    for i in range(3):
        p = task.sample(1, gen)
        post = task.posterior(p.prior, p.observations, p.obs_mask)
        axes = [torch.linspace(-12, 12, n_grid, dtype=torch.float64) for _ in range(dim)]
        pts, log_ref = _grid_posterior(task, p.prior, p.observations, p.obs_mask, axes)
        log_q = post.log_prob(pts[:, None, :])[:, 0]
        ref, q = log_ref.exp(), log_q.exp()
        assert torch.allclose(q, ref, atol=2e-3 * ref.max(), rtol=0), f"density mismatch on problem {i}"
        vol = math.prod(float(a[1] - a[0]) for a in axes)
        mean_ref = (ref[:, None] * pts).sum(0) * vol
        mean_q = (post.weights[0, :, None] * post.means[0]).sum(0)
        assert torch.allclose(mean_q, mean_ref, atol=1e-3)


def test_no_observations_gives_the_prior(gen):
    task = LinearGaussian(dim=2, n_components=3, max_obs=3)
    p = task.sample(4, gen)
    post = task.posterior(p.prior, p.observations, torch.ones_like(p.obs_mask))
    assert torch.allclose(post.weights, p.prior.weights, atol=1e-12)
    assert torch.allclose(post.means, p.prior.means, atol=1e-12)
    assert torch.allclose(post.covariances, p.prior.covariances, atol=1e-12)


def test_posterior_matches_conditioning_the_joint_gmm(gen):
    """The posterior equals the conditional of the joint (x, z) mixture, computed by probcirc."""
    from probcirc import GaussianMixture

    task = LinearGaussian(dim=2, n_components=2, max_obs=1, min_obs=1)
    p = task.sample(1, gen)
    A, r = task.A, task.noise_std**2
    mu = p.prior.means[0]
    S = p.prior.covariances[0]
    joint_mean = torch.cat([mu, mu @ A.T], -1)
    top = torch.cat([S, S @ A.T], -1)
    bottom = torch.cat([A @ S, A @ S @ A.T + r * torch.eye(2, dtype=torch.float64)], -1)
    joint = GaussianMixture(p.prior.weights[0], joint_mean, torch.cat([top, bottom], -2))
    x = torch.cat([torch.zeros(2, dtype=torch.float64), p.observations[0, 0]])[None]
    mask = torch.tensor([[True, True, False, False]])
    cond = joint.condition(x, mask)[0]
    post = task.posterior(p.prior, p.observations, p.obs_mask)
    assert torch.allclose(post.weights[0], cond.weights, atol=1e-10)
    assert torch.allclose(post.means[0], cond.means, atol=1e-10)
    assert torch.allclose(post.covariances[0], cond.covariances, atol=1e-10)


def test_log_likelihood_ignores_padding(gen):
    task = LinearGaussian(dim=2, n_components=2, max_obs=4, min_obs=4)
    p = task.sample(3, gen)
    x = torch.randn(5, 3, 2, dtype=torch.float64)
    mask = p.obs_mask.clone()
    mask[:, 2:] = True
    junk = p.observations.clone()
    junk[:, 2:] = 1e3
    assert torch.allclose(task.log_likelihood(x, p.observations, mask), task.log_likelihood(x, junk, mask))
