"""Randomised smoothing of [0, 1]-valued functions with Clopper-Pearson bounds.

For f: R^d -> [0, 1] and g(x) = E_{ε~N(0, σ²I)} f(x + ε), the map
x -> Φ⁻¹(g(x)) is 1/σ-Lipschitz (Salman et al. 2019, Lemma 2; Kumar et al.
2020), so for every x' with ||x' - x||_2 ≤ δ

    Φ(Φ⁻¹(g(x)) - δ/σ) ≤ g(x') ≤ Φ(Φ⁻¹(g(x)) + δ/σ).

g(x) is estimated by Monte Carlo. To make Clopper-Pearson exact for a
[0, 1]-valued (not binary) f, each draw is turned into a Bernoulli with the
same mean: b = 1[u < f(x + ε)], u ~ U(0, 1). The count of ones is then
Binomial(n, g(x)), and its Clopper-Pearson interval holds with probability
1 - α. Intervals for the V outputs are made simultaneous by Bonferroni
(level α / V each).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy import stats

from probmod.progress import Progress

__all__ = ["clopper_pearson", "smooth", "smoothed_counts", "bounds_from_counts", "gaussian_shift"]


def clopper_pearson(k: np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact binomial interval with coverage ≥ 1 - alpha for each count ``k`` out of ``n``."""
    k = np.asarray(k, dtype=float)
    lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def gaussian_shift(lo: np.ndarray, hi: np.ndarray, delta: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Widen ``[lo, hi]`` bounds on g(x) to bounds on g(x') for all ||x' - x||_2 ≤ delta."""
    if delta == 0:
        return lo, hi
    r = delta / sigma
    return stats.norm.cdf(stats.norm.ppf(lo) - r), stats.norm.cdf(stats.norm.ppf(hi) + r)


def smoothed_counts(
    f: Callable, X, sigma: float, n_samples: int, seed: int = 0, max_rows: int = 16384, progress: bool = False
) -> np.ndarray:
    """Bernoulli counts ``(n, V)`` out of ``n_samples`` Gaussian draws: k ~ Binomial(n_samples, g(x)).

    ``progress=True`` reports the samples done on stderr (:class:`probmod.progress.Progress`).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed)
    per = max(1, max_rows // n_samples)
    counts = []
    with torch.no_grad(), Progress(len(X), f"smoothing ({n_samples} draws)", "sample", enabled=progress) as bar:
        for s in range(0, len(X), per):
            xb = X[s : s + per]
            noisy = xb[:, None, :] + sigma * torch.randn(xb.shape[0], n_samples, xb.shape[1], generator=g)
            out = torch.as_tensor(f(noisy.reshape(-1, xb.shape[1]))).to(torch.float64)
            out = out.reshape(xb.shape[0], n_samples, -1)
            u = torch.rand(out.shape, generator=g, dtype=torch.float64)
            counts.append((u < out).sum(1))
            bar.update(xb.shape[0])
    return torch.cat(counts).numpy()


def bounds_from_counts(
    k: np.ndarray, n_samples: int, alpha: float, delta: float, sigma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Point estimate k/n and bounds valid over the δ-ball, simultaneously over the V columns (Bonferroni)."""
    k = np.asarray(k)
    lo, hi = clopper_pearson(k, n_samples, alpha / k.shape[1])
    lo, hi = gaussian_shift(lo, hi, delta, sigma)
    return (
        torch.from_numpy(k / n_samples),
        torch.from_numpy(np.asarray(lo, dtype=float)),
        torch.from_numpy(np.asarray(hi, dtype=float)),
    )


def smooth(
    f: Callable,
    X,
    sigma: float,
    n_samples: int,
    alpha: float = 0.001,
    delta: float = 0.0,
    seed: int = 0,
    max_rows: int = 16384,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimate the smoothed outputs of ``f`` at every row of ``X`` and bound them over the δ-ball.

    ``f`` maps a float32 batch ``(m, d)`` to values in [0, 1] of shape ``(m, V)``.
    Returns float64 tensors ``(n, V)``: the point estimate k/n (the Bernoulli
    counts' mean, which always lies inside its interval), and lower and upper
    bounds that hold for every x' within L2 distance ``delta`` of x,
    simultaneously over the V outputs, with probability ≥ 1 - ``alpha``.
    """
    k = smoothed_counts(f, X, sigma, n_samples, seed, max_rows, progress)
    return bounds_from_counts(k, n_samples, alpha, delta, sigma)
