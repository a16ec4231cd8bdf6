"""The two-level-system grid posterior against adaptive quadrature."""

import math

import torch
from scipy import integrate

from amortized.tasks import GridPosterior, TwoLevelQuantum


def test_grid_posterior_moments_match_quadrature(gen):
    task = TwoLevelQuantum(n_components=2, max_obs=10, min_obs=10)
    p = task.sample(2, gen)
    post = task.posterior(p.prior, p.observations, p.obs_mask)
    for b in range(2):

        def unnorm(w, b=b):
            x = torch.tensor([[[w]]], dtype=torch.float64).expand(1, 1, 1)
            one = p[b]
            lp = one.prior.log_prob(x) + task.log_likelihood(x, one.observations, one.obs_mask)
            return math.exp(lp.item())

        lo, hi = float(post.edges[b, 0]), float(post.edges[b, -1])
        pts = torch.linspace(lo, hi, 40).tolist()
        z = integrate.quad(unnorm, lo, hi, points=pts, limit=500)[0]
        mean = integrate.quad(lambda w: w * unnorm(w), lo, hi, points=pts, limit=500)[0] / z
        var = integrate.quad(lambda w, mean=mean: (w - mean) ** 2 * unnorm(w), lo, hi, points=pts, limit=500)[0] / z
        assert math.isclose(post.mean[b].item(), mean, abs_tol=2e-3)
        assert math.isclose(post.variance[b].item(), var, rel_tol=2e-2, abs_tol=1e-4)


def test_outcome_probability_is_a_probability():
    task = TwoLevelQuantum()
    p = task.p_one(torch.linspace(-10, 10, 101)[:, None], torch.linspace(0, 4, 7)[None])
    assert bool(((p > 0) & (p < 1)).all())


def test_grid_log_prob_and_sample_agree(gen):
    edges = torch.linspace(0, 2, 5, dtype=torch.float64)[None]
    g = GridPosterior(edges, torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]])))
    x = g.sample(20000, generator=gen)
    frac = (x[:, 0, 0] >= 1.5).double().mean().item()
    assert math.isclose(frac, 0.4, abs_tol=0.015)
    assert math.isclose(g.log_prob(torch.tensor([[[1.75]]])).exp().item(), 0.4 / 0.5, rel_tol=1e-6)
    assert g.log_prob(torch.tensor([[[2.5]]])).item() == -math.inf
