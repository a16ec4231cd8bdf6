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


#: most bytes :func:`read_idx` reads from one file unless told otherwise (1 GiB; MNIST's training images are 47 MB)
MAX_IDX_BYTES = 1 << 30


def read_idx(path: str | os.PathLike, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an idx file (optionally gzipped), as used by MNIST.

    The header's declared shape is checked against ``max_bytes`` before
    anything is allocated, and a gzipped file is read only as far as the shape
    declares, so a small crafted file cannot expand into gigabytes.

    Raises:
        InputError: ``path`` is missing or not a regular file (a FIFO cannot hang the reader).
        FormatError: not an unsigned-byte idx file, a truncated one, or trailing bytes (a ``ValueError``).
        LimitError: the declared shape holds more than ``max_bytes`` bytes.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.idx")
        >>> _ = open(path, "wb").write(bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6)))
        >>> read_idx(path).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    import zlib

    from probmod.errors import FormatError, LimitError
    from probmod.io import check_regular_file

    path = check_regular_file(path, "idx file")
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\0\0\x08" or head[3] == 0:
                raise FormatError(f"{path}: not an unsigned-byte idx file")
            raw_dims = f.read(4 * head[3])
            if len(raw_dims) < 4 * head[3]:
                raise FormatError(f"{path}: truncated idx header")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, dtype=">u4"))
            size = 1
            for d in dims:
                size *= d
            if size > max_bytes:
                raise LimitError(f"{path}: declares shape {dims} ({size} bytes), over the {max_bytes}-byte limit")
            payload = f.read(size)
            if len(payload) != size:
                raise FormatError(f"{path}: truncated idx file ({len(payload)} bytes for shape {dims})")
            if f.read(1):
                raise FormatError(f"{path}: trailing bytes after the {size} bytes of shape {dims}")
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise FormatError(f"{path}: corrupt gzip stream ({err})") from None
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
        raise FileNotFoundError(
            "MNIST is not available: set PROBMOD_DATA or place ../shared/data/mnist beside the checkout"
        )
    images = read_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz")
    return images, labels
