"""The codec's spatial predictor: MED against a plain reference, exact inversion, files and the 'auto' choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import probcirc
from probcirc.compress import Codec, CodecModel, ModelMismatchError, train_codec
from probcirc.compress.predict import choose, residuals, restore
from probcirc.inputs import Categorical
from probcirc.structures import HCLT


def med_reference(x: np.ndarray) -> np.ndarray:
    """JPEG-LS's median edge detector written out pixel by pixel (shares no code with predict.py)."""
    x = x.astype(int)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            if i == 0 and j == 0:
                pred = 128
            elif i == 0:
                pred = x[0, j - 1]
            elif j == 0:
                pred = x[i - 1, 0]
            else:
                a, b, c = x[i, j - 1], x[i - 1, j], x[i - 1, j - 1]
                pred = sorted([a, b, a + b - c])[1]  # the median form of MED
            out[i, j] = (x[i, j] - pred + 128) % 256
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (5, 6), (17, 23)])
def test_med_matches_reference_and_inverts(shape):
    rng = np.random.default_rng(sum(shape))
    for x in (rng.integers(0, 256, shape), np.clip(np.cumsum(rng.integers(-3, 4, shape), 1) + 128, 0, 255)):
        x = x.astype(np.uint8)
        r = residuals(x, "med")
        assert r.dtype == np.uint8 and r.shape == x.shape
        np.testing.assert_array_equal(r, med_reference(x))
        np.testing.assert_array_equal(restore(r, "med"), x)
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)  # a bijection on all 8-bit planes: residuals invert too
    np.testing.assert_array_equal(residuals(restore(every, "med"), "med"), every)


def test_predictor_names_are_checked():
    with pytest.raises(ValueError, match="predictor must be one of"):
        residuals(np.zeros((2, 2), np.uint8), "paeth")


def _smooth(n, h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    return [
        np.clip(
            100 + 40 * np.sin(xx / rng.uniform(2, 5)) + 30 * np.cos(yy / rng.uniform(2, 5)) + rng.normal(0, 2, (h, w)),
            0,
            255,
        ).astype(np.uint8)
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def med_model():
    return train_codec(
        _smooth(40, 12, 12, 0), patch=(4, 4), latents=4, epochs=1, full_batch_epochs=0, progress=False, predictor="med"
    )


def test_codec_round_trip_with_med_and_fingerprint(med_model, tmp_path):
    codec = Codec(med_model)
    imgs = _smooth(3, 9, 13, 1) + [np.random.default_rng(2).integers(0, 256, (5, 5, 3)).astype(np.uint8)]
    blob = codec.encode(imgs)
    assert all(np.array_equal(a, b) for a, b in zip(imgs, codec.decode(blob)))
    with pytest.raises(ModelMismatchError):  # the same circuit without the predictor is another model
        Codec(med_model.circuit, patch=(4, 4)).decode(blob)
    with pytest.raises(ValueError, match="trained with predictor 'med'"):
        Codec(med_model, predictor="none")
    probcirc.io.save(med_model, tmp_path / "m.h5")
    back = probcirc.io.load(tmp_path / "m.h5")
    assert back.predictor == "med" and Codec(back).encode(imgs) == blob


def test_med_codes_smooth_images_in_fewer_bits(med_model):
    raw = train_codec(
        _smooth(40, 12, 12, 0), patch=(4, 4), latents=4, epochs=1, full_batch_epochs=0, progress=False, predictor="none"
    )
    test = _smooth(10, 12, 12, 3)
    assert Codec(med_model).model_bits(test).sum() < 0.8 * Codec(raw).model_bits(test).sum()


def test_models_saved_without_a_predictor_load_as_pixels(tmp_path):
    data = np.random.default_rng(4).integers(0, 256, (30, 4))
    model = CodecModel(probcirc.compile(HCLT(data, 2, Categorical(256), num_bins=4), dtype=torch.float32), (2, 2))
    attrs, arrays = model._state()
    del attrs["predictor"]  # as written before predictors existed
    assert CodecModel._from_state(attrs, arrays).predictor == "none"
    with pytest.raises(probcirc.io.FormatError, match="unknown predictor"):
        CodecModel._from_state(dict(attrs, predictor="paeth"), arrays)


def test_auto_choice():
    from sklearn.datasets import load_digits

    digits = list((load_digits().images[:200] * 15).astype(np.uint8))  # drawings: flat background, few strokes
    assert choose(_smooth(3, 32, 32, 5)) == "blend" and choose(digits) == "none"  # blend: the adaptive predictor
