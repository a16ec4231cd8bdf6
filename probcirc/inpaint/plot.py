"""The comparison figure: one row per method, one column per mask kind."""

from __future__ import annotations

import os

import numpy as np

from probmod import io


def method_grid(rows: dict[str, list[np.ndarray]], kinds: list[str], path: str | os.PathLike) -> None:
    """Write a PNG grid of grey images: row label = method (or "true", "masked"), column title = mask kind.

    Example:
        >>> import tempfile, os
        >>> img = np.zeros((4, 4), np.uint8)
        >>> out = os.path.join(tempfile.mkdtemp(), "grid.png")
        >>> method_grid({"true": [img, img], "mpe": [img, img]}, ["left", "top"], out)
        >>> os.path.getsize(out) > 0
        True
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.3 * len(kinds) + 1.2, 1.3 * len(rows)))
    axes = fig.subplots(len(rows), len(kinds), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c, img in enumerate(imgs):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(kinds[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle("inpainting: columns are mask kinds, rows are methods", fontsize=9)
    fig.tight_layout()
    with io.atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
