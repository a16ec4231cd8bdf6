"""GMM prior, linear-Gaussian observations ``z_n = A x + e_n``: the posterior is an exact GMM."""

from __future__ import annotations

from typing import Any

import torch

from probcirc import GaussianMixture
from probmod.errors import UsageError

from .base import Task, check_limit, random_prior
from .linear import _mvn_log_prob, linear_gaussian_update

#: the largest latent dimension (the Cholesky tokens grow with its square)
MAX_DIM = 64


class LinearGaussian(Task, name="linear_gaussian"):
    """Latent ``x ∈ R^D`` with a random K-component GMM prior; N i.i.d. observations ``z_n = A x + e_n``.

    ``A`` is the identity unless given (``obs_matrix``, shape ``(M, D)``); the
    noise is ``e_n ~ N(0, noise_std² I_M)``. Observation tokens are the raw
    ``z_n`` (``obs_dim = M``). Prior components have means ``N(0, mean_scale²)``,
    scales log-uniform in ``scale_range`` and random correlations.

    Example:
        >>> import torch
        >>> task = LinearGaussian(dim=2, n_components=3)
        >>> p = task.sample(8, torch.Generator().manual_seed(0))
        >>> tuple(p.observations.shape), tuple(task.posterior(p.prior, p.observations, p.obs_mask).batch_shape)
        ((8, 5, 2), (8,))
    """

    def __init__(
        self,
        dim: int = 2,
        *,
        noise_std: float = 1.0,
        obs_matrix: list | None = None,
        mean_scale: float = 2.0,
        scale_range: tuple[float, float] = (0.3, 1.5),
        **common: Any,
    ):
        super().__init__(**common)
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise UsageError(f"dim must be a positive integer, got {dim!r}")
        if not noise_std > 0 or noise_std == float("inf"):  # also refuses NaN
            raise UsageError(f"noise_std must be positive and finite, got {noise_std}")
        self.dim = check_limit("dim", dim, MAX_DIM)
        eye = obs_matrix is None
        self.A = torch.eye(dim, dtype=torch.float64) if eye else torch.as_tensor(obs_matrix, dtype=torch.float64)
        if self.A.dim() != 2 or self.A.shape[1] != dim:
            raise UsageError(f"obs_matrix must have shape (M, {dim}), got {tuple(self.A.shape)}")
        if not bool(torch.isfinite(self.A).all()):
            raise UsageError("obs_matrix must be finite")
        self.obs_dim = self.A.shape[0]
        self.noise_std, self.mean_scale = float(noise_std), float(mean_scale)
        self.scale_range: tuple[float, float] = (float(scale_range[0]), float(scale_range[1]))

    @property
    def obs_matrix(self) -> list[list[float]]:
        """``A`` as nested lists (what ``config()`` stores; the identity when none was given)."""
        return self.A.tolist()

    def sample_prior(self, batch: int, generator: torch.Generator | None = None) -> GaussianMixture:
        return random_prior(batch, self.n_components, self.dim, self.mean_scale, self.scale_range, 0.5, 1.0, generator)

    def simulate(self, latent: torch.Tensor, generator: torch.Generator | None = None):
        b = latent.shape[0]
        noise = torch.randn(b, self.max_obs, self.obs_dim, generator=generator, dtype=torch.float64) * self.noise_std
        z = (latent.double() @ self.A.T)[:, None, :] + noise
        return z, self._n_obs_mask(b, generator)

    def _design(self, observations: torch.Tensor):
        b, n, m = observations.shape
        A = self.A.expand(b, n, m, self.dim)
        R = (self.noise_std**2 * torch.eye(m, dtype=torch.float64)).expand(b, n, m, m)
        return A, R

    def log_likelihood(self, x, observations, obs_mask):
        self.check_observations(observations)
        pred = x.double() @ self.A.T  # (S, B, M)
        tril = self.noise_std * torch.eye(self.obs_dim, dtype=torch.float64)
        lp = _mvn_log_prob(observations.double()[None], pred[:, :, None], tril)  # (S, B, N)
        return (lp * (~obs_mask).double()).sum(-1)

    def posterior(self, prior, observations, obs_mask):
        self.check_observations(observations)
        A, R = self._design(observations)
        return linear_gaussian_update(prior, A, observations, R, obs_mask)
