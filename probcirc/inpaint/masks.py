"""Inpainting masks: the paper's kinds (halves, centre square, random pixels, strips), PNG files, and their checks.

A mask here is a boolean array ``(H, W)`` or ``(N, H, W)`` with ``True`` marking
a KNOWN pixel; the missing pixels are the ones to fill in. In a PNG mask, white
(>= 128) marks the pixels to fill in, black the known ones.

Example:
    >>> m = make_mask("left", (4, 4))
    >>> m.astype(int)
    array([[0, 0, 1, 1],
           [0, 0, 1, 1],
           [0, 0, 1, 1],
           [0, 0, 1, 1]])
    >>> float((~make_mask("random:0.8", (28, 28), seed=1)).mean()) > 0.75
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from probmod.errors import FormatError, UsageError
from probmod.io import check_regular_file

__all__ = ["MASK_KINDS", "check_mask", "load_mask", "make_mask"]

#: the six kinds the benchmark runs; ``strips`` alone means vertical strips
MASK_KINDS = ("left", "top", "center", "random:0.8", "strips:v", "strips:h")
STRIP_WIDTH = 4


def make_mask(kind: str, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """The known-pixel mask ``(H, W)`` of one kind: ``left``/``top`` (that half missing), ``center``
    (a centred square of half the side missing), ``random:P`` (each pixel missing with probability P),
    ``strips``/``strips:v``/``strips:h`` (alternate bands of 4 pixels missing, offset drawn from ``seed``)."""
    h, w = shape
    known = np.ones((h, w), dtype=bool)
    name, _, arg = kind.partition(":")
    rng = np.random.default_rng(seed)
    if kind == "left":
        known[:, : w // 2] = False
    elif kind == "top":
        known[: h // 2] = False
    elif kind == "center":
        known[h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = False
    elif name == "random":
        try:
            p = float(arg or 0.8)
        except ValueError:
            raise UsageError(f"mask kind {kind!r}: expected random:P with P a share, like random:0.8") from None
        if not 0 < p < 1:
            raise UsageError(f"mask kind {kind!r}: the missing share must lie strictly between 0 and 1")
        known = rng.random((h, w)) >= p
    elif name == "strips" and arg in ("", "v", "h"):
        offset = int(rng.integers(2 * STRIP_WIDTH))
        band = ((np.arange(w if arg != "h" else h) + offset) // STRIP_WIDTH) % 2 == 0
        known = np.broadcast_to(band[None, :] if arg != "h" else band[:, None], (h, w)).copy()
    else:
        raise UsageError(
            f"unknown mask kind {kind!r}; use one of left, top, center, random:P, strips, strips:v, strips:h"
        )
    return check_mask(known, (h, w), what=f"mask {kind!r}")


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A known-pixel mask from an image file: white (>= 128) = missing, black = known."""
    from PIL import Image, UnidentifiedImageError

    path = check_regular_file(Path(path), "mask")
    try:
        with Image.open(path) as im:
            if im.width * im.height > 16_000_000:
                raise UsageError(f"mask {path}: {im.width}x{im.height} is far larger than any image here")
            grey = np.asarray(im.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise FormatError(f"mask {path}: not a readable image ({err})") from err
    return grey < 128


def check_mask(known: np.ndarray, image_shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """``known`` as booleans after checking it fits ``image_shape`` and leaves something known and something missing."""
    known = np.asarray(known)
    if known.dtype != bool:
        raise UsageError(f"{what}: expected booleans (True = known pixel), got {known.dtype}")
    if known.shape[-2:] != tuple(image_shape) or known.ndim not in (2, 3):
        got = "x".join(map(str, known.shape[-2:])) if known.ndim >= 2 else str(known.shape)
        raise UsageError(f"{what} is {got} but the images are {image_shape[0]}x{image_shape[1]}")
    per_image = known.reshape(-1, known.shape[-2] * known.shape[-1])
    if per_image.all(axis=1).any():
        raise UsageError(f"{what} leaves no pixel missing: nothing to inpaint")
    if not per_image.any(axis=1).all():
        raise UsageError(f"{what} hides every pixel: inpainting needs some known pixels")
    return known
