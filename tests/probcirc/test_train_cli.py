"""``probcirc train | eval | sample``: bit-identical resume, exact bits/dim, sample grids, errors, no overwrites."""

import math
import os
import re
import stat

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import probcirc
import probcirc.density.cli as density_cli
from probcirc.cli import main
from probcirc.density import DensityModel
from probmod.io import edit as edit_in_place

# 8x8 digits in 4 grey levels: small enough for a whole train/resume cycle in seconds
DIGITS = (load_digits().images[:240] // 4.25).astype(np.uint8)
FAST = ["--latents", "3", "--batch-size", "64", "--step-size", "0.5", "-q"]


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.npy"
    np.save(path, DIGITS)
    return path


@pytest.fixture(scope="module")
def model(data):
    path = data.parent / "model.h5"
    assert main(["train", str(data), *FAST, "--epochs", "1", "-o", str(path)]) == 0
    return path


def _arrays(path):
    with h5py.File(path, "r") as f:
        found = {}
        f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_resume_after_a_kill_is_bit_identical_to_one_run(data, tmp_path, capsys, monkeypatch):
    straight, stopped = tmp_path / "straight.h5", tmp_path / "stopped.h5"
    code, out, _ = _run(capsys, "train", data, *FAST, "--epochs", "2", "--full-epochs", "1", "-o", straight)
    assert code == 0
    assert len(re.findall(r"^epoch \d/3 .*train [\d.]+ bits/dim, validation [\d.]+ bits/dim", out, re.M)) == 3
    assert _run(capsys, "train", data, *FAST, "--epochs", "1", "-o", stopped)[0] == 0

    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return probcirc.learn.em(*args, **kwargs)

    monkeypatch.setattr(density_cli, "em", killed_in_second_epoch)
    resume = ["train", data, *FAST, "--epochs", "2", "--full-epochs", "1", "-o", stopped, "--resume"]
    assert _run(capsys, *resume)[0] == 130
    assert probcirc.io.load(stopped).epochs_done == 2  # the last whole epoch survived; no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stopped.h5", "stopped.png", "straight.h5", "straight.png"]
    monkeypatch.undo()
    assert _run(capsys, *resume)[0] == 0

    a, b = _arrays(straight), _arrays(stopped)
    assert a.keys() == b.keys()
    for name in a:
        if name != "history/seconds":
            assert a[name].tobytes() == b[name].tobytes(), name
    assert probcirc.io.load(stopped).circuit.fingerprint() == probcirc.io.load(straight).circuit.fingerprint()


def test_resume_refuses_other_options_and_other_data(data, model, tmp_path, capsys):
    code, _, err = _run(
        capsys, "train", data, *FAST[:-1], "--latents", "4", "-q", "--epochs", "2", "-o", model, "--resume"
    )
    assert code == 2 and "--latents 4 (the run used 3)" in err and err.count("\n") == 1
    # The chunks fix EM's sums, so another --chunk-size would silently give other bytes.
    code, _, err = _run(capsys, "train", data, *FAST, "--chunk-size", "16", "--epochs", "2", "-o", model, "--resume")
    assert code == 2 and "--chunk-size 16 (the run used 512)" in err and err.count("\n") == 1
    other = tmp_path / "other.npy"
    np.save(other, DIGITS[::-1])
    code, _, err = _run(capsys, "train", other, *FAST, "--epochs", "2", "-o", model, "--resume")
    assert code == 2 and "not the data" in err
    code, _, err = _run(capsys, "train", data, *FAST, "--epochs", "1", "-o", tmp_path / "none.h5", "--resume")
    assert code == 3 and "no checkpoint" in err


def test_eval_is_minus_mean_log_prob_over_d_ln2(data, model, tmp_path, capsys):
    code, out, _ = _run(capsys, "eval", model, data)
    assert code == 0
    bpd, nats = (float(v) for v in re.search(r"bits_per_dim=(\S+) nats_per_sample=(\S+)", out).groups())
    pc = probcirc.io.load(model).circuit
    x = torch.from_numpy(DIGITS.reshape(len(DIGITS), -1).astype(np.int64))
    ll = pc.log_prob(x).double()
    assert nats == pytest.approx(-float(ll.mean()), rel=1e-6)
    assert bpd == pytest.approx(-float(ll.mean()) / (64 * math.log(2)), rel=1e-6)
    # the same numbers from an HDF5 dataset chosen with --key, and from a folder of PNGs
    h5 = tmp_path / "digits.h5"
    with h5py.File(h5, "w") as f:
        f["images"] = DIGITS
        f["labels"] = np.zeros(len(DIGITS), dtype=np.int64)
    assert _run(capsys, "eval", model, h5, "--key", "images")[1] == out
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(DIGITS):
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    assert _run(capsys, "eval", model, folder)[1] == out


def test_sample_writes_a_grid_of_the_right_size(model, tmp_path, capsys):
    png = tmp_path / "grid.png"
    assert _run(capsys, "sample", model, "-n", "10", "-o", png, "--seed", "3")[0] == 0
    im = np.asarray(Image.open(png))
    assert im.shape == (3 * 8 + 2, 4 * 8 + 3)  # 4 columns, 3 rows, 1-pixel gaps
    assert set(np.unique(im)) <= {0, 85, 170, 255, 128}
    again = tmp_path / "again.png"
    assert _run(capsys, "sample", model, "-n", "10", "-o", again, "--seed", "3")[0] == 0
    assert png.read_bytes() == again.read_bytes()


def test_vectors_sample_as_printed_rows(tmp_path, capsys):
    x = tmp_path / "x.npy"
    np.save(x, DIGITS.reshape(len(DIGITS), -1)[:, :6])
    m = tmp_path / "m.h5"
    assert _run(capsys, "train", x, *FAST, "--epochs", "1", "-o", m)[0] == 0
    code, out, _ = _run(capsys, "sample", m, "-n", "3")
    rows = np.loadtxt(out.splitlines(), dtype=int)
    assert code == 0 and rows.shape == (3, 6) and rows.min() >= 0 and rows.max() <= 3
    code, _, err = _run(capsys, "sample", m, "-o", tmp_path / "g.png")
    assert code == 2 and "not images" in err


def _bad_data(tmp_path):
    floats = tmp_path / "floats.npy"
    np.save(floats, DIGITS.astype(np.float32))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(DIGITS[0]).save(mixed / "a.png")
    Image.fromarray(np.zeros((9, 8), dtype=np.uint8)).save(mixed / "b.png")
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8), "RGB").save(rgb / "a.png")
    return [
        (tmp_path / "missing.npy", "no such"),
        (floats, "must hold integers"),
        (mixed, "all images must have one size"),
        (rgb, "mode RGB"),
    ]


