"""The adaptive "blend" predictor for photographs: exact inversion on any plane, bits against MED, files."""

from __future__ import annotations

import numpy as np
import pytest

import probcirc
from probcirc.compress import Codec, ModelMismatchError, container, train_codec
from probcirc.compress.predict import _blend, choose, residuals, restore

SHAPES = [(1, 1), (1, 2), (1, 9), (7, 1), (2, 2), (5, 6), (17, 23), (40, 3)]


def _planes(shape, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return {
        "noise": rng.integers(0, 256, shape),
        "zeros": np.zeros(shape, int),
        "full": np.full(shape, 255),
        "ramp": (3 * yy + 5 * xx) % 256,
        "steps": np.where(xx % 4 < 2, 0, 255),
        "smooth": np.clip(128 + np.cumsum(rng.integers(-4, 5, shape), 1), 0, 255),
    }


@pytest.mark.parametrize("shape", SHAPES)
def test_blend_inverts_exactly(shape):
    for name, x in _planes(shape, sum(shape)).items():
        x = x.astype(np.uint8)
        r = residuals(x, "blend")
        assert r.dtype == np.uint8 and r.shape == x.shape, name
        np.testing.assert_array_equal(restore(r, "blend"), x, err_msg=name)
        np.testing.assert_array_equal(residuals(restore(r, "blend"), "blend"), r, err_msg=name)


def test_blend_is_a_bijection_of_all_planes():
    every = np.random.default_rng(0).permutation(256 * 16).reshape(64, 64) % 256  # every residual value, many times
    every = every.astype(np.uint8)
    np.testing.assert_array_equal(residuals(restore(every, "blend"), "blend"), every)


def test_blend_constant_planes_cost_nothing_after_the_first_pixel():
    for c in (0, 77, 255):
        r = residuals(np.full((9, 13), c, np.uint8), "blend")
        assert r[0, 0] == c  # the first pixel is predicted as 128
        assert (r.ravel()[1:] == 128).all()  # every sub-predictor is exact, no bias is learnt


def test_blend_works_mod_256_so_wrapped_chroma_costs_what_unwrapped_does():
    """Adding a constant mod 256 to a plane (a YCoCg-R chroma plane wraps past 255 to 0) leaves every
    residual but the first pixel's unchanged: the blend reads neighbours as residues mod 256."""
    for name, x in _planes((23, 31), 5).items():
        for c in (1, 100, 200):
            shifted = ((x + c) % 256).astype(np.uint8)
            r0, r1 = residuals(x.astype(np.uint8), "blend").ravel(), residuals(shifted, "blend").ravel()
            np.testing.assert_array_equal(r1[1:], r0[1:], err_msg=f"{name} + {c}")


def test_compiled_blend_matches_plain_python():
    """The numba kernel and its Python body agree bit for bit (integer semantics, no float anywhere)."""
    x = np.random.default_rng(1).integers(0, 256, (11, 9)).astype(np.int64)
    x[3:7, 2:8] = 200  # a flat patch with edges: bias contexts and weights change along the way
    none = np.zeros((6, 0, 0), np.int64)
    ref = _blend.py_func(x, np.empty_like(x), True, none, none)
    np.testing.assert_array_equal(_blend(x, np.empty_like(x), True, none, none), ref)
    np.testing.assert_array_equal(_blend.py_func(np.empty_like(x), ref.copy(), False, none, none), x)
    guide, errors = np.random.default_rng(2).integers(0, 40, (6, 11, 9)), np.zeros((6, 11, 9), np.int64)
    ref = _blend.py_func(x, np.empty_like(x), True, guide, errors)
    np.testing.assert_array_equal(_blend(x, np.empty_like(x), True, guide, np.zeros_like(errors)), ref)
    np.testing.assert_array_equal(_blend.py_func(np.empty_like(x), ref.copy(), False, guide, none), x)


def _photos():
    import skimage.data

    grey = [skimage.data.camera(), skimage.data.coins(), skimage.data.moon()]
    return grey, skimage.data.chelsea()


def _entropy(arrays) -> float:
    counts = sum(np.bincount(a.ravel(), minlength=256) for a in arrays)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_blend_predicts_photographs_better_than_med():
    grey, colour = _photos()
    for img in [grey[0], grey[1], colour[..., 0], colour[..., 1]]:
        assert _entropy([residuals(img, "blend")]) < _entropy([residuals(img, "med")]) - 0.02
    assert choose(grey[:2]) == "blend"


@pytest.fixture(scope="module")
def models():
    grey, _ = _photos()
    crops = [g[y : y + 64, x : x + 64] for g in grey[:2] for y in range(0, 256, 64) for x in range(0, 256, 64)]
    kw = dict(patch=(4, 4), latents=4, epochs=1, full_batch_epochs=1, progress=False, augment=False)
    return {p: train_codec(crops, predictor=p, **kw) for p in ("med", "blend")}


def test_blend_model_codes_a_held_out_photo_in_fewer_bits(models):
    import skimage.data

    _, colour = _photos()
    # photographs no model saw; over seeds, latents and crops the ratio was 0.93-0.97 (chelsea alone 0.99)
    held = [colour[:96, :128], skimage.data.astronaut()[:128, :128], skimage.data.rocket()[:128, :128]]
    med, blend = (Codec(models[p]).model_bits(held).sum() for p in ("med", "blend"))
    assert blend < 0.985 * med


def test_blend_codec_round_trip_files_and_fingerprint(models, tmp_path):
    model = models["blend"]
    rng = np.random.default_rng(3)
    _, colour = _photos()
    imgs = [
        colour[:13, :17],
        colour[40:41, :30, 1],
        np.zeros((5, 1), np.uint8),
        np.full((3, 7, 3), 255, np.uint8),
        rng.integers(0, 256, (6, 5, 3)).astype(np.uint8),
    ]
    codec = Codec(model)
    blob = codec.encode(imgs, raw_fallback=False)
    for a, b in zip(imgs, codec.decode(blob)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(codec.decode(blob, index=1)[0], imgs[1])
    with pytest.raises(ModelMismatchError):  # the same circuit with MED residuals is another model
        Codec(model.circuit, patch=model.patch, predictor="med").decode(blob)
    probcirc.io.save(model, tmp_path / "m.h5")
    back = probcirc.io.load(tmp_path / "m.h5")
    assert back.predictor == "blend" and Codec(back).encode(imgs, raw_fallback=False) == blob


def test_med_files_written_before_blend_still_decode():
    """``data/med_v3*`` were written by commit 8eea181, before "blend" existed: a MED model (HCLT, 2
    latents, 4x4 patches, one EM epoch on 32x32 crops of skimage's camera) and a .pcz of a 20x23 grey
    crop of coins, an 11x14 RGB crop of chelsea and a 3x5 white image, all coded with the model."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    model = probcirc.io.load(data / "med_v3_model.h5")
    assert model.predictor == "med"
    blob = (data / "med_v3.pcz").read_bytes()
    with np.load(data / "med_v3_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(3)]
    codec = Codec(model)
    for a, b in zip(originals, codec.decode(blob)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # MED's residuals code as before: version 4 changes only each block's termination (rangecoder.seal_short,
    # at most 4 bytes shorter or 1 longer per block) and the header (a pack size per run)
    again = codec.encode(originals, raw_fallback=False)
    new, old = container.unpack(again)[0], container.unpack(blob)[0]
    assert (new.version, old.version) == (4, 3)
    for e, o in zip(new.entries, old.entries):
        blocks = -(-(3 if e.mode else 1) * -(-e.height // 4) * -(-e.width // 4) // 64)
        assert -4 * blocks <= e.stream_len - o.stream_len <= blocks
    assert all(np.array_equal(a, b) for a, b in zip(originals, codec.decode(again)))


def test_dihedral_views_are_the_eight_symmetries():
    from probcirc.compress.train import dihedral

    plane = np.random.default_rng(5).integers(0, 256, (3, 5)).astype(np.uint8)
    views = dihedral(plane)
    key = {(v.shape, v.tobytes()) for v in views}
    assert len(key) == 8 and np.array_equal(views[0], plane)
    for v in views:  # a group: the views of any view are the same eight arrays, with the same pixels
        assert {(u.shape, u.tobytes()) for u in dihedral(v)} == key
        assert sorted(v.ravel()) == sorted(plane.ravel())


def test_augmented_model_codes_a_turned_image_as_well_as_an_upright_one():
    """Trained on pixels of horizontal stripes, a model codes the same kind of image turned a quarter in
    many more bits; trained on the 8 views (augment=True) it codes both alike."""
    rng = np.random.default_rng(6)

    def stripes(n):
        return [255 * np.repeat(rng.integers(0, 2, (16, 1)), 16, 1).astype(np.uint8) for _ in range(n)]

    kw = dict(patch=(4, 4), latents=4, epochs=1, full_batch_epochs=1, predictor="none")
    plain, augmented = train_codec(stripes(12), augment=False, **kw), train_codec(stripes(12), augment=True, **kw)
    upright = stripes(4)
    turned = [np.ascontiguousarray(u.T) for u in upright]
    bits = {name: Codec(m).model_bits(turned).sum() for name, m in (("plain", plain), ("augmented", augmented))}
    assert bits["augmented"] < 0.8 * bits["plain"]
    assert Codec(augmented).model_bits(turned).sum() < 1.2 * Codec(augmented).model_bits(upright).sum()


def test_augmentation_is_on_by_default_for_residuals_only():
    """Photographs (a spatial predictor) train on the 8 views by default; pixel models (digits, not
    alike upside down) never do unless asked, so their models stay what they were."""
    imgs = [np.random.default_rng(s).integers(0, 256, (8, 8)).astype(np.uint8) for s in range(3)]
    kw = dict(patch=(4, 4), latents=2, epochs=1, full_batch_epochs=0)

    def fp(**extra):
        return train_codec(imgs, **kw, **extra).circuit.fingerprint()

    assert fp(predictor="none") == fp(predictor="none", augment=False) != fp(predictor="none", augment=True)
    assert fp(predictor="med") == fp(predictor="med", augment=True) != fp(predictor="med", augment=False)


def test_green_transform_is_the_formula_at_every_extreme_and_inverts():
    """Every (R, G) pair with blue at 0, 127, 128, 255 and 14 levels between, against the documented
    formula in int64 (the transform computes in int16: this covers its intermediates' whole range)."""
    from probcirc.compress.images import green_to_rgb, rgb_to_green

    blue = np.unique(np.r_[np.arange(0, 256, 17), 127, 128]).astype(np.uint8)
    r, g, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8), blue, indexing="ij")
    rgb = np.stack([r, g, b], -1).reshape(-1, len(blue) * 16, 3)
    r, g, b = (rgb[..., c].astype(np.int64) for c in range(3))
    planes = rgb_to_green(rgb)
    np.testing.assert_array_equal(planes[0], g)
    np.testing.assert_array_equal(planes[1], (r - g + 128) % 256)
    np.testing.assert_array_equal(planes[2], (b - (r + g) // 2 + 128) % 256)
    np.testing.assert_array_equal(green_to_rgb(planes), rgb)


def test_green_transform_is_a_bijection_and_never_wraps_the_first_plane():
    from probcirc.compress.images import green_to_rgb, rgb_to_green, rgb_to_planes

    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    rgb[0, :8] = [
        [0, 0, 0],
        [255, 255, 255],
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [255, 0, 255],
        [0, 255, 255],
        [255, 255, 0],
    ]
    planes = rgb_to_green(rgb)
    assert all(p.dtype == np.uint8 and p.shape == rgb.shape[:2] for p in planes)
    np.testing.assert_array_equal(green_to_rgb(planes), rgb)
    np.testing.assert_array_equal(planes[0], rgb[..., 1])
    # a smooth saturated ramp (R - B crosses 128): YCoCg-R's luma jumps where its chroma wraps, green's does not
    ramp = np.zeros((8, 64, 3), np.uint8)
    ramp[..., 0] = np.linspace(60, 250, 64).astype(np.uint8)
    ramp[..., 2] = 40
    jumps = {
        name: int(np.abs(np.diff(p[0].astype(int), axis=1)).max())
        for name, p in (("ycocg", rgb_to_planes(ramp)), ("green", rgb_to_green(ramp)))
    }
    assert jumps["green"] <= 4 < 32 <= jumps["ycocg"]


def test_colour_is_saved_fingerprinted_and_old_models_load_as_ycocg(tmp_path):
    rng = np.random.default_rng(9)
    imgs = [rng.integers(0, 256, (6, 7, 3)).astype(np.uint8), rng.integers(0, 256, (5, 4)).astype(np.uint8)]
    green = train_codec(imgs, patch=(2, 2), latents=2, epochs=1, full_batch_epochs=0, predictor="med")
    assert green.colour == "green"
    blob = Codec(green).encode(imgs, raw_fallback=False)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, Codec(green).decode(blob)))
    ycocg = Codec(green.circuit, patch=(2, 2), predictor="med")  # the same circuit with YCoCg-R is another model
    with pytest.raises(ModelMismatchError, match="colour"):
        ycocg.decode(blob)
    probcirc.io.save(green, tmp_path / "m.h5")
    assert Codec(probcirc.io.load(tmp_path / "m.h5")).encode(imgs, raw_fallback=False) == blob
    attrs, arrays = green._state()
    del attrs["colour"]  # as written before the colour transform was a choice
    old = type(green)._from_state(attrs, arrays)
    assert old.colour == "ycocg" and Codec(old).fingerprint == ycocg.fingerprint


@pytest.mark.parametrize("predictor", ["blend", "guided"])
def test_green_files_of_this_version_still_decode_and_code_the_same(predictor):
    """``data/green_v4*`` were written by the code of commit e2d6aa8 (#17): a blend model with the
    green colour transform (HCLT, 2 latents, 4x4 patches, one mini-batch and one full-batch EM epoch on the
    8 views of 16 32x32 crops of skimage's camera and 16 of chelsea) and a version-4 .pcz of a 20x23 grey
    crop of coins, a saturated 16x19 crop of colorwheel and a 3x5 white RGB image. Later versions must
    keep decoding them; while the format stays at 4 they must also code them to the same bytes.
    ``data/guided_v4*`` are the same with the guided predictor (commit 626b745; the same images)."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    name = "green_v4" if predictor == "blend" else "guided_v4"
    model = probcirc.io.load(data / f"{name}_model.h5")
    assert (model.predictor, model.colour, model.patch) == (predictor, "green", (4, 4))
    blob = (data / f"{name}.pcz").read_bytes()
    with np.load(data / "green_v4_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(3)]
    codec = Codec(model)
    for a, b in zip(originals, codec.decode(blob)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    if container.unpack(blob)[0].version == container.VERSION:
        assert codec.encode(originals, raw_fallback=False) == blob


@pytest.mark.parametrize("shape", SHAPES)
def test_guided_inverts_exactly_and_is_blend_on_the_first_plane(shape):
    from probcirc.compress.predict import image_residuals, image_restore

    p = _planes(shape, sum(shape) + 1)
    for planes in ([p["noise"], p["ramp"], p["smooth"]], [p["steps"], p["zeros"], p["noise"]], [p["full"]]):
        planes = [a.astype(np.uint8) for a in planes]
        res = image_residuals(planes, "guided")
        np.testing.assert_array_equal(res[0], residuals(planes[0], "blend"))
        for a, b in zip(image_restore(res, "guided"), planes):
            np.testing.assert_array_equal(a, b)


def test_guided_chroma_follows_the_luma_edges():
    """Where the chroma planes' edges are the luma's, knowing which sub-predictor was right on the luma at the
    same pixel predicts the chroma better (rocket, a training photograph: 0.03 bits/value in the circuit)."""
    import skimage.data

    from probcirc.compress.images import rgb_to_green
    from probcirc.compress.predict import image_residuals

    planes = rgb_to_green(skimage.data.rocket()[:200, :300])
    guided, blend = image_residuals(planes, "guided"), image_residuals(planes, "blend")
    assert _entropy(guided[1:]) < _entropy(blend[1:]) - 0.02


def test_auto_picks_guided_for_colour_photographs_and_round_trips(tmp_path):
    grey, colour = _photos()
    crops = [g[y : y + 64, x : x + 64] for g in (grey[0], colour) for y in (0, 64, 128) for x in (0, 64, 128)]
    model = train_codec(crops, patch=(4, 4), latents=2, epochs=1, full_batch_epochs=0, augment=False)
    assert model.predictor == "guided"
    imgs = [colour[:13, :17], colour[40:50, :30, 1], np.full((3, 7, 3), 255, np.uint8)]
    codec = Codec(model)
    blob = codec.encode(imgs, raw_fallback=False)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, codec.decode(blob)))
    with pytest.raises(ModelMismatchError):  # the same circuit with plain blend is another model
        Codec(model.circuit, patch=(4, 4), predictor="blend", colour="green").decode(blob)
