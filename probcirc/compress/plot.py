"""Bits-per-dimension charts: the codec beside other formats, image by image."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from probmod.io import atomic_path


def bits_chart(rows: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "bits per dimension") -> None:
    """Grouped bars of bits per dimension, one group per image and one bar per method, to a PNG.

    ``rows`` maps an image name to ``{method: bits per dimension}``; methods
    missing for an image are left out of its group. The first method seen is
    drawn first in every group, so put the codec first.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "bpd.png")
        >>> bits_chart({"cell": {"PC codec": 1.62, "PNG": 1.64}, "mean": {"PC codec": 3.93, "PNG": 4.19}}, path)
        >>> os.path.getsize(path) > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods: list[str] = []
    for values in rows.values():
        methods += [m for m in values if m not in methods]
    width = 0.8 / max(len(methods), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + len(rows) * (0.45 * len(methods) + 0.4)), 3.6))
    for j, method in enumerate(methods):
        xs = [i + (j - (len(methods) - 1) / 2) * width for i, values in enumerate(rows.values()) if method in values]
        ys = [values[method] for values in rows.values() if method in values]
        bars = ax.bar(xs, ys, width, label=method)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(range(len(rows)), list(rows), rotation=20 if len(rows) > 4 else 0)
    ax.set_ylabel("bits per dimension")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_ylim(0, max((v for values in rows.values() for v in values.values()), default=1) * 1.12)
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
