"""Figures: the dictionary as an image grid and the learning curves (matplotlib, Agg backend)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["dictionary_image", "plot_dictionary", "plot_curves", "plot_run"]


def _patch_shape(D: int, patch_shape: Sequence[int] | None) -> tuple[int, int]:
    if patch_shape is not None and int(np.prod(patch_shape)) == D and len(patch_shape) == 2:
        return int(patch_shape[0]), int(patch_shape[1])
    r = int(math.isqrt(D))
    return (r, r) if r * r == D else (1, D)


def dictionary_image(W: np.ndarray, patch_shape: Sequence[int] | None = None, pad: int = 1) -> np.ndarray:
    """Tile the columns of ``W`` (D, H) into one 2-D array, each tile scaled to [-1, 1] by its max |value|.

    Example:
        >>> dictionary_image(np.ones((4, 3))).shape   # three 2x2 tiles on a 2x2 grid, 1-pixel gaps
        (5, 5)
    """
    D, H = W.shape
    h, w = _patch_shape(D, patch_shape)
    cols = int(math.ceil(math.sqrt(H)))
    rows = int(math.ceil(H / cols))
    img = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan)
    for i in range(H):  # loop over dictionary elements
        r, c = divmod(i, cols)
        tile = W[:, i].reshape(h, w)
        m = np.abs(tile).max()
        img[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tile / (m if m > 0 else 1.0)
    return img


def plot_dictionary(W: np.ndarray, path: str | os.PathLike, patch_shape: Sequence[int] | None = None,
                    title: str | None = None) -> Path:
    """Save the dictionary ``W`` (D, H) as an image grid PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = dictionary_image(np.asarray(W), patch_shape)
    fig, ax = plt.subplots(figsize=(6, 6 * img.shape[0] / max(img.shape[1], 1) + 0.5))
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    ax.imshow(img, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_curves(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save the truncated log-likelihood, pi, sigma and T per EM step as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(results["step"]) + 1
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax, key, label in zip(axes, ("loglik", "pi", "sigma", "T"),
                              ("truncated log-likelihood / point", "pi", "sigma", "temperature T")):
        ax.plot(steps, np.asarray(results[key]).reshape(len(steps), -1))
        ax.set_xlabel("EM step")
        ax.set_title(label)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw ``dictionary.png`` and ``curves.png`` for a run folder; returns the paths."""
    from .io import load_results

    res = load_results(run_dir)
    out = Path(out_dir or run_dir)
    cfg = res["config"]
    W = res["W"][-1]
    if cfg.get("model") == "gsc" and "mu" in res:
        W = W * res["mu"][-1]
    title = f"{cfg.get('model', '').upper()} dictionary after {len(res['step'])} steps"
    return [plot_dictionary(W, out / "dictionary.png", cfg.get("patch_shape"), title),
            plot_curves(res, out / "curves.png")]
