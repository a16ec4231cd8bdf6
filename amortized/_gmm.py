"""Batched Gaussian-mixture arithmetic on raw parameter tensors.

:class:`probcirc.GaussianMixture` is the public type; these helpers work on
its ``(logits, means, scale_tril)`` triple so that evaluation can draw with a
seeded generator and score 10⁴ samples against hundreds of components in
chunks, without broadcasting a triangular solve over every sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from probcirc import GaussianMixture

_LOG_2PI = math.log(2 * math.pi)


def params(gmm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log weights, means, scale_tril)`` of ``gmm``."""
    return gmm.logits, gmm.means, gmm.scale_tril


def make(logits: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> GaussianMixture:
    """A mixture from parameters that are valid by construction (no validation pass)."""
    return GaussianMixture.from_cholesky(logits, means, scale_tril, validate=False)


def sample(gmm: GaussianMixture, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` draws per mixture, shape ``(n, *B, D)``, reproducible through ``generator``."""
    logits, means, tril = params(gmm)
    batch = logits.shape[:-1]
    flat_w = logits.reshape(-1, logits.shape[-1]).exp()
    comp = torch.multinomial(flat_w, n, replacement=True, generator=generator).T.reshape(n, *batch)
    d = means.shape[-1]
    mu = torch.gather(means.expand(n, *means.shape), -2, comp[..., None, None].expand(*comp.shape, 1, d)).squeeze(-2)
    idx = comp[..., None, None, None].expand(*comp.shape, 1, d, d)
    L = torch.gather(tril.expand(n, *tril.shape), -3, idx).squeeze(-3)
    eps = torch.randn(n, *batch, d, generator=generator, dtype=means.dtype)
    return mu + (L @ eps[..., None]).squeeze(-1)


def log_prob(
    gmm: GaussianMixture, x: torch.Tensor, chunk: int = 1024, tick: Callable[[], None] | None = None
) -> torch.Tensor:
    """``gmm.log_prob`` of ``x`` ``(S, *B, D)`` -> ``(S, *B)``, ``chunk`` samples at a time to bound memory.

    ``tick()``, if given, is called after every chunk (a progress heartbeat).
    """
    out = []
    for xs in x.to(gmm.means.dtype).split(chunk, dim=0):
        out.append(gmm.log_prob(xs))
        if tick is not None:
            tick()
    return torch.cat(out, 0)


def mean_cov(gmm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixture mean ``(*B, D)`` and covariance ``(*B, D, D)``."""
    w = gmm.logits.exp()
    mean = (w[..., None] * gmm.means).sum(-2)
    diff = gmm.means - mean[..., None, :]
    cov = (w[..., None, None] * (gmm.covariances + diff[..., :, None] * diff[..., None, :])).sum(-3)
    return mean, cov


def index(gmm: GaussianMixture, idx) -> GaussianMixture:
    """The mixtures at batch index ``idx`` (an int, slice or index tensor on the first batch axis)."""
    return make(gmm.logits[idx], gmm.means[idx], gmm.scale_tril[idx])


def cat(gmms: list[GaussianMixture]) -> GaussianMixture:
    """Concatenate mixtures of equal K along the first batch axis."""
    return make(*(torch.cat(t, 0) for t in zip(*(params(g) for g in gmms))))


def log_prob_shared_scale(
    gmm: GaussianMixture, x: torch.Tensor, chunk: int | None = None, tick: Callable[[], None] | None = None
) -> torch.Tensor:
    """:func:`log_prob` for mixtures whose components share one covariance per mixture (a KDE).

    Whitening once by the shared factor turns every distance into one batched
    matrix product, which makes thousand-component kernel estimates cheap to score.
    ``chunk`` samples are scored at a time; by default as many as keep each
    ``(B, chunk, K)`` temporary near 4 MB, since larger ones are mapped and
    unmapped by the allocator on every call and the page faults cost more than
    the arithmetic. ``tick()``, if given, is called after every chunk.
    """
    logits, means, tril = params(gmm)
    d = means.shape[-1]
    chunk = chunk or max(1, 2**19 // max(1, means.shape[0] * means.shape[1]))
    L = tril[..., 0, :, :]  # (B, D, D)
    centres = torch.linalg.solve_triangular(L, means.mT, upper=False).mT  # (B, K, D)
    const = logits - 0.5 * d * _LOG_2PI - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)[..., None]
    c2 = (centres**2).sum(-1)  # (B, K)
    out = []
    for xs in x.to(means.dtype).split(chunk, dim=0):
        w = torch.linalg.solve_triangular(L, xs.permute(1, 2, 0), upper=False)  # (B, D, s)
        cross = torch.bmm(w.mT, centres.mT)  # (B, s, K)
        sq = (w**2).sum(1)[..., None] + c2[:, None, :] - 2 * cross
        out.append(torch.logsumexp(const[:, None, :] - 0.5 * sq.clamp_min(0), -1).T)
        if tick is not None:
            tick()
    return torch.cat(out, 0)
