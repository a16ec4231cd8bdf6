"""Pictures of one problem: prior, exact posterior and model posterior."""

from __future__ import annotations

from pathlib import Path

import torch

from probmod.errors import UsageError
from probmod.io import atomic_path

from . import _gmm
from .tasks import Task
from .transformer import DistributionTransformer


def plot_problem(
    model: DistributionTransformer, task: Task, path: str | Path, seed: int = 5, n_obs: int = 3, overwrite: bool = False
) -> None:
    """Draw prior / exact posterior / model posterior for one simulated problem to a PNG.

    2-D latents are drawn as contour panels; 1-D latents as overlaid densities.
    The problem is the first of ``seed``'s draws with ``n_obs`` observations
    (or the most available). The PNG is written atomically, with the mode the
    umask gives a new file, and an existing one is replaced only if ``overwrite``.

    Raises:
        UsageError: the task's latent has more than two dimensions.
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if task.dim not in (1, 2):
        raise UsageError(f"can only plot 1-D or 2-D latents, this task has dim={task.dim}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    problems = task.sample(256, gen)
    counts = (~problems.obs_mask).sum(-1)
    want = min(n_obs, int(counts.max()))
    p = problems[int((counts == want).nonzero()[0, 0])]
    exact = task.posterior(p.prior, p.observations, p.obs_mask)
    with torch.inference_mode():
        f32 = p.to(torch.float32)
        q = model(f32.prior, f32.observations, f32.obs_mask)
    dists = [("prior", p.prior), ("exact posterior", exact), ("transformer posterior", q)]
    fig = _contours(plt, dists, p) if task.dim == 2 else _lines(plt, dists, p, task.name)
    try:
        with atomic_path(path, overwrite) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)


def _extent(gmm, width: float = 3.5) -> tuple[torch.Tensor, torch.Tensor]:
    mean, cov = _gmm.mean_cov(gmm.to(torch.float64))
    sd = torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))[0]
    return mean[0] - width * sd, mean[0] + width * sd


def _contours(plt, dists, p):
    # The prior panel shows the prior's extent; the posterior panels zoom in on the exact posterior.
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, (title, dist) in zip(axes, dists):
        lo, hi = _extent(p.prior if title == "prior" else dists[1][1], 3.5 if title == "prior" else 4.0)
        xs = [torch.linspace(float(lo[i]), float(hi[i]), 200, dtype=torch.float64) for i in range(2)]
        gx, gy = torch.meshgrid(*xs, indexing="xy")
        pts = torch.stack([gx, gy], -1).reshape(-1, 1, 2)
        dens = dist.to(torch.float64).log_prob(pts)[:, 0].exp().reshape(gx.shape)
        ax.contourf(gx.numpy(), gy.numpy(), dens.numpy(), levels=14, cmap="viridis")
        z = p.observations[0][~p.obs_mask[0]]
        if title != "prior" and z.shape[-1] == 2:
            ax.scatter(z[:, 0], z[:, 1], c="white", marker="x", s=30, label="observations")
        ax.scatter(*p.latent[0].tolist(), c="red", marker="*", s=90, label="true latent")
        ax.set_xlim(float(lo[0]), float(hi[0]))
        ax.set_ylim(float(lo[1]), float(hi[1]))
        ax.set_title(title)
        ax.set_xlabel("x₁")
    for ax in axes:
        ax.set_ylabel("x₂")
    axes[-1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def _lines(plt, dists, p, name):
    lo, hi = _extent(p.prior)
    x = torch.linspace(float(lo[0]), float(hi[0]), 1000, dtype=torch.float64)[:, None, None]
    fig, ax = plt.subplots(figsize=(7, 4))
    for (title, dist), style in zip(dists, [":", "-", "--"]):
        d = dist.to(torch.float64) if hasattr(dist, "to") else dist
        ax.plot(x[:, 0, 0].numpy(), d.log_prob(x)[:, 0].exp().numpy(), style, label=title)
    ax.axvline(float(p.latent[0, 0]), color="red", lw=1, label="true latent")
    ax.set_title(name)
    ax.legend()
    fig.tight_layout()
    return fig
