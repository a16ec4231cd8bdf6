"""Data for sparse coding: the bars test and natural-image patches.

Image patches come from the user's own photographs (any format Pillow reads,
turned to grey-scale) or, by default, from scikit-image's bundled images
(``skimage.data``, no download), which is part of the ``bench`` extra and
imported only when needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probmod.errors import FormatError, LimitError, UsageError
from probmod.progress import Progress

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MODELS_TRUTH",
    "bars_data",
    "bars_dictionary",
    "dog_filter",
    "greedy_match",
    "image_files",
    "image_patches",
    "load_gray",
]


def bars_dictionary(size: int = 5, amplitude: float = 10.0) -> np.ndarray:
    """The ``2 * size`` bars on a ``size x size`` grid as a (size², 2·size) dictionary.

    Columns ``0..size-1`` are horizontal bars (rows of the grid), the rest vertical.

    Example:
        >>> bars_dictionary(3, 1.0)[:, 0].reshape(3, 3).tolist()
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    W = np.zeros((size, size, 2 * size))
    for i in range(size):
        W[i, :, i] = 1.0
        W[:, i, size + i] = 1.0
    return amplitude * W.reshape(size * size, 2 * size)


#: how each model's ground truth on the bars test is built from the bars
MODELS_TRUTH = ("bsc", "tsc", "dsc", "mca", "mmca", "gsc")


def bars_truth(
    model: str, size: int = 5, pi: float = 0.2, sigma: float = 2.0, amplitude: float = 10.0, signed: bool = False
) -> dict:
    """Ground-truth parameters of ``model`` on the bars test.

    BSC, TSC, MCA, MMCA: ``W = amplitude * bars`` (MMCA with ``signed``: every
    other bar scaled by -0.7, so that magnitudes differ where bars cross);
    DSC: values (0, 1, 2) with prior (1 - pi, pi/2, pi/2); GSC: slab ``mu = 1``, ``Psi = 0.1 I``.
    """
    W = bars_dictionary(size, amplitude)
    H = W.shape[1]
    params = {"W": W, "pi": np.array(pi), "sigma": np.array(sigma)}
    extra = {}
    if model == "mmca" and signed:
        params["W"] = W * np.where(np.arange(H) % 2 == 0, 1.0, -0.7)
    if model == "dsc":
        params["prior"] = np.array([1.0 - pi, pi / 2, pi / 2])
        extra["values"] = (0.0, 1.0, 2.0)
    elif model == "gsc":
        params["mu"] = np.ones(H)
        params["Psi"] = 0.1 * np.eye(H)
    elif model not in MODELS_TRUTH:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS_TRUTH)}")
    return {"params": params, "extra": extra}


def bars_data(
    N: int = 1000,
    size: int = 5,
    pi: float = 0.2,
    sigma: float = 2.0,
    amplitude: float = 10.0,
    model: str = "bsc",
    seed: int = 0,
    signed: bool = False,
) -> dict:
    """Draw the bars test from ``model``'s generative model.

    Returns a dict with ``Y`` (N, size²), ``S`` (N, 2·size) and the true
    parameters (``W``, ``pi``, ``sigma``, ...).

    Example:
        >>> d = bars_data(N=10, seed=1)
        >>> d["Y"].shape, d["W"].shape
        ((10, 25), (25, 10))
    """
    from .models import MODELS

    if N < 1:
        raise ValueError(f"N must be at least 1, got {N}")
    if not 0 < pi < 1:
        raise ValueError(f"pi must lie in (0, 1), got {pi}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    truth = bars_truth(model, size, pi, sigma, amplitude, signed)
    params = truth["params"]
    m = MODELS[model].from_params(H=2 * size, **truth["extra"], **params)
    S, Y = m.generate(m.params_, N, np.random.default_rng(seed))
    return {"Y": Y, "S": S, **m.params_, **{k: np.asarray(v) for k, v in truth["extra"].items()}}


_IMAGES = ("camera", "astronaut", "coffee", "chelsea", "coins", "moon", "page", "text", "grass", "gravel", "brick")
#: file name endings taken from a folder given to :func:`image_files`
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".ppm", ".pnm")
#: most pixels one image may declare before it is refused as a decompression bomb (``--max-pixels``)
MAX_PIXELS = 1 << 25


