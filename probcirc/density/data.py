"""Reading a density-estimation data set: a ``.npy`` array, an HDF5 dataset or a folder of grey images.

Every source gives non-negative integers, one row per sample: ``(N, D)``
vectors, or ``(N, H, W)`` images (kept as their shape, modelled as ``H*W``
variables). Inputs are untrusted: sizes are checked before values are read,
and HDF5 files are opened through :func:`probmod.io.open_hdf5` and
:func:`probmod.io.safe_datasets` (no links, no external storage, no size bombs).

Example:
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(path, np.zeros((4, 2, 3), dtype=np.uint8))
    >>> ds = load_data(path)
    >>> ds.x.shape, ds.image_shape
    ((4, 6), (2, 3))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probmod.errors import InputError, LimitError, ProbmodError, UsageError
from probmod.io import MAX_BYTES, check_regular_file, open_hdf5, safe_datasets

__all__ = ["Dataset", "load_data", "MAX_LEVELS", "IMAGE_EXTS", "HDF5_EXTS"]

#: values must lie in [0, MAX_LEVELS): every variable gets a categorical leaf over that many values
MAX_LEVELS = 256
IMAGE_EXTS = {".png", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
HDF5_EXTS = {".h5", ".hdf5", ".hdf"}


@dataclass(frozen=True)
class Dataset:
    """Samples ``x`` ``(N, D)`` uint8, and ``image_shape`` ``(H, W)`` when they are images (``H*W == D``)."""

    x: np.ndarray
    image_shape: tuple[int, int] | None
    source: str


def load_data(path: str | Path, key: str | None = None, max_bytes: int = MAX_BYTES) -> Dataset:
    """Read ``path``: a ``.npy`` file, an HDF5 file (dataset ``key``) or a folder of grey images.

    Raises:
        InputError: missing, unreadable, of another kind, not integers in [0, 256), or images of mixed sizes.
        UsageError: ``key`` given for data that is not HDF5, or missing for an HDF5 file with several datasets.
        LimitError: the data declare more than ``max_bytes``.
    """
    path = Path(path)
    if path.is_dir():
        if key is not None:
            raise UsageError("--key applies to HDF5 data only; DATA is a folder")
        return _from_array(_read_folder(path, max_bytes), path)
    check_regular_file(path, "data file (.npy, .h5 or a folder of images)")
    suffix = path.suffix.lower()
    if suffix in HDF5_EXTS:
        return _from_array(_read_hdf5(path, key, max_bytes), path)
    if key is not None:
        raise UsageError(f"--key applies to HDF5 data only; {path} is not .h5/.hdf5")
    if suffix == ".npy":
        return _from_array(_read_npy(path, max_bytes), path)
    raise InputError(f"{path}: unknown kind of data ({suffix or 'no suffix'}); give a .npy, .h5/.hdf5 or a folder")


def _from_array(a: np.ndarray, path: Path) -> Dataset:
    if a.ndim not in (2, 3) or 0 in a.shape:
        raise InputError(f"{path}: data must be a non-empty (N, D) or (N, H, W) array, got shape {a.shape}")
    if a.dtype.kind not in "biu":
        raise InputError(f"{path}: data must hold integers (values 0..{MAX_LEVELS - 1}), got {a.dtype}")
    low, high = int(a.min()), int(a.max())
    if low < 0 or high >= MAX_LEVELS:
        raise InputError(f"{path}: values must lie in 0..{MAX_LEVELS - 1}, found {low}..{high}")
    # One byte a value (all lie below MAX_LEVELS = 256): every rank holds the whole set, and int64
    # would take 8 times the memory (MNIST's training images: 47 MB, not 376 MB).
    a = a.astype(np.uint8, copy=False)
    if len(a) < 2:
        raise InputError(f"{path}: at least 2 samples are needed, got {len(a)}")
    image = (int(a.shape[1]), int(a.shape[2])) if a.ndim == 3 else None
    return Dataset(a.reshape(len(a), -1), image, str(path))


def _check_size(nbytes: int, path: Path, max_bytes: int) -> None:
    if nbytes > max_bytes:
        raise LimitError(f"{path}: declares {nbytes / 2**20:.0f} MiB of data, over the limit of {max_bytes >> 20} MiB")


def _read_npy(path: Path, max_bytes: int) -> np.ndarray:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)  # the header only: sizes are checked before reading
        if not isinstance(a, np.ndarray):
            raise InputError(f"{path}: holds several arrays (.npz); give one (N, D) or (N, H, W) array")
        _check_size(a.nbytes, path, max_bytes)
        return np.array(a)
    except ProbmodError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises many kinds on a damaged file
        raise InputError(f"{path}: unreadable .npy ({type(e).__name__}: {e})") from None


def _read_hdf5(path: Path, key: str | None, max_bytes: int) -> np.ndarray:
    with open_hdf5(path, "HDF5 data file") as f:
        found = safe_datasets(f, max_bytes)
        if key is None:
            if len(found) != 1:
                names = ", ".join(sorted(found)) or "none"
                raise UsageError(f"{path}: holds {len(found)} datasets ({names}); name one with --key")
            key = next(iter(found))
        if key.strip("/") not in found:
            raise InputError(f"{path}: no dataset {key!r} (found: {', '.join(sorted(found)) or 'none'})")
        try:
            return found[key.strip("/")][()]
        except (OSError, RuntimeError, ValueError) as e:
            raise InputError(f"{path}: dataset {key!r} is unreadable ({e})") from None


def _read_folder(path: Path, max_bytes: int) -> np.ndarray:
    files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise InputError(f"{path}: no images ({', '.join(sorted(IMAGE_EXTS))}) in this folder")
    images = [_read_image(files[0], max_bytes)]
    _check_size(images[0].size * len(files), path, max_bytes)
    for f in files[1:]:
        img = _read_image(f, max_bytes)
        if img.shape != images[0].shape:
            h, w = images[0].shape
            raise InputError(
                f"{f}: is {img.shape[0]}x{img.shape[1]} pixels but {files[0].name} is {h}x{w}; "
                "all images must have one size"
            )
        images.append(img)
    return np.stack(images)


def _read_image(path: Path, max_bytes: int) -> np.ndarray:
    """A grey image as uint8 (0/1 for 1-bit images), after checking its declared size."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_size(im.size[0] * im.size[1], path, max_bytes)
                if im.mode not in ("L", "1"):
                    raise InputError(f"{path}: image mode {im.mode} is not supported; grey (L) or 1-bit images only")
                return np.asarray(im, dtype=np.uint8).copy()
    except ProbmodError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the image parser means an unreadable input file
        raise InputError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
