"""EM for Gaussian mixtures from a k-means++ start, exact under missing values."""

from __future__ import annotations

import torch

from probmod.progress import Progress


def fit_em(cls, X, n_components: int, max_iter: int, tol: float, reg_covar: float, seed, progress: bool):
    X = torch.as_tensor(X)
    if not X.is_floating_point():
        X = X.double()
    if X.dim() != 2:
        raise ValueError(f"X must have shape (N, D), got {tuple(X.shape)}")
    n, d = X.shape
    if not isinstance(n_components, int) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    if n < n_components:
        raise ValueError(f"need at least n_components={n_components} samples, got {n}")
    missing = torch.isnan(X)
    if bool(missing.all(dim=0).any()):
        raise ValueError("a column of X is entirely missing; drop it before fitting")
    if bool(torch.isinf(X).any()):
        raise ValueError("X contains infinite values")
    gen = torch.Generator(device=X.device).manual_seed(0 if seed is None else seed)
    gmm = _init_kmeanspp(cls, X, missing, n_components, reg_covar, gen)
    eye = reg_covar * torch.eye(d, dtype=X.dtype, device=X.device)
    prev = -float("inf")
    bar = Progress(max_iter, "GMM EM", "iter", enabled=progress)
    for _ in range(max_iter):
        # The conditional gives, per sample and component, the responsibility, the
        # completed sample E[x | x_obs, k] and the covariance of its missing part.
        post = gmm.condition(X, missing)
        r = post.weights  # (N, K)
        nk = r.sum(0) + 10 * torch.finfo(X.dtype).eps
        means = (r[..., None] * post.means).sum(0) / nk[:, None]
        diff = post.means - means
        scatter = torch.einsum("nk,nki,nkj->kij", r, diff, diff) + torch.einsum("nk,nkij->kij", r, post.covariances)
        covs = scatter / nk[:, None, None] + eye
        gmm = cls(nk / nk.sum(), means, (covs + covs.mT) / 2)
        ll = float(gmm.log_prob(X, missing).mean())
        bar.update(1)
        bar.set_postfix(f"loglik={ll:.4f}")
        if ll - prev < tol * max(1.0, abs(ll)):
            break
        prev = ll
    bar.close()
    return gmm


def _init_kmeanspp(cls, X, missing, k, reg_covar, gen):
    """k-means++ seeding on mean-imputed data, then one hard assignment for the first covariances."""
    col_mean = torch.nanmean(X, dim=0)
    Xf = torch.where(missing, col_mean, X)
    n, d = Xf.shape
    centers = [Xf[torch.randint(n, (1,), generator=gen, device=X.device)].squeeze(0)]
    dist = ((Xf - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = dist / dist.sum() if float(dist.sum()) > 0 else torch.full_like(dist, 1.0 / n)
        c = Xf[torch.multinomial(probs, 1, generator=gen)].squeeze(0)
        centers.append(c)
        dist = torch.minimum(dist, ((Xf - c) ** 2).sum(1))
    centers = torch.stack(centers)
    assign = torch.cdist(Xf, centers).argmin(1)
    var = Xf.var(0).mean().clamp_min(reg_covar)
    weights, covs = [], []
    for j in range(k):
        pts = Xf[assign == j]
        if len(pts) > d:
            cov = torch.cov(pts.T).reshape(d, d)
        else:
            cov = var * torch.eye(d, dtype=X.dtype, device=X.device)
        covs.append(
            cov
            + reg_covar * torch.eye(d, dtype=X.dtype, device=X.device)
            + 1e-3 * var * torch.eye(d, dtype=X.dtype, device=X.device)
        )
        weights.append(max(len(pts), 1))
    w = torch.tensor(weights, dtype=X.dtype, device=X.device)
    return cls(w / w.sum(), centers, torch.stack(covs))