def image_files(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by ``sources``: files as given, folders by their image files in name order.

    Raises:
        InputError: a source does not exist or is not a file or folder; a folder holds no image.

    Example:
        >>> image_files([])
        []
    """
    from probmod.io import expand_inputs

    kinds = f"image files ({', '.join(IMAGE_SUFFIXES)})"
    return expand_inputs(sources, lambda p: p.suffix.lower() in IMAGE_SUFFIXES, kinds, "image file")


def load_gray(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One image file as a 2-D float32 array in [0, 1] (Pillow; colour turned to luma, the first frame only).

    The declared size is checked against ``max_pixels`` before any pixel is decoded.

    Raises:
        InputError: not a regular file. FormatError: not an image Pillow can read.
        LimitError: the image declares more than ``max_pixels`` pixels (a decompression bomb, or a huge photo).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> Image.new("RGB", (3, 2), (255, 255, 255)).save(p)
        >>> load_gray(p).shape, float(load_gray(p).max())
        ((2, 3), 1.0)
    """
    import warnings

    from PIL import Image

    from probmod.io import check_regular_file

    path = check_regular_file(path, "image file")
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise Image.DecompressionBombError(f"{w * h} pixels")
                if im.mode in ("I", "F") or im.mode.startswith("I;"):  # 16/32-bit grey: keep the full range
                    arr = np.asarray(im.convert("F"), dtype=np.float32)
                    arr = arr - arr.min()
                    return arr / (arr.max() or 1.0)
                return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise LimitError(
            f"{path}: the image declares more than {max_pixels} pixels (--max-pixels); "
            "raise the limit if the image is trusted"
        ) from None
    except MemoryError:
        raise LimitError(f"{path}: out of memory decoding the image") from None
    except (OSError, ValueError, SyntaxError) as err:  # UnidentifiedImageError is an OSError
        raise FormatError(f"{path}: not a readable image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _skimage_photos(size: int, names: Sequence[str] | None) -> list[np.ndarray]:
    try:
        import skimage.data
        from skimage.color import rgb2gray
    except ImportError:
        raise ImportError(
            "the default photographs need scikit-image; install it with `pip install probmod[bench]` "
            "or pass your own images"
        ) from None
    imgs = []
    for name in names or _IMAGES:
        loader = getattr(skimage.data, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader(), dtype=np.float64)
        except Exception:  # noqa: BLE001, S112 - an image missing from this skimage build (any loader error): skip it
            continue
        if img.ndim == 3:
            img = rgb2gray(img[..., :3])
        img = img / (img.max() or 1.0)
        if min(img.shape) > size:
            imgs.append(img)
    if not imgs:
        raise ValueError("no usable scikit-image image found for patches")
    return imgs


#: how ``image_patches`` presents a patch: as is, or as non-negative ON and OFF halves
CHANNELS = ("signed", "onoff")
WHITENING = ("zca", "dog", "none")
#: centre and surround widths (pixels) of the DoG filter: a surround of twice the centre flattens the
#: spectrum of scikit-image's photographs (spectral flatness of 12x12 patches 0.22 raw, 0.61 filtered)
#: while the centre damps the highest frequencies, where pixel noise and aliasing live
DOG_SIGMAS = (0.5, 1.0)


def dog_filter(img: np.ndarray, center: float = DOG_SIGMAS[0], surround: float = DOG_SIGMAS[1]) -> np.ndarray:
    """A difference of Gaussians, ``G_center * img - G_surround * img``: the retina's whitening filter.

    Natural images have power falling about as 1/f² with spatial frequency f; the DoG's gain
    rises with f up to about ``1 / (2 pi center)`` and falls beyond, so it flattens the
    spectrum over the frequencies a patch resolves without amplifying pixel noise.

    Example:
        >>> flat = np.full((20, 20), 3.0)
        >>> float(np.abs(dog_filter(flat)).max()) < 1e-12   # a uniform image has no contrast left
        True
    """
    from scipy import ndimage

    img = np.asarray(img, dtype=np.float64)
    return ndimage.gaussian_filter(img, center, mode="reflect") - ndimage.gaussian_filter(img, surround, mode="reflect")


def _whitening(whiten: bool | str) -> str:
    """``True``/``"zca"`` -> ``"zca"``, ``False``/``"none"`` -> ``"none"``, ``"dog"``; else UsageError."""
    method = {True: "zca", False: "none"}.get(whiten, whiten) if isinstance(whiten, bool) else whiten
    if method not in WHITENING:
        raise UsageError(f"whiten must be one of {', '.join(WHITENING)}, got {whiten!r}")
    return str(method)


def image_patches(
    N: int = 50000,
    size: int = 12,
    seed: int = 0,
    images: Sequence[str] | None = None,
    whiten: bool | str = True,
    eps: float = 1e-2,
    files: Sequence[str | os.PathLike] | None = None,
    keep: float = 1.0,
    max_pixels: int = MAX_PIXELS,
    progress: bool = False,
    channels: str = "signed",
) -> np.ndarray:
    """Random ``size x size`` grey-scale patches, each with its mean removed, optionally whitened.

    The photographs are the user's image ``files`` (read with Pillow, one at a
    time, colour turned to luma) or, without ``files``, scikit-image's bundled
    ones (``images`` picks them by name). Each image gives an equal share of
    patches at uniformly drawn positions. With ``keep < 1``, ``N / keep``
    patches are drawn and the ``N`` of highest variance kept, so flat sky and
    walls do not dominate. ``whiten``: ``"zca"`` (or True) multiplies the
    patches by ``C^(-1/2)`` with ``eps * max eigenvalue`` added to every
    eigenvalue; ``"dog"`` filters each image with :func:`dog_filter` before its
    patches are cut; ``"none"`` (or False) leaves them. The result is scaled to
    unit mean variance per pixel. ``progress`` reports the images read.
    ``channels="onoff"`` splits each patch ``p`` into ``[max(p, 0), max(-p, 0)]``
    (ON and OFF cells, as the maximal-causes papers feed MCA, whose causes are
    non-negative): (N, 2 size²).

    Returns:
        an (N, size²) float64 array, or (N, 2 size²) for ``channels="onoff"``.

    Raises:
        ImportError: no ``files`` and scikit-image is not installed (``pip install probmod[bench]``).
        UsageError: ``size``, ``N`` or ``keep`` out of range, or no image larger than ``size``.
        LimitError: an image over ``max_pixels``, or whitening over more than 4096 pixels per patch.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> p = os.path.join(tempfile.mkdtemp(), "noise.png")
        >>> Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)).save(p)
        >>> P = image_patches(N=500, size=4, files=[p], keep=0.5)
        >>> P.shape, bool(np.allclose(P.reshape(500, 16).mean(axis=1), 0, atol=1e-9))
        ((500, 16), True)
    """
    if size < 2 or N < 1:
        raise UsageError(f"need size >= 2 and N >= 1, got size={size}, N={N}")
    if not 0 < keep <= 1:
        raise UsageError(f"keep must lie in (0, 1], got {keep}")
    if channels not in CHANNELS:
        raise UsageError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    D = size * size
    method = _whitening(whiten)
    if method == "zca" and D > 4096:
        raise LimitError(f"whitening {size}x{size} patches needs a {D}x{D} covariance; use --size <= 64 or --no-whiten")
    rng = np.random.default_rng(seed)
    M = int(np.ceil(N / keep))
    sources: Sequence[Any] = _skimage_photos(size, images) if files is None else image_files(files)
    if not sources:
        raise UsageError("no image files given")

    def load(i: int) -> np.ndarray:  # the user's files are read one at a time, when their patches are cut
        return sources[i] if files is None else load_gray(sources[i], max_pixels)

    which = rng.integers(len(sources), size=M)
    P = np.empty((M, D))
    filled = np.zeros(M, dtype=bool)
    bar = Progress(total=len(sources), desc="images", unit="img", enabled=progress)
    for i in range(len(sources)):  # one image in memory at a time
        sel = np.nonzero(which == i)[0]
        bar.update(1)
        if len(sel) == 0:
            continue
        img = load(i)
        if min(img.shape) < size:
            continue
        if method == "dog":  # the whole image: no patch-border effects
            img = dog_filter(img)
        r = rng.integers(img.shape[0] - size + 1, size=len(sel))
        c = rng.integers(img.shape[1] - size + 1, size=len(sel))
        ii = r[:, None, None] + np.arange(size)[None, :, None]
        jj = c[:, None, None] + np.arange(size)[None, None, :]
        P[sel] = img[ii, jj].reshape(len(sel), -1)
        filled[sel] = True
    bar.close()
    if not filled.any():
        raise UsageError(f"no image is at least {size}x{size} pixels; use a smaller --size")
    P = P[filled]
    P -= P.mean(axis=1, keepdims=True)
    if keep < 1:  # the most variable patches, ties by draw order
        order = np.lexsort((np.arange(len(P)), -P.var(axis=1)))
        P = P[np.sort(order[:N])]
    elif len(P) < N:  # patches of images too small were dropped: draw again from the usable ones
        P = P[rng.integers(len(P), size=N)]
    P = P[:N]
    if method == "zca":
        C = P.T @ P / len(P)
        w, V = np.linalg.eigh(C)
        P = P @ (V / np.sqrt(w + eps * w.max())) @ V.T
    scale = np.sqrt(np.mean(P.var(axis=0)))
    P = P / (scale if scale > 0 else 1.0)
    if channels == "onoff":
        P = np.concatenate([np.maximum(P, 0.0), np.maximum(-P, 0.0)], axis=1)
    return P


def greedy_match(W: np.ndarray, W_true: np.ndarray, up_to_sign: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Greedily pair learned columns with true ones by smallest mean absolute error.

    Returns ``(match, mae)``: ``match[j]`` is the learned column paired with
    true column ``j`` and ``mae[j]`` its mean absolute error (after flipping the
    sign of the learned column when ``up_to_sign`` and that helps).

    Example:
        >>> import numpy as np
        >>> T = np.eye(3)
        >>> greedy_match(T[:, [2, 0, 1]], T)[0].tolist()
        [1, 2, 0]
    """
    W, W_true = np.asarray(W, dtype=np.float64), np.asarray(W_true, dtype=np.float64)
    if W.shape[0] != W_true.shape[0]:
        raise ValueError(f"W has {W.shape[0]} rows but W_true has {W_true.shape[0]}")
    cost = np.abs(W[:, :, None] - W_true[:, None, :]).mean(axis=0)  # (H, H_true)
    if up_to_sign:
        cost = np.minimum(cost, np.abs(-W[:, :, None] - W_true[:, None, :]).mean(axis=0))
    match = np.full(W_true.shape[1], -1)
    mae = np.full(W_true.shape[1], np.inf)
    cost = cost.copy()
    for _ in range(min(W.shape[1], W_true.shape[1])):
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        match[j], mae[j] = i, cost[i, j]
        cost[i, :] = np.inf
        cost[:, j] = np.inf
    return match, mae
