"""The Gaussian-sum Kalman filter against a grid filter and a plain Kalman filter."""

import math

import torch

from amortized.tasks import LTIFilter, linear_predict
from probcirc import GaussianMixture


def _kalman(m, v, seq, task):
    """Textbook scalar Kalman filter; returns the filtered (mean, variance) at each step."""
    out = []
    for t in range(seq["observations"].shape[0]):
        for n in range(2):
            if not seq["obs_mask"][t, 0, n]:
                z, r = seq["observations"][t, 0, n, 0].item(), task.sensor_var[n]
                gain = v / (v + r)
                m, v = m + gain * (z - m), (1 - gain) * v
        out.append((m, v))
        m, v = task.a * m, task.a**2 * v + task.q
    return out


def test_gaussian_prior_reduces_to_kalman(gen):
    task = LTIFilter(n_components=1)
    prior = GaussianMixture(
        torch.ones(1, 1, dtype=torch.float64),
        torch.tensor([[[1.5]]], dtype=torch.float64),
        torch.tensor([[[[2.0]]]], dtype=torch.float64),
    )
    seq = task.simulate_sequence(25, 1, gen, prior=prior)
    posts = task.reference_filter(prior, seq["observations"], seq["obs_mask"])
    for post, (m, v) in zip(posts, _kalman(1.5, 2.0, seq, task)):
        assert math.isclose(post.means.item(), m, rel_tol=1e-10, abs_tol=1e-10)
        assert math.isclose(post.covariances.item(), v, rel_tol=1e-10)


def test_gaussian_sum_filter_matches_grid_filter(gen):
    task = LTIFilter(n_components=3)
    prior = GaussianMixture(
        torch.tensor([[0.3, 0.5, 0.2]], dtype=torch.float64),
        torch.tensor([[[-4.0], [0.5], [5.0]]], dtype=torch.float64),
        torch.tensor([[[[0.5]], [[1.0]], [[2.0]]]], dtype=torch.float64),
    )
    seq = task.simulate_sequence(12, 1, gen, prior=prior)
    seq["obs_mask"][:3, 0, 0] = True  # only the noisy sensor at first, so the posterior stays multimodal
    posts = task.reference_filter(prior, seq["observations"], seq["obs_mask"])

    x = torch.linspace(-25, 25, 5001, dtype=torch.float64)
    dx = float(x[1] - x[0])
    dens = prior.log_prob(x[:, None, None])[:, 0].exp()
    trans = torch.exp(-0.5 * (x[:, None] - task.a * x[None, :]) ** 2 / task.q) / math.sqrt(2 * math.pi * task.q)
    for t, post in enumerate(posts):
        for n in range(2):
            if not seq["obs_mask"][t, 0, n]:
                z, r = seq["observations"][t, 0, n, 0], task.sensor_var[n]
                dens = dens * torch.exp(-0.5 * (z - x) ** 2 / r)
        dens = dens / (dens.sum() * dx)
        exact = post.log_prob(x[:, None, None])[:, 0].exp()
        assert torch.allclose(exact, dens, atol=1e-4 * dens.max()), f"step {t}"
        dens = trans @ dens * dx


def test_predict_is_exact_for_moments():
    g = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[1.0], [-2.0]]), torch.tensor([[[1.0]], [[0.25]]]))
    p = linear_predict(g, 0.95, 1.0)
    assert torch.allclose(p.means[:, 0], 0.95 * g.means[:, 0])
    assert torch.allclose(p.covariances[:, 0, 0], 0.95**2 * g.covariances[:, 0, 0] + 1.0)
    assert torch.allclose(p.weights, g.weights)
