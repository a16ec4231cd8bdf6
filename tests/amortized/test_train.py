"""A short training run must lower the loss and beat the prior on held-out problems."""

import torch

from amortized.tasks import LinearGaussian, TwoLevelQuantum
from amortized.train import build_model, train


def _held_out_nll(model, task, seed=99, n=512):
    p = task.sample(n, torch.Generator().manual_seed(seed)).to(torch.float32)
    with torch.no_grad():
        q = model(p.prior, p.observations, p.obs_mask)
    return -q.log_prob(p.latent).mean().item(), -p.prior.log_prob(p.latent).mean().item()


def test_short_training_beats_the_prior():
    task = LinearGaussian(dim=1, n_components=2, max_obs=4, min_obs=1)
    model = build_model(task, d_model=32, n_layers=1, n_heads=2)
    losses = train(model, task, steps=250, batch_size=128, lr=3e-3, warmup=20, progress=False)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    model_nll, prior_nll = _held_out_nll(model, task)
    assert last < first - 0.3, (first, last)
    assert model_nll < prior_nll - 0.3, (model_nll, prior_nll)


def test_training_runs_on_a_grid_reference_task():
    task = TwoLevelQuantum(n_components=2, max_obs=3)
    model = build_model(task, d_model=16, n_layers=1, n_heads=2)
    losses = train(model, task, steps=20, batch_size=32, progress=False)
    assert all(map(lambda v: v == v, losses))
    assert model.training_info["steps"] == 20
