"""Training a codec model: HCLT on patches, mini-batch then full-batch EM."""

from __future__ import annotations

import numpy as np
import torch

from ..inputs import Categorical
from .codec import CodecModel, check_colour
from .images import check_image, tile, to_planes
from .predict import check_predictor, choose, image_residuals


def default_patch(images) -> tuple[int, int]:
    """One patch per image when every training image has the same small size (up to 32x32, e.g. digits),
    else 8x8: among 4x4, 8x8 and 16x16 it coded held-out photographs best (benchmarks/codec_natural.py)."""
    shapes = {tuple(np.asarray(img).shape[:2]) for img in images}
    if len(shapes) == 1:
        ((h, w),) = shapes
        if h <= 32 and w <= 32:
            return h, w
    return 8, 8


def image_planes(images, colour: str = "ycocg") -> list[np.ndarray]:
    """Every plane of the images as the codec sees them before prediction (RGB: the ``colour`` transform's)."""
    return [plane for img in images for plane in to_planes(*check_image(img), colour)]


def _views(images, colour: str, augment: bool) -> list[list[np.ndarray]]:
    """Each image's planes, and with ``augment`` each of its 7 other views' planes, one list per view."""
    out = []
    for img in images:
        planes = to_planes(*check_image(img), colour)
        views = [dihedral(p) for p in planes] if augment else [[p] for p in planes]
        out += [[v[k] for v in views] for k in range(len(views[0]))]
    return out


def dihedral(plane: np.ndarray) -> list[np.ndarray]:
    """The plane's 8 rotations and mirror images (the first is the plane itself).

    Photographs look alike under them, but a causal predictor's residuals do
    not simply rotate with the plane, so each view is predicted on its own:
    eight times the training patches for the same images.

    Example:
        >>> views = dihedral(np.arange(6, dtype=np.uint8).reshape(2, 3))
        >>> len(views), views[0].shape, views[2].shape, len({v.tobytes() for v in views})
        (8, (2, 3), (3, 2), 8)
    """
    turns = [np.rot90(plane, k) for k in range(4)]
    return [np.ascontiguousarray(v) for t in turns for v in (t, t[:, ::-1])]


def patches_from_planes(planes, patch: tuple[int, int], max_patches: int | None = None, seed: int = 0) -> np.ndarray:
    """All complete (unpadded) patches ``(N, ph*pw)`` of the planes.

    Planes smaller than the patch contribute nothing; at least two full patches are needed overall.
    """
    ph, pw = patch
    rows = []
    for plane in planes:
        v, m = tile(plane, ph, pw)
        rows.append(v[m.all(1)])
    data = np.concatenate(rows) if rows else np.zeros((0, ph * pw), np.int64)
    if len(data) < 2:
        raise ValueError(f"need at least 2 complete {ph}x{pw} patches to train, got {len(data)}; use a smaller --patch")
    if max_patches is not None and len(data) > max_patches:
        data = data[np.random.default_rng(seed).choice(len(data), max_patches, replace=False)]
    return data


def train_codec(
    images,
    patch: tuple[int, int] | None = None,
    latents: int = 32,
    epochs: int = 2,
    full_batch_epochs: int = 1,
    batch_size: int = 512,
    step_size: float = 0.1,
    pseudocount: float | None = None,
    num_bins: int = 4,
    max_patches: int | None = None,
    seed: int = 0,
    progress: bool = False,
    predictor: str = "auto",
    augment: bool | None = None,
    colour: str = "green",
) -> CodecModel:
    """Fit an HCLT with ``Categorical(256)`` leaves on the images' patches; return a :class:`CodecModel`.

    ``patch``: default :func:`default_patch`. ``predictor``: ``"none"`` models the pixels, ``"med"`` the JPEG-LS
    prediction residuals (:mod:`probcirc.compress.predict`; far better on
    photographs), ``"blend"`` and ``"guided"`` adaptive ones; ``"auto"`` picks the one whose values have
    the lower order-0 entropy on these images, and ``"guided"`` where that is ``"blend"`` (the same on grey
    planes; on colour, chroma planes follow the first plane's errors). The Chow-Liu structure uses mutual
    information on ``num_bins`` levels (from at most 5,000 patches), then EM
    fits the parameters.
    ``augment``: train on the 8 rotations and mirror images of every plane (:func:`dihedral`); default
    (None) when the predictor is a spatial one, i.e. for photographs, whose statistics do not depend on
    orientation (on chelsea and rocket held out from the other eight training images of
    ``benchmarks/codec_natural.py`` it saved 0.06-0.07 bits per value), but not for pixels such as
    digits, which are not alike upside down.
    ``pseudocount``: EM's; default (None) 0.03 for residuals (photographs: on the held-out images above 0.03
    beat 0.1 by 0.008 bits per value) and 0.1 for pixels, as before.
    ``colour``: how RGB becomes planes, :data:`~probcirc.compress.images.COLOURS`: ``"green"`` (G, R - G,
    B - (R + G) // 2) coded seven colour photographs outside the benchmarks' test set in 0.01-0.18 fewer
    bits per value than ``"ycocg"`` (modular YCoCg-R, which wraps on saturated colours).
    ``progress=True`` shows EM's progress (off by default, as in scikit-learn; the CLI turns it on).
    """
    import probcirc

    from ..learn import em
    from ..structures import HCLT

    images = list(images)
    patch = patch or default_patch(images)
    planes = image_planes(images, check_colour(colour))
    if predictor == "auto":  # guided is blend on grey planes, so the per-plane choice cannot tell them apart
        chosen = choose(planes)
        predictor = "guided" if chosen == "blend" else chosen
    predictor = check_predictor(predictor)
    if pseudocount is None:
        pseudocount = 0.1 if predictor == "none" else 0.03
    if augment is None:
        augment = predictor != "none"
    views = _views(images, colour, augment)
    data = patches_from_planes([r for v in views for r in image_residuals(v, predictor)], patch, max_patches, seed)
    root = HCLT(data, latents, input_dist=Categorical(256), num_bins=num_bins, seed=seed)
    pc = probcirc.compile(root, seed=seed, dtype=torch.float32)
    x = torch.from_numpy(data.astype(np.int64))
    em(
        pc,
        x,
        epochs=epochs,
        batch_size=batch_size,
        step_size=step_size,
        pseudocount=pseudocount,
        full_batch_epochs=full_batch_epochs,
        seed=seed,
        progress=progress,
    )
    return CodecModel(pc, patch, predictor, colour)
