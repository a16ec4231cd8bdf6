"""The probcirc console script: codec subcommands, exit codes, one-line errors, no overwrites."""

import numpy as np
import pytest
import torch
from PIL import Image

import probcirc
from probcirc.cli import main
from probcirc.compress import CodecModel
from probcirc.inputs import Categorical
from probcirc.structures import HCLT

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    data = RNG.integers(0, 256, (60, 16))
    pc = probcirc.compile(HCLT(data, 2, Categorical(256), num_bins=4), dtype=torch.float32)
    path = d / "model.h5"
    probcirc.io.save(CodecModel(pc, (4, 4)), path)
    return path


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(RNG.integers(0, 256, (5, 7)).astype(np.uint8)).save(d / "a.png")
    Image.fromarray(RNG.integers(0, 256, (4, 4, 3)).astype(np.uint8), "RGB").save(d / "b.png")
    Image.fromarray(RNG.integers(0, 256, (3, 9)).astype(np.uint8)).save(d / "c.pgm")
    np.save(tmp_path / "arr.npy", RNG.integers(0, 256, (3, 4, 5)).astype(np.uint8))
    return d


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_compress_decompress_info_round_trip(model_path, images, tmp_path, capsys):
    pcz = tmp_path / "out.pcz"
    code, out, err = _run(capsys, "compress", images, tmp_path / "arr.npy", "-m", model_path, "-o", pcz)
    assert code == 0 and "bits/dim" in out and "PNG" in out
    code, out, _ = _run(capsys, "info", pcz)
    assert code == 0 and "6 images" in out
    code, out, _ = _run(capsys, "decompress", pcz, "-m", model_path, "-o", tmp_path / "restored")
    assert code == 0
    for name in ["a.png", "b.png"]:
        assert np.array_equal(
            np.asarray(Image.open(images / name)), np.asarray(Image.open(tmp_path / "restored" / name))
        )
    assert np.array_equal(
        np.asarray(Image.open(images / "c.pgm")), np.asarray(Image.open(tmp_path / "restored" / "c.png"))
    )
    assert np.array_equal(np.load(tmp_path / "arr.npy"), np.load(tmp_path / "restored" / "arr.npy"))
    # never overwrite without --force; nothing changed on refusal
    before = pcz.read_bytes()
    code, _, err = _run(capsys, "compress", images, "-m", model_path, "-o", pcz)
    assert code == 6 and "--force" in err and err.count("\n") == 1
    assert pcz.read_bytes() == before
    code, _, err = _run(capsys, "decompress", pcz, "-m", model_path, "-o", tmp_path / "restored")
    assert code == 6 and "exists" in err
    assert _run(capsys, "decompress", pcz, "-m", model_path, "-o", tmp_path / "restored", "--force")[0] == 0


def test_errors_are_one_line_with_exit_codes(model_path, images, tmp_path, capsys):
    pcz = tmp_path / "out.pcz"
    assert _run(capsys, "compress", images / "a.png", "-m", model_path, "-o", pcz)[0] == 0
    data = pcz.read_bytes()
    cases = {
        "trunc.pcz": (data[: len(data) // 2], 4),
        "foreign.pcz": (b"\x89PNG\r\n\x1a\n" + data[8:], 4),
        "flip.pcz": (data[:-1] + bytes([data[-1] ^ 1]), 4),
    }
    for name, (blob, want) in cases.items():
        (tmp_path / name).write_bytes(blob)
        code, _, err = _run(capsys, "decompress", tmp_path / name, "-m", model_path, "-o", tmp_path / "x")
        assert code == want and err.count("\n") == 1 and "Traceback" not in err, (name, err)
        code, _, err = _run(capsys, "info", tmp_path / name)
        assert code == want and err.count("\n") == 1
    # another model
    other = tmp_path / "other.h5"
    pc = probcirc.compile(HCLT(RNG.integers(0, 256, (40, 16)), 2, Categorical(256), num_bins=4))
    probcirc.io.save(CodecModel(pc, (4, 4)), other)
    code, _, err = _run(capsys, "decompress", pcz, "-m", other, "-o", tmp_path / "x")
    assert code == 5 and "another model" in err
    # unreadable / unsupported images, missing files
    (tmp_path / "junk.png").write_bytes(b"not an image")
    code, _, err = _run(capsys, "compress", tmp_path / "junk.png", "-m", model_path, "-o", tmp_path / "j.pcz")
    assert code == 3 and "unreadable" in err and err.count("\n") == 1
    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("P").save(tmp_path / "pal.png")
    code, _, err = _run(capsys, "compress", tmp_path / "pal.png", "-m", model_path, "-o", tmp_path / "j.pcz")
    assert code == 3 and "palette" in err
    Image.fromarray(np.zeros((4, 4), np.uint16) + 1000).save(tmp_path / "deep.png")
    code, _, err = _run(capsys, "compress", tmp_path / "deep.png", "-m", model_path, "-o", tmp_path / "j.pcz")
    assert code == 3 and "16-bit" in err
    code, _, err = _run(capsys, "compress", tmp_path / "nope.png", "-m", model_path, "-o", tmp_path / "j.pcz")
    assert code == 3
    (tmp_path / "bad.h5").write_bytes(b"garbage")
    code, _, err = _run(capsys, "compress", images / "a.png", "-m", tmp_path / "bad.h5", "-o", tmp_path / "j.pcz")
    assert code == 4 and err.count("\n") == 1
    assert not (tmp_path / "j.pcz").exists()


def test_train_codec_small(images, tmp_path, capsys):
    arr = tmp_path / "train.npy"
    np.save(arr, RNG.integers(0, 256, (40, 4, 4)).astype(np.uint8))
    out = tmp_path / "m.h5"
    code, text, err = _run(
        capsys, "train-codec", arr, "--patch", "4x4", "--latents", "2", "--epochs", "1", "--full-epochs", "0", "-o", out
    )
    assert code == 0 and out.exists() and "fingerprint" in text
    code, _, err = _run(capsys, "train-codec", arr, "--patch", "4x4", "--latents", "2", "-o", out)
    assert code == 6
    assert _run(capsys, "compress", images / "a.png", "-m", out, "-o", tmp_path / "a.pcz")[0] == 0
    flags = ("--predictor", "med", "--augment", "no", "--colour", "ycocg", "--pseudocount", "0.5", "--epochs", "1")
    code, text, _ = _run(
        capsys, "train-codec", arr, "--patch", "4x4", "--latents", "2", *flags, "-o", tmp_path / "y.h5"
    )
    assert code == 0 and "predictor med, colour ycocg" in text
    model = probcirc.io.load(tmp_path / "y.h5")
    assert (model.predictor, model.colour) == ("med", "ycocg")


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compress"])
    assert e.value.code == 2
    assert main([]) == 2


def test_default_patch_follows_the_training_images():
    from probcirc.compress.train import default_patch

    assert default_patch([np.zeros((28, 28), np.uint8)] * 3) == (28, 28)  # small, one size: one patch per image
    assert default_patch([np.zeros((28, 28), np.uint8), np.zeros((20, 28), np.uint8)]) == (8, 8)
    assert default_patch([np.zeros((512, 512, 3), np.uint8)]) == (8, 8)  # photographs
