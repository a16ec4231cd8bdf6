"""The baselines reach the exact posterior where they should, and KL estimates behave."""

import torch

from amortized import _gmm
from amortized.baselines import gmm_vi, importance_sampling
from amortized.evaluate import draw, score
from amortized.tasks import LinearGaussian


def _kl(exact, q, gen, n=4000):
    x = draw(exact, n, gen)
    return (exact.log_prob(x) - score(q, x)).mean(0)


def test_vi_recovers_a_gaussian_posterior(gen):
    # One component and linear-Gaussian data: the exact posterior is inside the variational family.
    task = LinearGaussian(dim=2, n_components=1, max_obs=3, min_obs=3)
    p = task.sample(4, gen)
    exact = task.posterior(p.prior, p.observations, p.obs_mask)
    q = gmm_vi(task, p, steps=400, lr=0.05)
    assert bool((_kl(exact, q, gen) < 0.01).all())
    assert bool((_kl(exact, p.prior, gen) > 0.1).all())


def test_importance_sampling_mean_converges(gen):
    task = LinearGaussian(dim=2, n_components=3, max_obs=2, min_obs=1)
    p = task.sample(4, gen)
    exact = task.posterior(p.prior, p.observations, p.obs_mask)
    q = importance_sampling(task, p, n_samples=20000)
    m_exact, _ = _gmm.mean_cov(exact)
    m_q, _ = _gmm.mean_cov(q)
    assert torch.allclose(m_q, m_exact, atol=0.1)


def test_kl_of_the_exact_posterior_to_itself_is_zero(gen):
    task = LinearGaussian(dim=2, n_components=3)
    p = task.sample(3, gen)
    exact = task.posterior(p.prior, p.observations, p.obs_mask)
    assert torch.allclose(_kl(exact, exact, gen, 500), torch.zeros(3, dtype=torch.float64), atol=1e-9)
