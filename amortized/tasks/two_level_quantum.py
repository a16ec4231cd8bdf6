"""Frequency estimation for a two-level quantum system from single-shot measurements.

A qubit driven at unknown Rabi frequency ω and measured after time t returns
1 with probability ``ε + (1 - 2ε) sin²(ω t / 2)``, ε being a readout error that
keeps every outcome possible. The latent is ω (1-D); the reference posterior
is computed on a fine grid.
"""

from __future__ import annotations

from typing import Any

import torch

from probcirc import GaussianMixture
from probmod.errors import UsageError

from .base import Task, check_limit, random_prior
from .grid import GridPosterior

#: the most grid cells of the reference posterior (each problem holds one row of them)
MAX_GRID = 1_000_000


class TwoLevelQuantum(Task, name="two_level_quantum", obs_dim=2, exact=False, max_obs=10):
    """Infer ω from outcomes at times ``t_i ~ U(0, t_max)``; tokens are ``(t_i, outcome_i)`` (``obs_dim = 2``).

    Priors are random 1-D GMMs with means around 2 (``mean_scale`` spread).
    The reference posterior is a :class:`GridPosterior` with ``n_grid`` cells
    spanning ±8 prior standard deviations around every component.

    Example:
        >>> import torch
        >>> task = TwoLevelQuantum(n_components=2)
        >>> p = task.sample(3, torch.Generator().manual_seed(0))
        >>> tuple(task.posterior(p.prior, p.observations, p.obs_mask).log_mass.shape)
        (3, 2048)
    """

    def __init__(self, *, t_max: float = 4.0, readout_error: float = 0.02, n_grid: int = 2048, **common: Any):
        super().__init__(**common)
        if not 0 < readout_error < 0.5:
            raise UsageError(f"readout_error must be in (0, 0.5), got {readout_error}")
        if not 0 < t_max < float("inf") or int(n_grid) < 1:
            raise UsageError(f"need 0 < t_max < inf and n_grid >= 1, got t_max={t_max}, n_grid={n_grid}")
        self.t_max, self.readout_error = float(t_max), float(readout_error)
        self.n_grid = check_limit("n_grid", n_grid, MAX_GRID)

    def sample_prior(self, batch, generator=None) -> GaussianMixture:
        return random_prior(batch, self.n_components, 1, 0.7, (0.1, 0.6), 0.0, 1.0, generator, mean_offset=2.0)

    def p_one(self, omega: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Probability of outcome 1 at frequency ``omega`` and time ``t``."""
        e = self.readout_error
        return e + (1 - 2 * e) * torch.sin(0.5 * omega * t) ** 2

    def simulate(self, latent, generator=None):
        b = latent.shape[0]
        t = torch.rand(b, self.max_obs, generator=generator, dtype=torch.float64) * self.t_max
        p = self.p_one(latent.double(), t)
        outcome = (torch.rand(b, self.max_obs, generator=generator, dtype=torch.float64) < p).double()
        return torch.stack([t, outcome], -1), self._n_obs_mask(b, generator)

    def log_likelihood(self, x, observations, obs_mask):
        self.check_observations(observations)
        t, outcome = observations[..., 0].double(), observations[..., 1].double()
        p = self.p_one(x.double(), t[None])  # (S, B, N)
        lp = outcome * torch.log(p) + (1 - outcome) * torch.log1p(-p)
        return (lp * (~obs_mask).double()).sum(-1)

    def posterior(self, prior, observations, obs_mask) -> GridPosterior:
        self.check_observations(observations)
        sd = prior.scale_tril.double()[..., 0, 0]
        lo = (prior.means.double()[..., 0] - 8 * sd).min(-1).values
        hi = (prior.means.double()[..., 0] + 8 * sd).max(-1).values
        u = torch.linspace(0, 1, self.n_grid + 1, dtype=torch.float64)
        edges = lo[:, None] + (hi - lo)[:, None] * u
        centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
        x = centres.T[..., None]  # (G, B, 1)
        from .. import _gmm

        log_post = _gmm.log_prob(prior.to(torch.float64), x) + self.log_likelihood(x, observations, obs_mask)
        return GridPosterior(edges, log_post.T + torch.log(edges.diff(dim=-1)))
