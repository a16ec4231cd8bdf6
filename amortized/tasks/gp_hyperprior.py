"""GP predictive at a test input, with a Gamma hyperprior on the lengthscale.

The latent is ``f* = f(x*)`` with ``x* = 0`` (shift inputs so that the test
input is the origin). Given f* and the lengthscale ℓ, the function values at
the data inputs follow the GP conditional on f*; so for any prior on f* (here a
GMM) the model is a GP whenever that prior is N(0, σ_f²). For each ℓ the
update of f* is linear-Gaussian, so the reference posterior, by quadrature over
ℓ, is itself a GMM with ``K × n_quad`` components.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from probcirc import GaussianMixture
from probmod.errors import UsageError

from .. import _gmm
from .base import Task, check_limit, random_prior
from .linear import linear_gaussian_update

_LOG_2PI = math.log(2 * math.pi)
#: the most quadrature nodes over the lengthscale (the reference holds K times as many components)
MAX_QUAD = 4096


class GPHyperprior(Task, name="gp_hyperprior", obs_dim=2, exact=False, max_obs=8):
    """f* at x* = 0 under an RBF GP (signal variance ``signal_var``) with ℓ ~ Gamma(shape, rate).

    Observation tokens are ``(x_i, y_i)`` with ``x_i ~ U(-input_range, input_range)``
    and ``y_i = f(x_i) + N(0, noise_var)`` (``obs_dim = 2``). The prior on f* is
    a random 1-D GMM near N(0, 1).

    The reference uses ``n_quad`` equal-mass nodes of the Gamma hyperprior
    (midpoints in probability), so it is exact up to that quadrature.

    Example:
        >>> import torch
        >>> task = GPHyperprior(n_components=2)
        >>> p = task.sample(4, torch.Generator().manual_seed(0))
        >>> task.posterior(p.prior, p.observations, p.obs_mask).n_components
        128
    """

    def __init__(
        self,
        *,
        shape: float = 2.0,
        rate: float = 2.0,
        signal_var: float = 1.0,
        noise_var: float = 0.1,
        input_range: float = 3.0,
        n_quad: int = 64,
        **common: Any,
    ):
        super().__init__(**common)
        self.shape, self.rate = float(shape), float(rate)
        self.signal_var, self.noise_var = float(signal_var), float(noise_var)
        positive = dict(shape=shape, rate=rate, signal_var=signal_var, noise_var=noise_var, input_range=input_range)
        for name, value in positive.items():
            if not 0 < value < float("inf"):  # also refuses NaN
                raise UsageError(f"{name} must be positive and finite, got {value}")
        if int(n_quad) < 1:
            raise UsageError(f"n_quad must be at least 1, got {n_quad}")
        self.input_range, self.n_quad = float(input_range), check_limit("n_quad", n_quad, MAX_QUAD)
        p = (torch.arange(self.n_quad, dtype=torch.float64) + 0.5) / self.n_quad
        self.nodes = self._gamma_quantiles(p)

    def _gamma_quantiles(self, p: torch.Tensor) -> torch.Tensor:
        """Quantiles of the lengthscale hyperprior at probabilities ``p``."""
        from scipy import stats  # imported here: scipy.stats takes seconds to load, and only this task needs it

        return torch.as_tensor(stats.gamma.ppf(p.numpy(), self.shape, scale=1 / self.rate))

    def sample_prior(self, batch, generator=None) -> GaussianMixture:
        return random_prior(batch, self.n_components, 1, 0.7, (0.2, 1.0), 0.0, 1.0, generator)

    def _kernel(self, a: torch.Tensor, b: torch.Tensor, ell: torch.Tensor) -> torch.Tensor:
        return self.signal_var * torch.exp(-0.5 * (a[..., :, None] - b[..., None, :]) ** 2 / ell[..., None, None] ** 2)

    def _conditional(self, inputs: torch.Tensor, obs_mask: torch.Tensor, ell: torch.Tensor):
        """``y | f*, ℓ ~ N(b f*, C)`` per problem and lengthscale: b ``(B, L, N)``, C ``(B, L, N, N)``.

        Padded entries get b = 0 and a unit, uncorrelated variance, so they add
        the same constant to every component and cancel on normalisation.
        """
        keep = (~obs_mask).double()[:, None]  # (B, 1, N)
        x = inputs.double()[:, None]  # (B, 1, N)
        ell = ell.expand(x.shape[0], -1)  # (B, L)
        k_star = self.signal_var * torch.exp(-0.5 * x**2 / ell[..., None] ** 2)  # (B, L, N)
        b = k_star / self.signal_var * keep
        K = self._kernel(x, x, ell)
        C = K - b[..., :, None] * k_star[..., None, :] + self.noise_var * torch.eye(x.shape[-1], dtype=torch.float64)
        C = C * keep[..., :, None] * keep[..., None, :] + torch.diag_embed(1 - keep).expand_as(C)
        return b, C

    def simulate(self, latent, generator=None):
        bsz = latent.shape[0]
        # ℓ by inverse CDF from seeded uniforms, since torch's Gamma sampler takes no generator.
        u = torch.rand(bsz, 1, generator=generator, dtype=torch.float64)
        ell = self._gamma_quantiles(u)
        inputs = (2 * torch.rand(bsz, self.max_obs, generator=generator, dtype=torch.float64) - 1) * self.input_range
        mask = self._n_obs_mask(bsz, generator)
        b, C = self._conditional(inputs, torch.zeros_like(mask), ell)
        eps = torch.randn(bsz, self.max_obs, 1, generator=generator, dtype=torch.float64)
        y = b[:, 0] * latent.double() + (torch.linalg.cholesky(C[:, 0]) @ eps)[..., 0]
        return torch.stack([inputs, y], -1), mask

    def log_likelihood(self, x, observations, obs_mask):
        self.check_observations(observations)
        b, C = self._conditional(observations[..., 0], obs_mask, self.nodes)
        L = torch.linalg.cholesky(C)  # (B, Q, N, N)
        # Invert the factors once: one batched product per draw is far cheaper than a solve per draw.
        L_inv = torch.linalg.solve_triangular(L, torch.eye(L.shape[-1], dtype=L.dtype).expand_as(L), upper=False)
        y = observations[..., 1].double() * (~obs_mask).double()
        resid = y[None, :, None, :] - b[None] * x.double()[:, :, None, :]  # (S, B, Q, N)
        white = torch.einsum("bqij,sbqj->sbqi", L_inv, resid)
        n = (~obs_mask).double().sum(-1)  # padded rows contribute exactly their y=0, unit-variance term: remove it
        log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        lp = -0.5 * (white**2).sum(-1) - log_det - 0.5 * n[:, None] * _LOG_2PI
        return torch.logsumexp(lp, -1) - math.log(self.n_quad)

    def posterior(self, prior, observations, obs_mask):
        self.check_observations(observations)
        bsz, n = obs_mask.shape
        q, k = self.n_quad, prior.n_components
        b, C = self._conditional(observations[..., 0], obs_mask, self.nodes)  # (B, Q, N), (B, Q, N, N)
        y = (observations[..., 1].double() * (~obs_mask).double())[:, None].expand(bsz, q, n)
        # One N-dimensional linear-Gaussian observation per (problem, node).
        rep = lambda t: t.double().repeat_interleave(q, 0)  # noqa: E731
        flat_prior = _gmm.make(rep(prior.logits), rep(prior.means), rep(prior.scale_tril))
        post = linear_gaussian_update(
            flat_prior,
            b.reshape(bsz * q, 1, n, 1),
            y.reshape(bsz * q, 1, n),
            C.reshape(bsz * q, 1, n, n),
            torch.zeros(bsz * q, 1, dtype=torch.bool),
        )
        # Each node's evidence, for the weights across nodes: log p(y | ℓ) = logsumexp_k(prior logit + log p(y | k, ℓ)).
        ev = self._node_evidence(prior, b, C, y)  # (B, Q)
        logits = post.logits.reshape(bsz, q, k) + ev[..., None]
        return _gmm.make(
            torch.log_softmax(logits.reshape(bsz, q * k), -1),
            post.means.reshape(bsz, q * k, 1),
            post.scale_tril.reshape(bsz, q * k, 1, 1),
        )

    def _node_evidence(self, prior, b, C, y):
        """``log p(y | ℓ_q)`` per problem and node, under the GMM prior on f*."""
        w, m, s2 = prior.logits.double(), prior.means.double()[..., 0], prior.covariances.double()[..., 0, 0]
        cov = C[:, :, None] + s2[:, None, :, None, None] * b[:, :, None, :, None] * b[:, :, None, None, :]
        mean = b[:, :, None, :] * m[:, None, :, None]
        L = torch.linalg.cholesky(cov)  # (B, Q, K, N, N)
        white = torch.linalg.solve_triangular(L, (y[:, :, None, :] - mean)[..., None], upper=False)[..., 0]
        lp = -0.5 * (white**2).sum(-1) - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        return torch.logsumexp(w[:, None] + lp, -1)
