"""Training data is cut one view at a time and only the drawn patches are kept: the same bytes as building
every view's residuals and patches first (the reference below, the definition), in a fraction of the memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from probcirc.compress.images import check_image, tile, to_planes
from probcirc.compress.predict import image_residuals
from probcirc.compress.train import _training_patches, patches_from_planes


def reference(images, patch, predictor, colour, augment, max_patches, seed):
    """Every view of every image, all their residuals, all complete patches, one draw over all of them."""
    residual_planes = []
    for img in images:
        planes = to_planes(*check_image(img), colour)
        turns = [[np.rot90(p, k) for p in planes] for k in range(4)]
        views = [v for t in turns for v in (t, [p[:, ::-1] for p in t])] if augment else [planes]
        residual_planes += [r for v in views for r in image_residuals([np.ascontiguousarray(p) for p in v], predictor)]
    rows = []
    for plane in residual_planes:
        v, m = tile(plane, *patch)
        rows.append(v[m.all(1)])
    data = np.concatenate(rows)
    if max_patches is not None and len(data) > max_patches:
        data = data[np.random.default_rng(seed).choice(len(data), max_patches, replace=False)]
    return data


@pytest.fixture(scope="module")
def crops():
    import skimage.data

    grey = [skimage.data.camera()[100:141, 200:253]]  # 41x53: edge rows and columns are dropped
    colour = [skimage.data.astronaut()[50:93, 60:97], skimage.data.chelsea()[80:119, 100:151]]
    return {"grey": grey, "colour": colour}


@pytest.mark.parametrize("kind", ["grey", "colour"])
@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("predictor", ["guided", "none"])
def test_streamed_patches_are_the_reference_bytes(crops, kind, augment, predictor):
    images, patch, seed = crops[kind], (4, 5), 3
    total = len(reference(images, patch, predictor, "green", augment, None, seed))
    for max_patches in (None, 37, total - 1, total, total + 1, 10**6):
        want = reference(images, patch, predictor, "green", augment, max_patches, seed)
        got = _training_patches(images, patch, predictor, "green", augment, max_patches, seed)
        assert got.dtype == want.dtype == np.int64 and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), max_patches


def test_train_codec_fits_the_reference_patches(crops, monkeypatch):
    from probcirc.compress import train, train_codec

    kw = dict(patch=(4, 4), latents=2, epochs=1, full_batch_epochs=0, max_patches=150, predictor="blend")
    streamed = train_codec(crops["colour"], **kw).circuit.fingerprint()
    monkeypatch.setattr(train, "_training_patches", reference)
    assert train_codec(crops["colour"], **kw).circuit.fingerprint() == streamed


def test_lazy_planes_with_shapes_give_what_a_list_gives():
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(9, 7), (2, 2), (6, 13), (4, 3)]]
    shapes = [p.shape for p in planes]
    for max_patches in (None, 5):
        want = patches_from_planes(planes, (3, 3), max_patches, seed=1)
        got = patches_from_planes((p for p in planes), (3, 3), max_patches, seed=1, shapes=shapes)
        assert np.array_equal(got, want)
    assert np.array_equal(patches_from_planes(iter(planes), (3, 3), 5, seed=1), want)
    with pytest.raises(ValueError, match=r"shape \(6, 13\) where shapes said \(13, 6\)"):
        patches_from_planes(iter(planes), (3, 3), shapes=shapes[:2] + [(13, 6)] + shapes[3:])


def test_fewer_than_two_complete_patches_is_refused():
    with pytest.raises(ValueError, match="need at least 2 complete 4x4 patches to train, got 1; use a smaller"):
        patches_from_planes([np.zeros((5, 7), np.uint8), np.zeros((3, 9), np.uint8)], (4, 4))
    with pytest.raises(ValueError, match="got 0"):
        _training_patches([np.zeros((3, 30), np.uint8)], (4, 4), "med", "green", True, None, 0)


def peak_bytes(fn, *args) -> tuple[np.ndarray, int]:
    tracemalloc.start()
    try:
        out = fn(*args)
        return out, tracemalloc.get_traced_memory()[1]  # numpy reports its arrays to tracemalloc
    finally:
        tracemalloc.stop()


def test_one_view_at_a_time_keeps_a_fraction_of_the_memory():
    """A 600x800 colour photo (P = 480,000 pixels), 8 views, 2,000 of its 8x8 patches.

    Streamed, what is held at once is the kept patches (2,000 x 64 int64, 1 MB) and either the colour
    transform of the one image (``rgb_to_green``: 3 int16 channels and 2 int16 temporaries, 10 bytes per
    pixel) or its 3 uint8 planes, one view's 3, their residuals and the int64 copy ``residuals`` makes of one
    plane (17 bytes per pixel; numba's own arrays are not traced): under 6 int64 planes, 48 P bytes, plus the
    patches. Building everything first holds the 180,000 int64 patches of all 24 residual planes (92 MB)
    and then their concatenation (92 MB more): over 2 x 8 x 3 x 8 P bytes, so
    over 7 times the streamed bound (6 asserted)."""
    import skimage.data

    img = np.pad(skimage.data.astronaut(), ((0, 88), (0, 288), (0, 0)), mode="reflect")
    assert img.shape == (600, 800, 3)
    args = [img], (8, 8), "med", "green", True, 2000, 0
    want, before = peak_bytes(reference, *args)
    got, after = peak_bytes(_training_patches, *args)
    assert np.array_equal(got, want)
    plane = 600 * 800
    assert after < 6 * 8 * plane + want.nbytes
    assert before > 2 * 8 * 3 * 8 * plane and before > 6 * after
