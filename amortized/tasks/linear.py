"""Exact Bayesian update of a Gaussian mixture under linear-Gaussian observations.

Each component is updated in information form and reweighted by its
evidence; this is the measurement step of the Gaussian-sum Kalman filter and
the exact posterior of the ``linear_gaussian`` task.
"""

from __future__ import annotations

import math

import torch

from probcirc import GaussianMixture

from .. import _gmm

_LOG_2PI = math.log(2 * math.pi)


def _mvn_log_prob(x: torch.Tensor, mean: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    white = torch.linalg.solve_triangular(tril, (x - mean)[..., None], upper=False).squeeze(-1)
    log_det = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (white**2).sum(-1) - log_det - 0.5 * x.shape[-1] * _LOG_2PI


def linear_gaussian_update(
    prior: GaussianMixture,
    matrices: torch.Tensor,
    values: torch.Tensor,
    noise_cov: torch.Tensor,
    obs_mask: torch.Tensor,
) -> GaussianMixture:
    """Exact posterior of ``x ~ prior`` given ``z_n = A_n x + e_n``, ``e_n ~ N(0, R_n)``.

    Args:
        prior: batch ``(B,)``, K components, dimension D.
        matrices: ``A_n``, shape ``(B, N, M, D)``.
        values: ``z_n``, shape ``(B, N, M)``.
        noise_cov: ``R_n``, shape ``(B, N, M, M)``.
        obs_mask: ``(B, N)``, True = absent observation.

    Returns:
        The posterior GaussianMixture, batch ``(B,)``, float64.
    """
    logits, means, tril = (t.double() for t in _gmm.params(prior))
    A, z, R = matrices.double(), values.double(), noise_cov.double()
    keep = (~obs_mask).double()[..., None, None]
    R_inv = torch.cholesky_inverse(torch.linalg.cholesky(R))
    info = (keep * A.mT @ R_inv @ A).sum(1)  # (B, D, D)
    shift = (keep[..., 0] * (A.mT @ R_inv @ z[..., None])[..., 0]).sum(1)  # (B, D)
    prior_prec = torch.cholesky_inverse(tril)
    post_prec = prior_prec + info[:, None]
    post_cov = torch.cholesky_inverse(torch.linalg.cholesky(post_prec))
    post_cov = 0.5 * (post_cov + post_cov.mT)
    post_mean = (post_cov @ ((prior_prec @ means[..., None])[..., 0] + shift[:, None])[..., None])[..., 0]
    post_tril = torch.linalg.cholesky(post_cov)
    # Evidence of component k by the identity p(z|k) = p(x|k) p(z|x) / p(x|z,k) at x = its posterior mean.
    x = post_mean  # (B, K, D)
    pred = (A[:, None] @ x[:, :, None, :, None])[..., 0]  # (B, K, N, M)
    lik = _mvn_log_prob(z[:, None], pred, torch.linalg.cholesky(R)[:, None])
    lik = (lik * (~obs_mask)[:, None].double()).sum(-1)
    log_ev = _mvn_log_prob(x, means, tril) + lik - _mvn_log_prob(x, post_mean, post_tril)
    return _gmm.make(torch.log_softmax(logits + log_ev, -1), post_mean, post_tril)


def linear_predict(gmm: GaussianMixture, a: float | torch.Tensor, q: float | torch.Tensor) -> GaussianMixture:
    """Exact prediction step ``x' = a x + w``, ``w ~ N(0, q I)``: the next prior from a posterior.

    ``a`` may be a scalar or a ``(D, D)`` matrix.

    Example:
        >>> import torch
        >>> g = GaussianMixture(torch.tensor([1.0]), torch.tensor([[2.0]]), torch.tensor([[[4.0]]]))
        >>> p = linear_predict(g, 0.5, 1.0)
        >>> round(p.means.item(), 4), round(p.covariances.item(), 4)
        (1.0, 2.0)
    """
    logits, means, tril = _gmm.params(gmm)
    d = means.shape[-1]
    a = torch.as_tensor(a, dtype=means.dtype)
    A = a * torch.eye(d, dtype=means.dtype) if a.dim() == 0 else a
    cov = A @ tril @ tril.mT @ A.mT + torch.as_tensor(q, dtype=means.dtype) * torch.eye(d, dtype=means.dtype)
    return _gmm.make(logits, (A @ means[..., None])[..., 0], torch.linalg.cholesky(cov))
