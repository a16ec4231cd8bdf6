"""Gaussian leaves."""

from __future__ import annotations

import math

import torch

from .base import InputDist, keep_where_empty


class Gaussian(InputDist):
    """A univariate Gaussian leaf; parameters are ``(mean, std)``.

    ``min_std`` floors the standard deviation in the M-step, so a leaf that
    explains a single point cannot collapse to infinite density.
    """

    num_params = 2

    def __init__(self, min_std: float = 1e-3):
        if not min_std > 0:
            raise ValueError(f"min_std must be positive, got {min_std!r}")
        self.min_std = float(min_std)

    def _hyper(self) -> tuple:
        return (self.min_std,)

    def init_params(self, n, generator):
        mean = torch.randn(n, generator=generator, dtype=torch.float64, device=generator.device)
        return torch.stack([mean, torch.ones_like(mean)], -1)

    def check_params(self, params):
        if params.shape[-1] != 2 or bool((params[..., 1] <= 0).any()) or not bool(torch.isfinite(params).all()):
            raise ValueError("Gaussian parameters must be finite (mean, std) rows with std > 0")

    def check_values(self, x):
        if not bool(torch.isfinite(x).all()):
            raise ValueError("Gaussian values must be finite (mark missing values in the mask)")

    def log_prob(self, params, x):
        mean, std = params[..., :1], params[..., 1:]
        return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)

    def mode(self, params):
        return params[..., 0].clone()

    def moments(self, params):
        mean, std = params[..., 0], params[..., 1]
        return mean.clone(), mean * mean + std * std

    def sample(self, params, generator):
        eps = torch.randn(params.shape[:-1], generator=generator, dtype=params.dtype, device=params.device)
        return params[..., 0] + params[..., 1] * eps

    def stats(self, params, x, observed, flows):
        mean, var = params[..., :1], params[..., 1:] ** 2
        x1 = torch.where(observed, x, mean)
        x2 = torch.where(observed, x * x, mean * mean + var)
        return torch.stack([flows.sum(-1), (flows * x1).sum(-1), (flows * x2).sum(-1)], -1)

    def m_step(self, stats, params, pseudocount):
        # The pseudocount pulls each leaf towards its current parameters.
        n = stats[..., 0] + pseudocount
        mean = (stats[..., 1] + pseudocount * params[..., 0]) / n
        second = (stats[..., 2] + pseudocount * (params[..., 0] ** 2 + params[..., 1] ** 2)) / n
        std = (second - mean**2).clamp_min(0).sqrt().clamp_min(self.min_std)
        return keep_where_empty(torch.stack([mean, std], -1), params, n)

    def to_unconstrained(self, params):
        return torch.stack([params[..., 0], params[..., 1].log()], -1)

    def from_unconstrained(self, free):
        return torch.stack([free[..., 0], free[..., 1].exp().clamp_min(self.min_std)], -1)
