"""Rolling a model forward in time: each posterior becomes the next prior."""

from __future__ import annotations

from collections.abc import Callable

import torch

from probcirc import GaussianMixture

from .transformer import DistributionTransformer


def roll_forward(
    model: DistributionTransformer,
    prior: GaussianMixture,
    observations: torch.Tensor,
    obs_mask: torch.Tensor | None = None,
    transition: Callable[[GaussianMixture], GaussianMixture] | None = None,
) -> list[GaussianMixture]:
    """Filter a sequence: update on step t's observations, then predict the prior for step t + 1.

    Args:
        model: a trained :class:`DistributionTransformer`.
        prior: the prior of the first step, batch ``B``.
        observations: ``(T, *B, N, obs_dim)``, step t's observations at index t.
        obs_mask: ``(T, *B, N)``, True = no observation there.
        transition: maps step t's posterior to step t + 1's prior (e.g.
            :func:`amortized.tasks.linear_predict`); ``None`` keeps the posterior
            as the next prior (a static latent, data arriving in batches).

    Returns:
        The T filtering posteriors ``p(x_t | observations up to t)``.

    Example:
        >>> import torch
        >>> from probcirc import GaussianMixture
        >>> from amortized.tasks import linear_predict
        >>> model = DistributionTransformer(dim=1, n_components=2, obs_dim=3, d_model=16, n_layers=1, n_heads=2)
        >>> prior = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0], [1.0]]), torch.ones(2, 1, 1))
        >>> posts = roll_forward(model, prior, torch.zeros(5, 2, 3), transition=lambda g: linear_predict(g, 0.95, 1.0))
        >>> len(posts)
        5
    """
    if obs_mask is None:
        obs_mask = torch.zeros(observations.shape[:-1], dtype=torch.bool)
    posts = []
    for t in range(observations.shape[0]):
        post = model(prior, observations[t], obs_mask[t])
        posts.append(post)
        prior = transition(post) if transition is not None else post
    return posts
