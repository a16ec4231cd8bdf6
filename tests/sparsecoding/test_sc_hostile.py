"""Hostile and unlucky input for the sparse-coding command line (issue #16): one line, the documented exit code,
nothing lost, no hang, files that follow the umask."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from sc_helpers import REPO, mpiexec, venv_bin

from probmod.errors import FormatError
from probmod.io import edit as edit_in_place
from sparsecoding import BSC
from sparsecoding.cli import MARKER, main
from sparsecoding.data import image_patches, load_gray
from sparsecoding.io import load_results, read_rows
from sparsecoding.plot import usage

SMALL = ["--model", "bsc", "--H", "10", "--Hprime", "4", "--gamma", "2", "--quiet", "--no-plot"]


def _err(capsys, code_word: str = "error") -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one line, no traceback
    assert err.startswith("sparsecoding ") and f": {code_word}: " in err, err
    return err


@pytest.fixture
def bars(tmp_path, no_mpi):
    path = tmp_path / "bars.h5"
    assert main(["data", "bars", "-o", str(path), "--N", "200", "--seed", "1"]) == 0
    return path


@pytest.fixture
def finished(tmp_path, bars, capsys):
    """A finished 3-step run (checkpoint after every step)."""
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--data", str(bars), "--steps", "3", "--checkpoint-every", "1", "-o", str(out)]) == 0
    capsys.readouterr()
    return out


# -- output folders ----------------------------------------------------------------------
def test_output_that_is_a_file_or_under_a_file_is_exit_9(tmp_path, bars, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["train", *SMALL, "--data", str(bars), "-o", str(afile)]) == 9
    assert "is a file" in _err(capsys)
    assert main(["train", *SMALL, "--data", str(bars), "-o", str(afile / "run")]) == 9
    assert "not a folder" in _err(capsys)
    assert afile.read_text() == "mine"


def test_force_never_clears_a_folder_the_tool_did_not_make(tmp_path, bars, capsys):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"precious")
    (user / "results.h5").write_bytes(b"also the user's")
    assert main(["train", *SMALL, "--data", str(bars), "--steps", "2", "-o", str(user), "--force"]) == 6
    assert MARKER in _err(capsys)
    assert sorted(p.name for p in user.iterdir()) == ["holiday.jpg", "results.h5"]
    assert (user / "results.h5").read_bytes() == b"also the user's"


def test_force_on_a_run_folder_clears_only_what_the_tool_wrote(finished, bars, capsys):
    (finished / "notes.txt").write_text("my notes")
    (finished / ".results.h5.abc.tmp").write_bytes(b"left by a SIGKILL")
    before = load_results(finished)
    assert len(before["step"]) == 3
    assert main(["train", *SMALL, "--data", str(bars), "--steps", "2", "-o", str(finished), "--force"]) == 0
    assert (finished / "notes.txt").read_text() == "my notes"
    assert not list(finished.glob("*.tmp")) and not list(finished.glob(".*.tmp"))
    assert len(load_results(finished)["step"]) == 2


def test_files_follow_the_umask(tmp_path, no_mpi, capsys):
    for mask, mode in ((0o022, 0o644), (0o077, 0o600)):
        old = os.umask(mask)
        try:
            d = tmp_path / f"u{mask:o}"
            assert main(["data", "bars", "-o", str(d / "bars.h5"), "--N", "100"]) == 0
            assert main(["train", *SMALL[:-1], "--data", str(d / "bars.h5"), "--steps", "2", "-o", str(d / "run")]) == 0
            assert main(["plot", str(d / "run"), "-o", str(d / "figs")]) == 0
        finally:
            os.umask(old)
        written = [
            d / "bars.h5",
            *(
                d / "run" / n
                for n in ("results.h5", "checkpoint.h5", "config.json", MARKER, "dictionary.png", "curves.png")
            ),
            d / "figs" / "dictionary.png",
            d / "figs" / "curves.png",
        ]
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))
    capsys.readouterr()


# -- limits ---------------------------------------------------------------------------------
def test_huge_H_fails_fast_before_allocating(bars, tmp_path, capsys):
    tracemalloc.start()
    t0 = time.perf_counter()
    rc = main(["train", "--model", "bsc", "--data", str(bars), "--H", "18000", "-o", str(tmp_path / "big")])
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rc == 7
    err = _err(capsys)
    assert "max-memory" in err and "H=18000" in err
    assert elapsed < 5 and peak < 50 * 2**20, (elapsed, peak)
    assert not (tmp_path / "big").exists()
    # the limit is a flag: a small budget refuses even the bars problem, and a large one lets it through
    assert (
        main(["train", *SMALL, "--data", str(bars), "--steps", "1", "--max-memory", "10k", "-o", str(tmp_path / "r")])
        == 7
    )
    capsys.readouterr()
    assert (
        main(["train", *SMALL, "--data", str(bars), "--steps", "1", "--max-memory", "1G", "-o", str(tmp_path / "r")])
        == 0
    )


# -- hostile data files ------------------------------------------------------------------------
def _external(path: Path) -> None:
    target = path.parent / "raw.bin"
    target.write_bytes(np.zeros(40).tobytes())
    with h5py.File(path, "w") as f:
        f.create_dataset("y", shape=(4, 10), dtype="u1", external=[(str(target), 0, h5py.h5f.UNLIMITED)])


def _soft_link(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["real"] = np.zeros((4, 3))
        f["y"] = h5py.SoftLink("/real")


def _not_hdf5(path: Path) -> None:
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize(
    "make, code, words",
    [
        (_external, 4, "outside the file"),
        (_soft_link, 4, "SoftLink"),
        (_not_hdf5, 4, "not readable as HDF5"),
        (_fifo, 3, "not a regular"),
    ],
)
def test_hostile_data_files(tmp_path, no_mpi, capsys, make, code, words):
    data = tmp_path / "data.h5"
    make(data)
    t0 = time.perf_counter()
    assert main(["train", *SMALL, "--data", str(data), "-o", str(tmp_path / "r")]) == code
    assert time.perf_counter() - t0 < 5  # a FIFO is never opened, so nothing hangs
    assert words in _err(capsys)


def test_data_that_overflows_is_exit_8(tmp_path, no_mpi, capsys):
    data = tmp_path / "huge.h5"
    with h5py.File(data, "w") as f:
        f["y"] = np.random.default_rng(0).normal(size=(50, 4)) * 1e200
    assert main(["train", *SMALL[:2], "--H", "2", "--quiet", "--data", str(data), "-o", str(tmp_path / "r")]) == 8
    assert "rescale" in _err(capsys)


# -- damaged checkpoints and configurations --------------------------------------------------------
def _set_param(name, value):
    def change(f):
        del f[f"params/{name}"]
        f[f"params/{name}"] = value

    return change


def _set_config(text):
    def change(f):
        f.attrs["config"] = text

    return change


def _config_with(**kv):
    def change(f):
        import json

        f.attrs["config"] = json.dumps({**json.loads(f.attrs["config"]), **kv})

    return change


@pytest.mark.parametrize(
    "change, words",
    [
        (_set_param("pi", 2.0), "pi must lie in (0, 1], got 2.0"),
        (_set_param("sigma", -1.0), "sigma must be positive, got -1.0"),
        (_set_param("sigma", 0.0), "sigma must be positive, got 0.0"),
        (_set_param("W", np.full((25, 10), np.nan)), "W contains NaN or infinity"),
        (_set_param("W", np.ones((16, 10))), "W must have shape (25, 10)"),
        (_set_config("{not json"), "no readable run configuration"),
        (_config_with(H="ten"), "H is 'ten', expected a positive integer"),
        (_config_with(steps=-3), "steps is -3"),
        (_config_with(model="xyz"), "model is 'xyz'"),
    ],
)
def test_damaged_checkpoint_is_exit_4(finished, capsys, change, words):
    # edited on purpose and resealed: past the seal, the content checks must catch it
    with edit_in_place(finished / "checkpoint.h5") as f:
        change(f)
    (finished / "config.json").unlink()  # the checkpoint is the only source left
    assert main(["train", "-o", str(finished), "--resume", "--quiet", "--no-plot"]) == 4
    assert words in _err(capsys)


def test_edited_checkpoint_and_results_break_their_seal(finished, capsys):
    for name in ("checkpoint.h5", "results.h5"):
        assert (finished / name).read_bytes().startswith(b"probmod sha256 ")  # written once: sealed
    with h5py.File(finished / "checkpoint.h5", "a") as f:
        _set_param("pi", 0.5)(f)  # a valid value: only the seal can tell
    assert main(["train", "-o", str(finished), "--resume", "--quiet", "--no-plot"]) == 4
    assert "damaged checkpoint" in _err(capsys)
    with h5py.File(finished / "results.h5", "a") as f:
        f["pi"][0] = 0.5
    with pytest.raises(FormatError, match="damaged results file"):
        load_results(finished)


def test_unsealed_files_of_older_versions_still_load(finished, capsys):
    for name in ("checkpoint.h5", "results.h5"):  # as older versions wrote them: no user block, no seal
        with h5py.File(finished / name) as src, h5py.File(finished / "old.h5", "w") as dst:
            for k, v in src.attrs.items():
                dst.attrs[k] = v
            names: list[str] = []
            src.visit(names.append)
            for key in names:
                if isinstance(src[key], h5py.Dataset):
                    dst.create_dataset(key, data=src[key][()])
        os.replace(finished / "old.h5", finished / name)
    before = load_results(finished)
    assert main(["train", "-o", str(finished), "--resume", "--quiet", "--no-plot"]) == 0  # reads the old checkpoint
    np.testing.assert_array_equal(load_results(finished)["W"], before["W"])
    capsys.readouterr()


def test_garbage_config_json_falls_back_to_the_checkpoint(finished, capsys):
    (finished / "config.json").write_text('{"H": "ten"')
    assert main(["train", "-o", str(finished), "--resume", "--quiet", "--no-plot"]) == 0
    assert load_results(finished)["config"]["H"] == 10
    (finished / "checkpoint.h5").unlink()
    (finished / "config.json").write_text('{"H": "ten"}')
    assert main(["train", "-o", str(finished), "--resume", "--quiet", "--no-plot"]) == 4
    err = _err(capsys)
    assert "H is 'ten'" in err and "no checkpoint.h5" in err


# -- match with bad truth files ---------------------------------------------------------------------
def _truth_without_truth(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["y"] = np.zeros((3, 25))


def _truth_other_shape(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["truth/W"], f["truth/pi"], f["truth/sigma"] = np.ones((16, 8)), 0.2, 2.0


def _truth_strings(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["truth/W"], f["truth/pi"], f["truth/sigma"] = np.array([b"a", b"b"]), 0.2, 2.0


@pytest.mark.parametrize(
    "make, code, words",
    [
        (None, 3, "no such"),
        (_not_hdf5, 4, "not readable as HDF5"),
        (_truth_without_truth, 4, "no true parameters"),
        (_truth_other_shape, 5, "has 16"),
        (_truth_strings, 4, "expected a finite (D, H) array"),
    ],
)
def test_match_with_bad_truth(finished, tmp_path, capsys, make, code, words):
    truth = tmp_path / "truth.h5"
    if make is not None:
        make(truth)
    assert main(["match", str(finished), "--truth", str(truth)]) == code
    assert words in _err(capsys)


def test_match_or_plot_of_a_folder_that_is_not_a_run(tmp_path, bars, capsys):
    assert main(["match", str(tmp_path), "--truth", str(bars)]) == 3
    assert "no such results file" in _err(capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.h5").write_bytes(b"junk")
    assert main(["plot", str(bad)]) == 4
    _err(capsys)


# -- interrupts --------------------------------------------------------------------------------------
def _popen(args: list[str], ranks: int | None = None, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sparsecoding", *args]
    if ranks is not None:
        exe = mpiexec()
        if exe is None:
            pytest.skip("mpiexec not found")
        cmd = [exe, "-n", str(ranks), *cmd]
    base = {k: v for k, v in os.environ.items() if k != "SPARSECODING_NO_MPI"}  # set by the no_mpi fixture
    env = {**base, "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}", **kw.pop("env", {})}
    # a shell's background job ignores SIGINT; give the child Python's usual KeyboardInterrupt back
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        **kw,
    )  # noqa: PLW1509


def _wait_for_rows(path: Path, proc: subprocess.Popen, rows: int = 2, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        try:  # a reader with the default lock, as a user would open it: the run must not mind
            with h5py.File(path, "r") as f:
                if "step" in f and len(f["step"]) >= rows:
                    return
        except OSError:  # being written right now
            pass
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the run never got going")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_interrupt_leaves_no_temporary_files(bars, tmp_path, sig, code):
    out = tmp_path / "run"
    proc = _popen(
        ["train", *SMALL, "--data", str(bars), "--steps", "100000", "--checkpoint-every", "1", "-o", str(out)],
        env={"SPARSECODING_NO_MPI": "1"},
    )
    _wait_for_rows(out / "results.h5", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert len(load_results(out)["step"]) >= 2  # what was written stays readable


# -- MPI: a failing rank ends every rank ------------------------------------------------------------------
def _break_results(out: Path) -> float:
    """Put a folder where rank 0 appends its next row; returns when that happened (retried: rank 0 may
    write the file again between the unlink and the mkdir)."""
    while True:
        try:
            (out / "results.h5").unlink(missing_ok=True)
            (out / "results.h5").mkdir()
            return time.monotonic()
        except FileExistsError:
            continue


def _break_checkpoint(out: Path) -> float:
    """Put a non-empty folder where rank 0 renames its next checkpoint (retried: rank 0 writes it every step)."""
    while True:
        try:
            (out / "checkpoint.h5").unlink(missing_ok=True)
            (out / "checkpoint.h5").mkdir()
            (out / "checkpoint.h5" / "x").write_text("x")
            return time.monotonic()
        except FileExistsError:
            continue


@pytest.mark.mpi
@pytest.mark.slow
# each fault once and each rank count once: how the ranks end (exit alone, MPI_Abort under mpiexec) does not
# depend on which file failed, nor the one-line error on the rank count
@pytest.mark.parametrize("fault, ranks", [(_break_results, 2), (_break_checkpoint, 1)])
def test_a_failing_rank_ends_every_rank(bars, tmp_path, ranks, fault):
    out = tmp_path / "run"
    proc = _popen(
        [
            "train",
            *SMALL,
            "--data",
            str(bars),
            "--steps",
            "100000",
            "--checkpoint-every",
            "1",
            "--chunk-size",
            "64",
            "-o",
            str(out),
        ],
        ranks=ranks,
    )
    _wait_for_rows(out / "results.h5", proc)
    t0 = fault(out)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{ranks} rank(s) still running 60 s after rank 0 failed")
    assert time.monotonic() - t0 < 20
    assert proc.returncode == 9, err  # MPI_Abort(9) under mpiexec, exit(9) alone; never a segfault
    lines = [ln for ln in err.splitlines() if ln.startswith("sparsecoding train: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "results.h5" in lines[0] or "checkpoint.h5" in lines[0], err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# -- data patches from the user's own images -----------------------------------------------------------
def _png_declaring(path: Path, width: int, height: int) -> None:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(d / "colour.png")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).save(d / "grey.jpg", quality=95)
    Image.fromarray(rng.integers(0, 65535, (32, 20), dtype=np.uint16)).save(d / "deep.tif")
    (d / "notes.txt").write_text("not an image; ignored in a folder")
    return d


def test_patches_from_a_folder_of_images(photos, tmp_path, no_mpi, capsys):
    out = tmp_path / "p.h5"
    assert (
        main(
            [
                "data",
                "patches",
                "--images",
                str(photos),
                "--size",
                "8",
                "--N",
                "3000",
                "--no-whiten",
                "-o",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert "from 3 image(s)" in capsys.readouterr().out
    with h5py.File(out) as f:
        P = f["y"][()]
        assert tuple(f["y"].attrs["patch_shape"]) == (8, 8)
    assert P.shape == (3000, 64)
    np.testing.assert_allclose(P.mean(axis=1), 0, atol=1e-12)  # each patch's mean removed
    assert np.mean(P.var(axis=0)) == pytest.approx(1.0)


def test_grey_conversion_is_luma(tmp_path):
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    Image.fromarray(rgb).save(tmp_path / "c.png")
    # ITU-R 601-2 luma, as Pillow's "L" conversion: L = R 299/1000 + G 587/1000 + B 114/1000
    assert load_gray(tmp_path / "c.png")[0, 0] == pytest.approx(round(200 * 0.299 + 100 * 0.587 + 50 * 0.114) / 255)


def test_variance_selection_drops_flat_patches(tmp_path):
    img = np.full((32, 64), 128, dtype=np.uint8)
    img[:, 32:] = np.random.default_rng(1).integers(0, 256, (32, 32))
    Image.fromarray(img).save(tmp_path / "half.png")
    every = image_patches(N=400, size=4, files=[tmp_path / "half.png"], whiten=False, seed=2)
    kept = image_patches(N=400, size=4, files=[tmp_path / "half.png"], whiten=False, seed=2, keep=0.4)
    assert np.sum(every.var(axis=1) == 0) > 50  # patches of the flat half
    assert np.all(kept.var(axis=1) > 0)


def test_whitening_flattens_the_spectrum(photos):
    P = image_patches(N=4000, size=4, files=[photos / "colour.png"], eps=1e-9, seed=3)
    w = np.linalg.eigvalsh(P.T @ P / len(P))
    assert w[0] == pytest.approx(0, abs=1e-8)  # the removed mean (DC) direction
    np.testing.assert_allclose(w[1:], w[1:].mean(), rtol=1e-4)  # every other direction equal


@pytest.mark.parametrize(
    "make, code, words",
    [
        (lambda p: _png_declaring(p, 20000, 20000), 7, "--max-pixels"),
        (lambda p: p.write_text("not a png"), 4, "not a readable image"),
        (lambda p: None, 3, "no such image file"),
    ],
)
def test_patches_refuse_bad_images(tmp_path, no_mpi, capsys, make, code, words):
    img = tmp_path / "bad.png"
    make(img)
    t0 = time.perf_counter()
    assert (
        main(
            [
                "data",
                "patches",
                "--images",
                str(img),
                "--size",
                "4",
                "--N",
                "10",
                "-o",
                str(tmp_path / "p.h5"),
                "--quiet",
            ]
        )
        == code
    )
    assert time.perf_counter() - t0 < 5
    assert words in _err(capsys)
    assert not (tmp_path / "p.h5").exists()


def test_max_pixels_is_a_flag(photos, tmp_path, no_mpi, capsys):
    args = ["data", "patches", "--images", str(photos / "colour.png"), "--size", "4", "--N", "10", "--quiet"]
    assert main([*args, "--max-pixels", "1000", "-o", str(tmp_path / "a.h5")]) == 7
    _err(capsys)
    assert main([*args, "--max-pixels", "2000", "-o", str(tmp_path / "b.h5")]) == 0


# -- the dictionary plot's usage ------------------------------------------------------------------------
def test_usage_is_the_exact_posterior_activation():
    """With Hprime = gamma = H the truncated posterior is the exact one: compare with enumeration."""
    rng = np.random.default_rng(4)
    H, D, pi, sigma = 3, 5, 0.3, 1.5
    W = rng.normal(size=(D, H)) * 3
    Y = rng.normal(size=(7, D)) * 3
    states = np.array([[(i >> h) & 1 for h in range(H)] for i in range(2**H)], dtype=float)
    logp = (states.sum(1) * np.log(pi) + (H - states.sum(1)) * np.log(1 - pi))[None, :] - (
        (Y[:, None, :] - states @ W.T) ** 2
    ).sum(-1) / (2 * sigma**2)
    post = np.exp(logp - logp.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    expected = (post @ states).mean(0)
    model = BSC.from_params(H=H, Hprime=H, gamma=H, W=W, pi=pi, sigma=sigma)
    np.testing.assert_allclose(usage(model, Y), expected, rtol=0, atol=1e-12)


def test_plot_measures_usage_on_the_run_data_or_says_it_could_not(finished, bars):
    from sparsecoding.cli import make_model
    from sparsecoding.plot import _run_usage

    res = load_results(finished)
    got, label = _run_usage(res, 50)
    assert label.startswith("mean posterior activation") and "50 data points" in label
    model = make_model(res["config"])
    model.params_ = {k: res[k][-1] for k in ("W", "pi", "sigma")}
    with h5py.File(bars) as f:
        np.testing.assert_array_equal(got, usage(model, f["y"][:50]))
    bars.unlink()
    got, label = _run_usage(res, 50)
    assert label.startswith("pi * ||W_h||")
    np.testing.assert_allclose(got, np.linalg.norm(res["W"][-1], axis=0) * res["pi"][-1])


def test_plot_refuses_to_replace_pngs_outside_a_run(finished, tmp_path, capsys):
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "dictionary.png").write_bytes(b"my own figure")
    assert main(["plot", str(finished), "-o", str(figs)]) == 6
    _err(capsys)
    assert (figs / "dictionary.png").read_bytes() == b"my own figure"
    assert main(["plot", str(finished), "-o", str(figs), "--force"]) == 0
    assert (figs / "dictionary.png").read_bytes()[:4] == b"\x89PNG"
    shutil.rmtree(figs)


def test_progress_lines_on_a_pipe(bars, tmp_path, capsys, monkeypatch):
    """Without -q, a run logs progress lines when stderr is not a terminal (here: every update)."""
    import probmod.progress

    class Often(probmod.progress.Progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "every": 0.0})

    monkeypatch.setattr(probmod.progress, "Progress", Often)
    args = ["train", *SMALL[:-2], "--no-plot", "--data", str(bars), "--steps", "3"]
    assert main([*args, "-o", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "bsc EM (seed 0): 3/3 step (100%)" in err, err
    assert main(["train", *SMALL, "--data", str(bars), "--steps", "3", "-o", str(tmp_path / "q")]) == 0
    assert capsys.readouterr().err == ""


def _spectral_flatness(P: np.ndarray, size: int) -> float:
    """Geometric over arithmetic mean of the patches' mean power per spatial frequency, DC left out (1 = flat)."""
    S = (np.abs(np.fft.fft2(P.reshape(-1, size, size))) ** 2).mean(axis=0).ravel()[1:]
    return float(np.exp(np.mean(np.log(S))) / np.mean(S))


