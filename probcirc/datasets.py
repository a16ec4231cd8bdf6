"""Locating and reading the data sets that ship beside the project (never downloaded)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent


def shared_data_dir() -> Path | None:
    """The shared data folder: ``$PROBMOD_DATA``, or ``../shared/data`` beside the checkout; None if absent."""
    env = os.environ.get("PROBMOD_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(_HERE.parent.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (optionally gzipped), as used by MNIST.

    Raises:
        ValueError: if the header is not a valid idx header or the payload is truncated.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    payload = raw[4 + 4 * ndim :]
    if len(payload) != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated idx file ({len(payload)} bytes for shape {tuple(dims)})")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def load_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """MNIST images ``(N, 28, 28)`` uint8 and labels from the shared data folder.

    Raises:
        FileNotFoundError: if the shared folder or the files are absent.
    """
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = shared_data_dir()
    if root is None or not (root / "mnist").is_dir():
        raise FileNotFoundError("MNIST is not available: set PROBMOD_DATA or place ../shared/data/mnist beside the checkout")
    images = read_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels
