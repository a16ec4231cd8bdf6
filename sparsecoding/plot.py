"""Figures: the dictionary as an image grid sorted by usage, and the learning curves (matplotlib, Agg backend).

*Usage* of dictionary element ``h`` is its mean posterior activation,
``mean_n E[|s_h| | y_n]`` under the truncated posterior at ``T = 1`` (for the
binary models, the mean probability that ``h`` is active), over the first
``max_points`` rows of the run's data. When the data file is not available
the elements are ranked by ``pi * ||W_h||`` instead, and the title says so.
PNGs are written atomically and follow the umask.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = [
    "USAGE_POINTS",
    "dictionary_image",
    "plot_curves",
    "plot_dictionary",
    "plot_run",
    "quality_line",
    "receptive_fields",
    "run_quality",
    "usage",
]

#: data points used to measure usage in :func:`plot_run`
USAGE_POINTS = 2000


def _patch_shape(D: int, patch_shape: Sequence[int] | None) -> tuple[int, int]:
    if patch_shape is not None and int(np.prod(patch_shape)) == D and len(patch_shape) == 2:
        return int(patch_shape[0]), int(patch_shape[1])
    r = math.isqrt(D)
    return (r, r) if r * r == D else (1, D)


def receptive_fields(W: np.ndarray, patch_shape: Sequence[int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """The dictionary's fields as image columns: ``W`` itself, or ``ON - OFF`` for on/off-channel data.

    Data from ``data patches --channels onoff`` hold each patch's positive and negative parts
    side by side (D = 2 h w); a field is then the difference of its two halves.

    Example:
        >>> F, shape = receptive_fields(np.arange(8.0)[:, None], (2, 2))
        >>> F.ravel().tolist(), shape
        ([-4.0, -4.0, -4.0, -4.0], (2, 2))
    """
    D = W.shape[0]
    if patch_shape is not None and len(patch_shape) == 2 and 2 * int(np.prod(patch_shape)) == D:
        half = D // 2
        return W[:half] - W[half:], (int(patch_shape[0]), int(patch_shape[1]))
    return W, _patch_shape(D, patch_shape)


def dictionary_image(W: np.ndarray, patch_shape: Sequence[int] | None = None, pad: int = 1) -> np.ndarray:
    """Tile the columns of ``W`` (D, H) into one 2-D array, each tile scaled to [-1, 1] by its max |value|.

    Example:
        >>> dictionary_image(np.ones((4, 3))).shape   # three 2x2 tiles on a 2x2 grid, 1-pixel gaps
        (5, 5)
    """
    D, H = W.shape
    h, w = _patch_shape(D, patch_shape)
    cols = math.ceil(math.sqrt(H))
    rows = math.ceil(H / cols)
    img = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad), np.nan)
    for i in range(H):  # loop over dictionary elements
        r, c = divmod(i, cols)
        tile = W[:, i].reshape(h, w)
        m = np.abs(tile).max()
        img[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tile / (m if m > 0 else 1.0)
    return img


def plot_dictionary(
    W: np.ndarray,
    path: str | os.PathLike,
    patch_shape: Sequence[int] | None = None,
    title: str | None = None,
    usage: np.ndarray | None = None,
    usage_label: str = "mean posterior activation",
    r2: np.ndarray | None = None,
) -> Path:
    """Save the dictionary ``W`` (D, H) as an image grid PNG, most used element first when ``usage`` is given.

    Each tile is labelled with the element's column in ``W`` and, with ``r2``, the R² of
    its Gabor fit (green when at least :data:`~sparsecoding.gabor.GOOD_R2`); with ``usage``
    a bar chart below the grid shows it per element, in the same order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .gabor import GOOD_R2

    W, (h, w) = receptive_fields(np.asarray(W), patch_shape)
    order = np.arange(W.shape[1]) if usage is None else np.argsort(-np.asarray(usage), kind="stable")
    img = dictionary_image(W[:, order], (h, w))
    height = 6 * img.shape[0] / max(img.shape[1], 1) + 0.5
    if usage is None:
        fig, ax = plt.subplots(figsize=(6, height))
        axes = [ax]
    else:
        fig, axes = plt.subplots(2, 1, figsize=(6, height + 2.2), gridspec_kw={"height_ratios": [height, 2.0]})
    ax = axes[0]
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    shown = ax.imshow(img, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    cols = math.ceil(math.sqrt(W.shape[1]))
    ax.set_xlabel(
        ("most used first, " if usage is not None else "")
        + "tile label = column of W"
        + (f" : Gabor fit R² (green >= {GOOD_R2})" if r2 is not None else "")
    )
    if W.shape[1] <= 144:  # labels stay legible
        size = 6 if W.shape[1] <= 100 else 4
        for rank, col in enumerate(order):
            r, c = divmod(rank, cols)
            text, color = str(col), "black"
            if r2 is not None:
                text, color = f"{col}:{r2[col]:.2f}", ("darkgreen" if r2[col] >= GOOD_R2 else "darkred")
            ax.text(c * (w + 1), r * (h + 1), text, fontsize=size, va="top", ha="left", color=color)
    fig.colorbar(shown, ax=ax, fraction=0.04, label="value / max |value| of the element")
    if title:
        ax.set_title(title)
    if usage is not None:
        axes[1].bar(np.arange(len(order)), np.asarray(usage)[order], color="tab:gray")
        axes[1].set_xlabel("dictionary element, by rank")
        axes[1].set_ylabel(usage_label if len(usage_label) < 28 else "usage")
        axes[1].set_title(f"usage: {usage_label}", fontsize=9)
    return _save(fig, path, dpi=120, bbox_inches="tight")


def _save(fig, path: str | os.PathLike, **kwargs) -> Path:
    import matplotlib.pyplot as plt

    from probmod.io import atomic_path

    path = Path(path)
    try:
        with atomic_path(path, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", **kwargs)
    finally:
        plt.close(fig)
    return path


def usage(model, Y: np.ndarray) -> np.ndarray:
    """Mean posterior activation ``mean_n E[|s_h| | y_n]`` of every element (truncated posterior at T = 1).

    Example:
        >>> from sparsecoding import BSC
        >>> m = BSC.from_params(W=np.eye(3) * 10, pi=0.3, sigma=1.0)
        >>> Y = np.array([[10.0, 0, 0], [10.0, 0, 0], [0, 10.0, 0]])
        >>> np.round(usage(m, Y), 2).tolist()
        [0.67, 0.33, 0.0]
    """
    from .truncation import scatter_vec

    Y = np.asarray(Y, dtype=np.float64)
    et, H, step = model.engine(), int(model.H), int(model.chunk_size)
    total = np.zeros(H)
    for start in range(0, len(Y), step):  # chunks, as in the E-step
        blocks = et.blocks(model.params_, Y[start : start + step])
        post = et.posterior(blocks, 1.0)
        total += cast(np.ndarray, sum(scatter_vec(p @ np.abs(b.vals), b.idx, H) for b, p in zip(blocks, post))).sum(0)
    return total / len(Y)


def plot_curves(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save the truncated log-likelihood, pi, sigma and T per EM step as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.asarray(results["step"]) + 1
    fig, axes = plt.subplots(1, 4, figsize=(14, 3))
    for ax, key, label in zip(
        axes,
        ("loglik", "pi", "sigma", "T"),
        ("free energy (truncated log-lik.) / point", "pi", "sigma", "temperature T"),
    ):
        ax.plot(steps, np.asarray(results[key]).reshape(len(steps), -1))
        ax.set_xlabel("EM step")
        ax.set_title(label)
        ax.set_ylabel(label)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def plot_run(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, max_points: int = USAGE_POINTS
) -> list[Path]:
    """Draw ``dictionary.png`` (sorted by usage) and ``curves.png`` for a run folder; returns the paths."""
    from .io import load_results

    res = load_results(run_dir)
    out = Path(out_dir or run_dir)
    cfg = res["config"]
    W = res["W"][-1]
    if cfg.get("model") == "gsc" and "mu" in res:
        W = W * res["mu"][-1]
    use, label = _run_usage(res, max_points)
    title = f"{cfg.get('model', '').upper()} dictionary after {len(res['step'])} steps"
    quality = run_quality(run_dir, W, cfg.get("patch_shape"), use)
    title += "\n" + quality_line(quality)
    return [
        plot_dictionary(W, out / "dictionary.png", cfg.get("patch_shape"), title, use, label, quality["r2"]),
        plot_curves(res, out / "curves.png"),
    ]


#: the ``quality/`` attribute that names the fields its Gabor fits belong to
FIELDS_SHA256 = "fields_sha256"


def run_quality(run_dir: str | os.PathLike, W: np.ndarray, patch_shape, use: np.ndarray) -> dict[str, Any]:
    """Fit Gabors to the final dictionary's fields; store the numbers as ``quality/`` in the run's ``results.h5``.

    ``order`` (the elements by usage, most used first) is stored with them, and the SHA-256 of the
    fields: when ``quality/`` already holds the fits of these very fields (``train`` plotted, then
    ``plot`` is asked again), they are reused, not fitted again (a few seconds per dozen fields).
    """
    import hashlib

    from probmod.errors import OutputError

    from .gabor import gabor_summary
    from .io import load_quality, write_quality

    F, shape = receptive_fields(np.asarray(W), patch_shape)
    digest = hashlib.sha256(np.ascontiguousarray(F, dtype=np.float64).tobytes() + repr(shape).encode()).hexdigest()
    cached = load_quality(run_dir)
    if cached is not None and cached.get(FIELDS_SHA256) == digest:
        summary = {k: v for k, v in cached.items() if k not in (FIELDS_SHA256, "order")}
    else:
        summary = gabor_summary(F, shape)
    summary["order"] = np.argsort(-np.asarray(use), kind="stable")
    summary[FIELDS_SHA256] = digest
    try:
        write_quality(run_dir, summary)
    except OutputError as err:  # a read-only run folder can still be plotted elsewhere
        warnings.warn(f"Gabor numbers not stored: {err}", stacklevel=2)
    return summary


def quality_line(q: dict[str, Any]) -> str:
    """One line of the Gabor numbers, e.g. ``Gabor share 0.72 (R² >= 0.7), orientations 8/8 bins, ...``."""
    from .gabor import FREQ_BINS, GOOD_R2, N_ORIENTATION_BINS

    nf = len(FREQ_BINS) - 1
    return (
        f"Gabor share {q['gabor_share']:.2f} (R² >= {GOOD_R2}), "
        f"orientations {round(q['orientation_coverage'] * N_ORIENTATION_BINS)}/{N_ORIENTATION_BINS} bins, "
        f"frequencies {round(q['frequency_coverage'] * nf)}/{nf} octaves"
    )


def _run_usage(res: dict[str, Any], max_points: int) -> tuple[np.ndarray, str]:
    """Usage from the run's data when it can be read, else ``pi * ||W_h||``; with a label saying which."""
    from probmod.errors import ProbmodError

    from .cli import make_model
    from .io import inspect_data, read_rows

    cfg = res["config"]
    params = {k: np.asarray(res[k][-1]) for k in ("W", "pi", "sigma", "mu", "Psi", "prior") if k in res}
    try:
        N, _, _ = inspect_data(cfg["data"], cfg["key"])
        n = min(N, max_points)
        Y = read_rows(cfg["data"], cfg["key"], 0, n)
        model = make_model(cfg)
        model.params_ = model.check_params(params, Y.shape[1])
        return usage(model, Y), f"mean posterior activation E|s_h| over {n} data points"
    except (ProbmodError, OSError, KeyError, ValueError):  # data moved or changed: say what we used instead
        norm = np.linalg.norm(res["W"][-1], axis=0) * np.broadcast_to(params["pi"], params["W"].shape[1:])
        return norm, "pi * ||W_h|| (run data not readable)"
