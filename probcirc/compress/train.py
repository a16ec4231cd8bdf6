"""Training a codec model: HCLT on patches, mini-batch then full-batch EM."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..inputs import Categorical
from .codec import CodecModel, check_colour
from .images import check_image, to_planes
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


def _views(images, colour: str, augment: bool) -> Iterator[list[np.ndarray]]:
    """Each image's planes, and with ``augment`` each of its 7 other views' planes, one list per view.

    A generator, so that a caller can predict and tile one view before the next is made.
    """
    for img in images:
        planes = to_planes(*check_image(img), colour)
        for k in range(8 if augment else 1):
            yield [_view(p, k) for p in planes]


def _view_shapes(images, colour: str, augment: bool) -> list[tuple[int, int]]:
    """The shapes of the planes :func:`_views` yields, in its order, without making any view."""
    shapes: list[tuple[int, int]] = []
    for img in images:
        a, mode = check_image(img)
        h, w = a.shape[:2]
        planes = len(to_planes(a[:1, :1], mode, colour))  # every plane has the image's shape
        shapes += [(h, w) if k % 4 < 2 else (w, h) for k in range(8 if augment else 1) for _ in range(planes)]
    return shapes


def _view(plane: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` of :func:`dihedral`: ``k // 2`` quarter turns, then a mirror when ``k`` is odd."""
    t = np.rot90(plane, k // 2)
    return np.ascontiguousarray(t[:, ::-1] if k % 2 else t)


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
    return [_view(plane, k) for k in range(8)]


def _complete(shape: tuple[int, int], patch: tuple[int, int]) -> int:
    """How many complete (unpadded) patches :func:`~probcirc.compress.images.tile` cuts from a plane."""
    return (shape[0] // patch[0]) * (shape[1] // patch[1])


def _rows(plane: np.ndarray, patch: tuple[int, int], index: np.ndarray) -> np.ndarray:
    """Complete patches number ``index`` (row-major, as :func:`tile` orders them) of the plane, as int64."""
    ph, pw = patch
    nh, nw = plane.shape[0] // ph, plane.shape[1] // pw
    # A strided view, so that only the chosen patches are ever copied (tile pads and copies the whole plane).
    grid = plane[: nh * ph, : nw * pw].reshape(nh, ph, nw, pw)
    i, j = np.divmod(index, nw)
    return grid[i, :, j, :].astype(np.int64).reshape(len(index), ph * pw)


def patches_from_planes(
    planes,
    patch: tuple[int, int],
    max_patches: int | None = None,
    seed: int = 0,
    *,
    shapes: Sequence[tuple[int, int]] | None = None,
) -> np.ndarray:
    """All complete (unpadded) patches ``(N, ph*pw)`` of the planes, int64, plane after plane.

    With ``max_patches`` (below N) only ``default_rng(seed).choice(N, max_patches, replace=False)`` of
    them, in that order. ``planes`` may be any iterable; given their ``shapes`` too it is read once, one
    plane at a time, and only the chosen patches are kept, so a generator that makes each plane when asked
    (as :func:`train_codec` does) never holds more than one plane (otherwise the planes are listed first).
    Planes smaller than the patch contribute nothing; at least two full patches are needed overall.

    Example:
        >>> planes = [np.arange(12, dtype=np.uint8).reshape(3, 4), np.ones((2, 5), np.uint8)]
        >>> patches_from_planes(planes, (2, 2)).tolist()   # the 3rd row and 5th column are incomplete
        [[0, 1, 4, 5], [2, 3, 6, 7], [1, 1, 1, 1], [1, 1, 1, 1]]
        >>> patches_from_planes(iter(planes), (2, 2), 2, shapes=[(3, 4), (2, 5)]).shape
        (2, 4)
    """
    ph, pw = patch
    if shapes is None:
        planes = [np.asarray(p) for p in planes]
        shapes = [p.shape for p in planes]
    if any(len(s) != 2 for s in shapes):
        raise ValueError(f"planes must be 2-D, got shapes {sorted({tuple(s) for s in shapes if len(s) != 2})}")
    counts = np.array([_complete(s, patch) for s in shapes], np.int64)
    total = int(counts.sum())
    if total < 2:
        raise ValueError(f"need at least 2 complete {ph}x{pw} patches to train, got {total}; use a smaller --patch")
    if max_patches is not None and total > max_patches:
        chosen = np.random.default_rng(seed).choice(total, max_patches, replace=False)
    else:
        chosen = np.arange(total)
    # Walk the planes in order, each taking the chosen numbers in its range, and put its rows where the
    # draw placed them.
    order = np.argsort(chosen, kind="stable")
    bounds = np.searchsorted(chosen[order], np.concatenate([[0], np.cumsum(counts)]))
    data = np.empty((len(chosen), ph * pw), np.int64)
    start = 0
    for plane, n, shape, lo, hi in zip(planes, counts, shapes, bounds[:-1], bounds[1:], strict=True):
        plane = np.asarray(plane)
        if plane.shape != tuple(shape):
            raise ValueError(f"plane of shape {plane.shape} where shapes said {tuple(shape)}")
        if hi > lo:
            data[order[lo:hi]] = _rows(plane, patch, chosen[order[lo:hi]] - start)
        start += n
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
    colour = check_colour(colour)
    if predictor == "auto":  # guided is blend on grey planes, so the per-plane choice cannot tell them apart
        chosen = choose(image_planes(images, colour))
        predictor = "guided" if chosen == "blend" else chosen
    predictor = check_predictor(predictor)
    if pseudocount is None:
        pseudocount = 0.1 if predictor == "none" else 0.03
    if augment is None:
        augment = predictor != "none"
    data = _training_patches(images, patch, predictor, colour, augment, max_patches, seed)
    root = HCLT(data, latents, input_dist=Categorical(256), num_bins=num_bins, seed=seed)
    pc = probcirc.compile(root, seed=seed, dtype=torch.float32)
    x = torch.from_numpy(data)  # int64 already; shares its memory
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


def _training_patches(images, patch, predictor, colour, augment, max_patches, seed) -> np.ndarray:
    """The patches :func:`train_codec` fits: the residuals of one view at a time, only the chosen rows kept."""
    residuals = (r for v in _views(images, colour, augment) for r in image_residuals(v, predictor))
    return patches_from_planes(residuals, patch, max_patches, seed, shapes=_view_shapes(images, colour, augment))