def test_bad_data_gets_one_line_and_exit_3(tmp_path, capsys):
    for path, words in _bad_data(tmp_path):
        code, _, err = _run(capsys, "train", path, *FAST, "-o", tmp_path / "m.h5")
        assert code == 3 and words in err and err.count("\n") == 1, (path, err)
        assert err.startswith("probcirc train: error: ")
    assert not (tmp_path / "m.h5").exists()


def test_existing_output_needs_force_and_files_follow_the_umask(data, model, tmp_path, capsys):
    out = tmp_path / "m.h5"
    out.write_bytes(b"keep")
    code, _, err = _run(capsys, "train", data, *FAST, "--epochs", "0", "-o", out)
    assert code == 6 and "--force" in err and out.read_bytes() == b"keep"
    png = tmp_path / "g.png"
    png.write_bytes(b"keep")
    assert _run(capsys, "sample", model, "-o", png)[0] == 6 and png.read_bytes() == b"keep"
    old = os.umask(0o022)
    try:
        assert _run(capsys, "train", data, *FAST, "--epochs", "0", "-o", out, "--force")[0] == 0
        assert _run(capsys, "sample", model, "-o", png, "--force")[0] == 0
    finally:
        os.umask(old)
    for path in (out, out.with_suffix(".png"), png):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert isinstance(probcirc.io.load(out), DensityModel)


@pytest.mark.parametrize(
    ("attr", "value"),
    [("num_values", 9), ("num_values", 1), ("image_h", -1), ("num_samples", 0), ("run_chunk_size", 0)],
)
def test_attributes_that_do_not_fit_the_circuit_are_exit_4(data, model, tmp_path, capsys, attr, value):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(model.read_bytes())
    with edit_in_place(bad) as f:  # as an attacker would: the checksum matches the edit
        if attr == "image_h":
            f.attrs["image_w"] = -int(f.attrs["image_w"])  # h*w still equals the variable count
        f.attrs[attr] = value
    code, _, err = _run(capsys, "eval", bad, data)
    assert code == 4 and err.count("\n") == 1 and "internal error" not in err