def test_dog_whitening_flattens_the_spectrum(tmp_path, no_mpi, capsys):
    # a natural-image stand-in: amplitude falling as 1/f, so power as 1/f² (steep, like photographs)
    rng = np.random.default_rng(4)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128), indexing="ij"))
    img = np.fft.ifft2(np.fft.fft2(rng.standard_normal((128, 128))) / np.maximum(f, 1 / 128)).real
    img = (img - img.min()) / np.ptp(img) * 255
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "pink.png")
    raw = image_patches(N=2000, size=8, files=[tmp_path / "pink.png"], whiten="none", seed=1)
    dog = image_patches(N=2000, size=8, files=[tmp_path / "pink.png"], whiten="dog", seed=1)
    flat_raw, flat_dog = _spectral_flatness(raw, 8), _spectral_flatness(dog, 8)
    assert flat_raw < 0.7 and flat_dog > flat_raw + 0.15, (flat_raw, flat_dog)  # measured: 0.63 -> 0.86
    out = tmp_path / "p.h5"
    args = ["data", "patches", "--images", str(tmp_path / "pink.png"), "--size", "8", "--N", "2000", "--keep", "1"]
    assert main([*args, "--seed", "1", "--whiten", "dog", "-o", str(out), "--quiet"]) == 0
    np.testing.assert_array_equal(read_rows(out, "y", 0, 2000), dog)  # the command line cuts the same patches
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--whiten", "sideways", "-o", str(tmp_path / "q.h5"), "--quiet"])
    assert exit_info.value.code == 2 and "zca, dog, none" in capsys.readouterr().err.replace("'", "")
