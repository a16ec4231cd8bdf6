"""Image planes, the reversible colour transform and patch tiling."""

from __future__ import annotations

import numpy as np

#: image modes the codec stores; the value is the code written in a .pcz file
MODES = {"L": 0, "RGB": 1}
MODE_NAMES = {v: k for k, v in MODES.items()}


class ImageModeError(ValueError):
    """The image is not 8-bit grey or 8-bit RGB."""


def check_image(img) -> tuple[np.ndarray, str]:
    """Return ``(array, mode)`` for an 8-bit grey ``(H, W)`` or RGB ``(H, W, 3)`` array.

    Raises:
        ImageModeError: naming what is wrong and what to do instead.
    """
    a = np.asarray(img)
    if a.dtype != np.uint8:
        if a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() > 255):
            raise ImageModeError(
                f"values must be 8-bit (0..255), got {a.dtype} in [{a.min()}, {a.max()}]; "
                "16-bit images are not supported"
            )
        if a.dtype.kind not in "iub":
            raise ImageModeError(f"images must be integer 8-bit arrays, got dtype {a.dtype}")
        a = a.astype(np.uint8)
    if a.ndim == 2:
        mode = "L"
    elif a.ndim == 3 and a.shape[2] == 3:
        mode = "RGB"
    else:
        raise ImageModeError(f"images must be (H, W) grey or (H, W, 3) RGB, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageModeError(f"empty image of shape {a.shape}")
    if a.shape[0] >= 2**31 or a.shape[1] >= 2**31:
        raise ImageModeError(f"image too large: {a.shape}")
    return np.ascontiguousarray(a), mode


def rgb_to_planes(rgb: np.ndarray) -> list[np.ndarray]:
    """YCoCg-R lifting in modular 8-bit arithmetic, chroma centred on 128; exactly invertible.

    ``co = R - B``, ``t = B + (co >> 1)``, ``cg = G - t``, ``y = t + (cg >> 1)``, with co and cg
    wrapped to [-128, 127] and stored as ``+128``. Every step is a lifting step mod 256, so
    :func:`planes_to_rgb` undoes it exactly for every input.
    """
    r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
    co = (r - b + 128) & 255
    t = (b + ((co - 128) >> 1)) & 255
    cg = (g - t + 128) & 255
    y = (t + ((cg - 128) >> 1)) & 255
    return [y.astype(np.uint8), co.astype(np.uint8), cg.astype(np.uint8)]


def planes_to_rgb(planes: list[np.ndarray]) -> np.ndarray:
    y, co, cg = (p.astype(np.int64) for p in planes)
    t = (y - ((cg - 128) >> 1)) & 255
    g = (cg - 128 + t) & 255
    b = (t - ((co - 128) >> 1)) & 255
    r = (b + co - 128) & 255
    return np.stack([r, g, b], -1).astype(np.uint8)


def rgb_to_green(rgb: np.ndarray) -> list[np.ndarray]:
    """Green first, then ``R - G`` and ``B - (R + G) // 2``, both mod 256 and centred on 128; exactly invertible.

    Unlike modular YCoCg-R, whose luma takes half of a chroma value that has
    already wrapped (so saturated pixels, ``|R - B| >= 128``, jump by 64 or 128
    in every plane), the first plane never wraps and each lifting step reads
    true 8-bit channels: a wrap stays a wrap mod 256 in one chroma plane, which
    the blend predictor reads modulo 256 anyway.

    Example:
        >>> rgb = np.array([[[250, 10, 3], [0, 255, 128]]], np.uint8)
        >>> [p.tolist() for p in rgb_to_green(rgb)]
        [[[10, 255]], [[112, 129]], [[1, 129]]]
        >>> bool((green_to_rgb(rgb_to_green(rgb)) == rgb).all())
        True
    """
    # int16 holds every intermediate (-128 to 383): a quarter of int64's memory on a large photo.
    r, g, b = (rgb[..., c].astype(np.int16) for c in range(3))
    return [
        g.astype(np.uint8),
        ((r - g + 128) & 255).astype(np.uint8),
        ((b - ((r + g) >> 1) + 128) & 255).astype(np.uint8),
    ]


def green_to_rgb(planes: list[np.ndarray]) -> np.ndarray:
    g, d, e = (p.astype(np.int16) for p in planes)
    r = (g + d - 128) & 255
    b = (e - 128 + ((r + g) >> 1)) & 255
    return np.stack([r, g, b], -1).astype(np.uint8)


#: reversible colour transforms, by the name a model stores (``CodecModel.colour``)
COLOURS = {"ycocg": (rgb_to_planes, planes_to_rgb), "green": (rgb_to_green, green_to_rgb)}


def to_planes(img: np.ndarray, mode: str, colour: str = "ycocg") -> list[np.ndarray]:
    return [img] if mode == "L" else COLOURS[colour][0](img)


def from_planes(planes: list[np.ndarray], mode: str, colour: str = "ycocg") -> np.ndarray:
    return planes[0] if mode == "L" else COLOURS[colour][1](planes)


def tile(plane: np.ndarray, ph: int, pw: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a plane into row-major patches ``(n, ph*pw)`` and a validity mask of the same shape.

    Edge patches are padded; padded pixels are marked invalid and are never coded
    (the codec treats them as missing, so the model marginalises them out exactly).
    """
    h, w = plane.shape
    nh, nw = -(-h // ph), -(-w // pw)
    padded = np.zeros((nh * ph, nw * pw), dtype=np.int64)
    valid = np.zeros((nh * ph, nw * pw), dtype=bool)
    padded[:h, :w] = plane
    valid[:h, :w] = True

    def cut(a):
        return a.reshape(nh, ph, nw, pw).transpose(0, 2, 1, 3).reshape(nh * nw, ph * pw)

    return cut(padded), cut(valid)


def untile(patches: np.ndarray, h: int, w: int, ph: int, pw: int) -> np.ndarray:
    nh, nw = -(-h // ph), -(-w // pw)
    full = patches.reshape(nh, nw, ph, pw).transpose(0, 2, 1, 3).reshape(nh * ph, nw * pw)
    return full[:h, :w].astype(np.uint8)


def pack_raw(img: np.ndarray) -> bytes:
    """The codec's raw fallback: one byte ``width`` (bits of the largest value, 1..8), then every value
    (row-major, channels interleaved) in ``width`` bits, most significant first, zero-padded to a byte.

    Example:
        >>> img = np.array([[0, 1], [1, 0]], np.uint8)
        >>> pack_raw(img).hex()               # width 1, bits 0110 then padding
        '0160'
        >>> bool((unpack_raw(pack_raw(img), img.shape) == img).all())
        True
    """
    values = np.ascontiguousarray(img, dtype=np.uint8).reshape(-1)
    width = max(1, int(values.max()).bit_length()) if values.size else 1
    bits = np.unpackbits(values[:, None], axis=1)[:, 8 - width :]
    return bytes([width]) + np.packbits(bits.reshape(-1)).tobytes()


def unpack_raw(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Invert :func:`pack_raw` for an image of ``shape``.

    Raises:
        ValueError: the width byte is not 1..8 or the length does not match ``shape``.
    """
    n = int(np.prod(shape, dtype=np.int64))
    width = data[0] if len(data) else 0
    if not 1 <= width <= 8 or len(data) != 1 + (n * width + 7) // 8:
        raise ValueError(f"raw stream of {len(data)} bytes with width {width} does not hold {n} values")
    bits = np.unpackbits(np.frombuffer(data, np.uint8, offset=1), count=n * width).reshape(n, width)
    full = np.zeros((n, 8), np.uint8)
    full[:, 8 - width :] = bits
    return np.packbits(full, axis=1).reshape(shape)