def test_a_model_written_before_the_chunk_size_was_stored_has_the_default(model, tmp_path):
    old = tmp_path / "old.h5"
    old.write_bytes(model.read_bytes())
    with edit_in_place(old) as f:  # resealed: a file as the version before wrote it
        del f.attrs["run_chunk_size"]
    assert probcirc.io.load(old).run.chunk_size == probcirc.learn.distributed.CHUNK_SIZE


def test_a_run_of_zero_epochs_can_be_resumed(data, tmp_path, capsys):
    out = tmp_path / "zero.h5"
    assert _run(capsys, "train", data, *FAST, "--epochs", "0", "-o", out)[0] == 0
    assert _run(capsys, "train", data, *FAST, "--epochs", "0", "-o", out, "--resume")[0] == 0


def test_precision_is_a_run_option_and_training_under_bf16_stays_close(data, model, tmp_path, capsys):
    """bf16 products change EM's bytes but hardly its result; --resume must keep the precision, and a
    file written before precision was stored was trained exactly."""
    approx = tmp_path / "bf16.h5"
    assert _run(capsys, "train", data, *FAST, "--epochs", "1", "--precision", "bf16", "-o", approx)[0] == 0
    exact, fast = probcirc.io.load(model), probcirc.io.load(approx)
    assert fast.run.precision == "bf16" and exact.run.precision == "ieee"
    a, b = (m.circuit.state_dict() for m in (exact, fast))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the flag reaches the products
    x = torch.from_numpy(DIGITS.reshape(len(DIGITS), -1).astype(np.int64))
    gap = (exact.circuit.log_prob(x) - fast.circuit.log_prob(x)).abs().mean() / x.shape[1]
    assert float(gap) < 0.01  # nats per pixel
    code, _, err = _run(capsys, "train", data, *FAST, "--epochs", "2", "-o", approx, "--resume")
    assert code == 2 and "--precision ieee (the run used bf16)" in err
    old = tmp_path / "old.h5"
    old.write_bytes(model.read_bytes())
    with edit_in_place(old) as f:
        del f.attrs["run_precision"]
    assert probcirc.io.load(old).run.precision == "ieee"


def test_sum_pseudocount_is_a_run_option(data, model, tmp_path, capsys):
    own = tmp_path / "own.h5"
    assert _run(capsys, "train", data, *FAST, "--epochs", "1", "--sum-pseudocount", "0", "-o", own)[0] == 0
    assert probcirc.io.load(own).run.sum_pseudocount == 0.0 and probcirc.io.load(model).run.sum_pseudocount is None
    a, b = (probcirc.io.load(p).circuit for p in (model, own))
    assert any(not torch.equal(x.weight, y.weight) for x, y in zip(a._sum_layers, b._sum_layers))  # it reaches EM
    code, _, err = _run(capsys, "train", data, *FAST, "--epochs", "2", "-o", own, "--resume")
    assert code == 2 and "--sum-pseudocount None (the run used 0.0)" in err
    code, _, err = _run(capsys, "train", data, *FAST, "--sum-pseudocount", "-1", "-o", tmp_path / "bad.h5")
    assert code == 2 and "--sum-pseudocount must be >= 0" in err


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.bool_])
def test_data_is_held_at_one_byte_a_value_and_fingerprinted_as_before(tmp_path, dtype):
    """Every rank holds the whole set: uint8 whatever the file's integer type, with the same values,
    and the same fingerprint as the int64 array it used to be (checkpoints written before resume)."""
    import hashlib

    from probcirc.density.data import load_data
    from probcirc.density.model import fingerprint

    values = DIGITS.reshape(len(DIGITS), -1) > 1 if dtype is np.bool_ else DIGITS.reshape(len(DIGITS), -1)
    np.save(tmp_path / "x.npy", values.astype(dtype))
    x = load_data(tmp_path / "x.npy").x
    assert x.dtype == np.uint8 and np.array_equal(x, values.astype(np.int64))
    as_int64 = values.astype(np.int64)
    assert fingerprint(x) == hashlib.sha256(repr(as_int64.shape).encode() + as_int64.tobytes()).hexdigest()
