"""The training chart (bits/dim against epoch) and the grid of sampled images, both written atomically as PNG.

Example:
    >>> import numpy as np
    >>> grid(np.ones((5, 2, 3), dtype=np.int64), num_values=2).shape  # 3 columns, 2 rows, 1-pixel gaps
    (5, 11)
"""

from __future__ import annotations

import math
import os

import numpy as np

from probmod.io import atomic_path

__all__ = ["GAP", "grid", "write_chart", "write_png"]

#: pixels between two images of a grid
GAP = 1


def grid(images: np.ndarray, num_values: int) -> np.ndarray:
    """Images ``(n, H, W)`` with values ``0..num_values-1`` tiled into one uint8 image, ceil(sqrt(n)) per row."""
    n, h, w = images.shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP), 128, dtype=np.uint8)
    scaled = (images.astype(np.int64) * 255 // max(num_values - 1, 1)).astype(np.uint8)
    for i, img in enumerate(scaled):
        r, c = divmod(i, cols)
        out[r * (h + GAP) : r * (h + GAP) + h, c * (w + GAP) : c * (w + GAP) + w] = img
    return out


def write_png(image: np.ndarray, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write a uint8 grey image as PNG, atomically."""
    from PIL import Image

    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def write_chart(history: dict[str, np.ndarray], path: str | os.PathLike, overwrite: bool = False) -> None:
    """Train and validation bits per dimension against epoch, as a PNG."""
    from matplotlib.figure import Figure  # not pyplot: no window, no display, no global backend change
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history["train_bpd"]) + 1)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(epochs, history["train_bpd"], "o-", label="train (running mean during the epoch)")
    if np.isfinite(history["valid_bpd"]).any():
        ax.plot(epochs, history["valid_bpd"], "s-", label="validation (after the epoch)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("bits per dimension")
    ax.set_title("probcirc train")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
