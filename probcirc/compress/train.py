"""Training a codec model: HCLT on patches, mini-batch then full-batch EM."""

from __future__ import annotations

import numpy as np
import torch

from ..inputs import Categorical
from .codec import CodecModel
from .images import check_image, tile, to_planes
from .predict import check_predictor, choose, residuals


def default_patch(images) -> tuple[int, int]:
    """One patch per image when every training image has the same small size (up to 32x32, e.g. digits),
    else 8x8: among 4x4, 8x8 and 16x16 it coded held-out photographs best (benchmarks/codec_natural.py)."""
    shapes = {tuple(np.asarray(img).shape[:2]) for img in images}
    if len(shapes) == 1:
        ((h, w),) = shapes
        if h <= 32 and w <= 32:
            return h, w
    return 8, 8


def image_planes(images) -> list[np.ndarray]:
    """Every plane of the images as the codec sees them before prediction (RGB: YCoCg-R planes)."""
    return [plane for img in images for plane in to_planes(*check_image(img))]


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
    pseudocount: float = 0.1,
    num_bins: int = 4,
    max_patches: int | None = None,
    seed: int = 0,
    progress: bool = False,
    predictor: str = "auto",
) -> CodecModel:
    """Fit an HCLT with ``Categorical(256)`` leaves on the images' patches; return a :class:`CodecModel`.

    ``patch``: default :func:`default_patch`. ``predictor``: ``"none"`` models the pixels, ``"med"`` the JPEG-LS
    prediction residuals (:mod:`probcirc.compress.predict`; far better on
    photographs), ``"auto"`` picks the one whose values have the lower
    order-0 entropy on these images. The Chow-Liu structure uses mutual
    information on ``num_bins`` levels (from at most 5,000 patches), then EM
    fits the parameters.
    ``progress=True`` shows EM's progress (off by default, as in scikit-learn; the CLI turns it on).
    """
    import probcirc

    from ..learn import em
    from ..structures import HCLT

    images = list(images)
    patch = patch or default_patch(images)
    planes = image_planes(images)
    predictor = choose(planes) if predictor == "auto" else check_predictor(predictor)
    data = patches_from_planes([residuals(p, predictor) for p in planes], patch, max_patches, seed)
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
    return CodecModel(pc, patch, predictor)
