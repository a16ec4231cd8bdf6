"""Every Distribution in amortized samples with ``sample(sample_shape, generator=)``.

With a generator, no draw comes from torch's global generator.
"""

import math

import pytest
import torch

from amortized import DistributionTransformer
from amortized.tasks import TASKS, GridPosterior, make_task
from probmod.distribution import Distribution

SMALL = {
    "linear_gaussian": dict(dim=2, n_components=2),
    "lti_filter": dict(n_components=2),
    "gp_hyperprior": dict(n_components=2, n_quad=8),
    "two_level_quantum": dict(n_components=2, n_grid=64),
}


def _untouched(fn):
    """Run ``fn`` and assert that torch's global generator did not move."""
    state = torch.get_rng_state()
    out = fn()
    assert torch.equal(torch.get_rng_state(), state), "drew from torch's global generator"
    return out


def _twice(fn):
    """``fn(generator)`` with two generators seeded alike: equal results, global generator untouched."""
    a = _untouched(lambda: fn(torch.Generator().manual_seed(7)))
    b = _untouched(lambda: fn(torch.Generator().manual_seed(7)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    return a


def test_every_task_is_covered():
    assert set(SMALL) == set(TASKS)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_task_priors_and_posteriors_sample_from_the_generator_only(name):
    task = make_task(name, **SMALL[name])
    p = _untouched(lambda: task.sample(3, torch.Generator().manual_seed(0)))
    _twice(lambda g: task.sample(3, g).observations)
    prior = task.sample_prior(3, torch.Generator().manual_seed(1))
    posterior = task.posterior(p.prior, p.observations, p.obs_mask)
    for dist in (prior, posterior):
        assert isinstance(dist, Distribution)
        for shape, want in (((), (3, task.dim)), (5, (5, 3, task.dim)), ((2, 4), (2, 4, 3, task.dim))):
            x = _twice(lambda g, dist=dist, shape=shape: dist.sample(shape, generator=g))
            assert tuple(x.shape) == want
            assert bool(torch.isfinite(dist.log_prob(x.reshape(-1, 3, task.dim))).all())


def test_model_posteriors_sample_from_the_generator_only():
    task = make_task("linear_gaussian", **SMALL["linear_gaussian"])
    model = DistributionTransformer(2, 2, task.obs_dim, d_model=16, n_layers=1, n_heads=2)
    p = task.sample(3, torch.Generator().manual_seed(0)).to(torch.float32)
    post = model(p.prior, p.observations, p.obs_mask)
    assert tuple(_twice(lambda g: post.sample((4,), generator=g)).shape) == (4, 3, 2)


def test_grid_moments_are_properties_that_match_the_density():
    # Masses 1:2:3:4 on four cells of [0, 2]: piecewise-uniform, so the moments have a closed form.
    edges = torch.linspace(0, 2, 5, dtype=torch.float64)[None]
    g = GridPosterior(edges, torch.log(torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)))
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64) / 10
    lo = edges[0, :-1]
    mean = (w * (lo + 0.25)).sum()
    second = (w * ((lo + 0.5) ** 3 - lo**3) / (3 * 0.5)).sum()
    assert math.isclose(g.mean.item(), mean.item(), rel_tol=1e-12)
    assert math.isclose(g.variance.item(), (second - mean**2).item(), rel_tol=1e-12)
    x = g.sample(40000, generator=torch.Generator().manual_seed(3))
    assert math.isclose(x.mean().item(), mean.item(), abs_tol=0.01)


@pytest.mark.parametrize(
    "edges, log_mass",
    [(torch.tensor([[0.0, 1.0, 1.0]]), torch.zeros(1, 2)), (torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2))],
)
def test_grid_refuses_bad_edges(edges, log_mass):
    with pytest.raises(ValueError):
        GridPosterior(edges, log_mass)
