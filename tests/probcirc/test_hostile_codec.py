"""Hostile inputs and faults for the codec and its command line (issue #16): every one fails cleanly or finishes
within bounds, writes nothing outside its output folder, and loses nothing."""

import os
import stat
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import probcirc
import probmod.io
from probcirc.cli import main
from probcirc.compress import Codec, CodecModel, HeavyFileWarning, PoorFitWarning, container
from probcirc.compress.container import RAW, Entry, Header, pack
from probcirc.compress.images import pack_raw
from probcirc.inputs import Categorical
from probcirc.structures import HCLT
from probmod.errors import LimitError

RNG = np.random.default_rng(16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    data = RNG.integers(0, 256, (60, 16))
    m = CodecModel(probcirc.compile(HCLT(data, 2, Categorical(256), num_bins=4), dtype=torch.float32), (4, 4))
    path = tmp_path_factory.mktemp("model") / "model.h5"
    probcirc.io.save(m, path)
    Codec(m).decode(Codec(m).encode([np.zeros((4, 4), np.uint8)]))  # compiled (or loaded) outside the timings
    return m, path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _crafted(model, entries, streams):
    """A .pcz with valid checksums around whatever entries and streams an attacker chooses."""
    codec = Codec(model)
    return pack(Header(codec.fingerprint, 4, 4, 256, 24, 64, entries), streams)


def _bounded(fn, seconds=5.0, mib=200):
    """Run fn; assert it took under ``seconds`` and allocated under ``mib`` MiB
    at its peak (numpy reports to tracemalloc)."""
    tracemalloc.start()
    t = time.perf_counter()
    try:
        return fn()
    finally:
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < seconds and peak < mib * 2**20, (elapsed, peak / 2**20)


# ------------------------------------------------------------------ 1. path escape
def test_stored_names_never_leave_the_output_folder(model, tmp_path, capsys):
    m, path = model
    names = ["../escape", "/abs/escape2", "a\x1b[31mb", "..", "ok", "sub\\dir\\win", ".hidden", "x" * 400]
    imgs = [RNG.integers(0, 256, (2, 3)).astype(np.uint8) for _ in names]
    blob = _crafted(m, [Entry(2, 3, 0, 0, n, coding=RAW) for n in names], [pack_raw(a) for a in imgs])
    (tmp_path / "evil.pcz").write_bytes(blob)
    out = tmp_path / "deep" / "out"
    code, _, err = _run(capsys, "decompress", tmp_path / "evil.pcz", "-m", path, "-o", out)
    assert code == 0 and "renamed" in err
    written = sorted(os.listdir(out))
    assert not (tmp_path / "deep" / "escape.png").exists() and not os.path.exists("/abs/escape2.png")
    assert {"escape.png", "escape2.png", "a_[31mb.png", "ok.png", "win.png", "_hidden.png"} <= set(written)
    assert all("/" not in n and "\\" not in n and len(n.encode()) <= 255 for n in written) and len(written) == len(
        names
    )
    code, text, _ = _run(capsys, "info", tmp_path / "evil.pcz")
    assert code == 0 and "\x1b" not in text and "\\x1b" in text


# ------------------------------------------------------------------ 2. bombs
def test_small_pcz_declaring_huge_images_fails_before_allocating(model, tmp_path, capsys):
    m, path = model
    codec = Codec(m)
    huge = _crafted(m, [Entry(12000, 12000, 0)], [b"\0" * 300])  # over the default limit of values
    big = _crafted(m, [Entry(3000, 3000, 1)], [b"\0" * 300])  # under the limit, but 300 bytes cannot hold it
    assert len(huge) < 500 and len(big) < 500
    with pytest.raises(LimitError):
        _bounded(lambda: codec.decode(huge))
    with pytest.raises(container.PczFormatError, match="holds 300 bytes"):
        _bounded(lambda: codec.decode(big))
    for blob, want in [(huge, 7), (big, 4)]:
        (tmp_path / "b.pcz").write_bytes(blob)
        code, _, err = _run(capsys, "decompress", tmp_path / "b.pcz", "-m", path, "-o", tmp_path / "o", "--force")
        assert code == want and err.count("\n") == 1, err
    code, _, err = _run(
        capsys, "decompress", tmp_path / "b.pcz", "-m", path, "-o", tmp_path / "o", "--max-values", 10**9
    )
    assert code == 4  # a raised limit still meets the byte check


def test_many_tiny_entries_decode_quickly(model):
    m, _ = model
    codec = Codec(m, batch_size=1024)
    n = 5000  # about 60 KB of .pcz
    blob = codec.encode([np.full((1, 1), 7, np.uint8)] * n, raw_fallback=False)
    assert len(blob) < 64 * 1024
    out = _bounded(lambda: codec.decode(blob), seconds=10.0)  # loaded shared CPU; about 1 s when idle
    assert len(out) == n and all(int(a[0, 0]) == 7 for a in out)


def _png_header_only(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(b"\0" * (width + 1) * 100, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def test_png_declaring_1e8_pixels_is_a_limit_error(model, tmp_path, capsys):
    _, path = model
    (tmp_path / "bomb.png").write_bytes(_png_header_only(10000, 10000))
    assert (tmp_path / "bomb.png").stat().st_size < 64 * 1024
    t = time.perf_counter()
    code, _, err = _run(capsys, "compress", tmp_path / "bomb.png", "-m", path, "-o", tmp_path / "b.pcz")
    assert code == 7 and "--max-values" in err and time.perf_counter() - t < 5
    assert not (tmp_path / "b.pcz").exists()


def test_idx_gz_declaring_gigabytes_is_refused_without_reading(tmp_path, capsys, model):
    import gzip

    from probcirc.datasets import read_idx
    from probmod.errors import FormatError, LimitError

    _, path = model
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 3_000_000, 1000, 1) + b"\0" * 1_000_000)
    with pytest.raises(LimitError):
        _bounded(lambda: read_idx(bomb))
    short = tmp_path / "short-idx3-ubyte.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 10, 28, 28) + b"\0" * 100)
    with pytest.raises(FormatError, match="truncated"):
        read_idx(short)
    assert _run(capsys, "compress", bomb, "-m", path, "-o", tmp_path / "x.pcz")[0] == 7


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifos_never_hang(model, tmp_path, capsys):
    _, path = model
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    assert _run(capsys, "compress", tmp_path / "a.png", "-m", fifo, "-o", tmp_path / "a.pcz")[0] == 3
    assert _run(capsys, "decompress", fifo, "-m", path, "-o", tmp_path / "o")[0] == 3
    assert _run(capsys, "info", fifo)[0] == 3
    assert _run(capsys, "compress", fifo, "-m", path, "-o", tmp_path / "a.pcz")[0] == 3


def test_model_with_external_storage_is_refused(model, tmp_path, capsys):
    import h5py

    _, path = model
    evil = tmp_path / "evil.h5"
    with h5py.File(path, "r") as src, h5py.File(evil, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        for name in src:
            src.copy(name, dst)
        found = []
        dst.visititems(
            lambda n, obj: (
                found.append(n) if isinstance(obj, h5py.Dataset) and obj.ndim and obj.dtype.kind == "f" else None
            )
        )
        first = found[0]
        shape, dtype = dst[first].shape, dst[first].dtype
        del dst[first]
        dst.create_dataset(first, shape=shape, dtype=dtype, external=[(str(path), 0, h5py.h5f.UNLIMITED)])
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    code, _, err = _run(capsys, "compress", tmp_path / "a.png", "-m", evil, "-o", tmp_path / "a.pcz")
    assert code == 4 and "outside the file" in err


# ------------------------------------------------------------------ 5. nothing lost
def test_colliding_names_are_all_kept_and_reported(model, tmp_path, capsys):
    _, path = model
    imgs = {}
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        imgs[folder] = RNG.integers(0, 256, (5, 5)).astype(np.uint8)
        Image.fromarray(imgs[folder]).save(tmp_path / folder / "a.png")
        np.save(tmp_path / folder / "x.npy", RNG.integers(0, 256, (2, 3, 3)).astype(np.uint8))
    Image.fromarray(RNG.integers(0, 256, (5, 5)).astype(np.uint8)).save(tmp_path / "one" / "a-1.png")
    code, _, err = _run(capsys, "compress", tmp_path / "one", tmp_path / "two", "-m", path, "-o", tmp_path / "c.pcz")
    assert code == 0 and "x-1" in err
    code, _, err = _run(capsys, "decompress", tmp_path / "c.pcz", "-m", path, "-o", tmp_path / "r")
    assert code == 0 and "renamed" in err
    files = sorted(os.listdir(tmp_path / "r"))
    assert files == ["a-1.png", "a-2.png", "a.png", "x-1.npy", "x.npy"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r" / "a.png")), imgs["one"])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r" / "a-2.png")), imgs["two"])
    assert np.array_equal(np.load(tmp_path / "r" / "x.npy"), np.load(tmp_path / "one" / "x.npy"))
    assert np.array_equal(np.load(tmp_path / "r" / "x-1.npy"), np.load(tmp_path / "two" / "x.npy"))


def test_compress_never_replaces_the_model_or_an_input(model, tmp_path, capsys):
    m, _ = model
    mpath = tmp_path / "m.h5"
    probcirc.io.save(m, mpath)
    before = mpath.read_bytes()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    code, _, err = _run(capsys, "compress", tmp_path / "a.png", "-m", mpath, "-o", mpath, "--force")
    assert code == 2 and "model" in err and mpath.read_bytes() == before
    code, _, _ = _run(capsys, "compress", tmp_path / "a.png", "-m", mpath, "-o", tmp_path / "a.png", "--force")
    assert code == 2


def test_an_interrupt_leaves_no_temporary_file(model, tmp_path, capsys, monkeypatch):
    _, path = model
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    assert _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", tmp_path / "a.pcz")[0] == 0

    def interrupted(self, fp, *a, **k):
        with open(fp, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", interrupted)
    code, _, err = _run(capsys, "decompress", tmp_path / "a.pcz", "-m", path, "-o", tmp_path / "r")
    assert code == 130 and "interrupted" in err
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_unwritable_output_is_found_before_decoding(model, tmp_path, capsys, monkeypatch):
    _, path = model
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    assert _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", tmp_path / "a.pcz")[0] == 0
    monkeypatch.setattr(Codec, "decode_entries", lambda *a, **k: pytest.fail("decoded before checking the output"))
    monkeypatch.setattr(Codec, "encode", lambda *a, **k: pytest.fail("encoded before checking the output"))
    (tmp_path / "file").write_bytes(b"")
    code, _, err = _run(capsys, "decompress", tmp_path / "a.pcz", "-m", path, "-o", tmp_path / "file" / "sub")
    assert code == 9 and "not a folder" in err
    code, _, err = _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", tmp_path / "file" / "b.pcz")
    assert code == 9 and "not a folder" in err
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return  # root writes into read-only folders
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = _run(capsys, "decompress", tmp_path / "a.pcz", "-m", path, "-o", locked)
        assert code == 9 and "not writable" in err
        code, _, err = _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", locked / "b.pcz")
        assert code == 9
    finally:
        locked.chmod(0o700)


# ------------------------------------------------------------------ 7/10. wrong model, no tracebacks
def test_a_model_with_another_patch_shape_is_exit_5(model, tmp_path, capsys):
    _, path = model
    other = tmp_path / "other.h5"
    pc = probcirc.compile(HCLT(RNG.integers(0, 256, (40, 4)), 2, Categorical(256), num_bins=4), dtype=torch.float32)
    probcirc.io.save(CodecModel(pc, (2, 2)), other)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    assert _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", tmp_path / "a.pcz")[0] == 0
    code, _, err = _run(capsys, "decompress", tmp_path / "a.pcz", "-m", other, "-o", tmp_path / "r")
    assert code == 5 and "4x4 patches" in err and "2x2 patches" in err and err.count("\n") == 1


def test_a_colour_model_mismatch_is_exit_5_and_an_unknown_transform_exit_4(model, tmp_path, capsys):
    m, path = model  # a YCoCg-R model: the same circuit with the green transform is another model
    green = tmp_path / "green.h5"
    probcirc.io.save(CodecModel(m.circuit, m.patch, colour="green"), green)
    Image.fromarray(RNG.integers(0, 256, (5, 6, 3)).astype(np.uint8)).save(tmp_path / "c.png")
    assert _run(capsys, "compress", tmp_path / "c.png", "-m", green, "-o", tmp_path / "c.pcz")[0] == 0
    code, _, err = _run(capsys, "decompress", tmp_path / "c.pcz", "-m", path, "-o", tmp_path / "r")
    assert code == 5 and "colour" in err and err.count("\n") == 1
    with probmod.io.edit(green) as f:  # as a later version's transform would read to this one
        f.attrs["colour"] = "xyz"
    code, _, err = _run(capsys, "decompress", tmp_path / "c.pcz", "-m", green, "-o", tmp_path / "r")
    assert code == 4 and "unknown colour transform 'xyz'" in err and err.count("\n") == 1


# ------------------------------------------------------------------ 8. never expands
def test_the_codec_never_expands_images(model):
    m, _ = model
    codec = Codec(m)
    noise = [RNG.integers(0, 256, s).astype(np.uint8) for s in [(1, 1), (5, 7), (40, 33), (17, 9, 3)]]
    photo = np.clip(np.add.outer(np.arange(48), np.arange(64))[..., None] * [1, 2, 3], 0, 255).astype(np.uint8)
    binary = (RNG.random((30, 30)) < 0.5).astype(np.uint8)
    imgs = noise + [photo, binary]
    with pytest.warns(PoorFitWarning, match="stored raw"):
        blob = codec.encode(imgs)
    header, _ = container.unpack(blob)
    for img, e in zip(imgs, header.entries):
        assert e.stream_len <= img.size + 2  # 8 bits per value plus the width byte and padding
    assert header.entries[-1].stream_len <= binary.size // 8 + 2  # fixed width: one bit per 0/1 value
    assert all(np.array_equal(a, b) for a, b in zip(imgs, codec.decode(blob)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = codec.encode([np.zeros((4, 4), np.uint8)] * 3, raw_fallback=False)
    assert container.unpack(fit)[0].entries[0].coding == container.MODEL


def test_version_1_files_still_decode():
    """The model-coded images of ``data/v3.pcz`` (streams written by the version-3 code, test_codec_packs.py)
    in a version-1 file: per image its size, kind, name, stream length and CRC-32, no coding bit."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    codec = Codec(probcirc.io.load(data / "v2_model.h5"))
    header, payload = container.unpack((data / "v3.pcz").read_bytes())
    with np.load(data / "v3_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(len(header.entries))]
    keep = [i for i, e in enumerate(header.entries) if e.coding == container.MODEL]
    streams = [container.stream(header, payload, i) for i in keep]
    header.entries = [header.entries[i] for i in keep]
    header.checks = [zlib.crc32(s) for s in streams]
    header.payload_len = sum(map(len, streams))
    blob = container.seal(container.header_bytes_v12(header, 1), b"".join(streams), 1)
    header, _ = container.unpack(blob, verify_payload=False)
    assert header.version == 1 and header.group == 1 and len(keep) >= 10
    assert all(np.array_equal(originals[i], b) for i, b in zip(keep, codec.decode(blob, list(range(len(keep))))))


# ------------------------------------------------------------------ conventions (#15)
def test_files_respect_the_umask(model, tmp_path, capsys):
    _, path = model
    arr = tmp_path / "train.npy"
    np.save(arr, RNG.integers(0, 256, (30, 4, 4)).astype(np.uint8))
    old = os.umask(0o022)
    try:
        assert (
            _run(
                capsys,
                "train-codec",
                arr,
                "--patch",
                "4x4",
                "--latents",
                "2",
                "--epochs",
                "1",
                "--full-epochs",
                "0",
                "-q",
                "-o",
                tmp_path / "m.h5",
            )[0]
            == 0
        )
        assert _run(capsys, "compress", arr, "-m", path, "-o", tmp_path / "a.pcz", "-q")[0] == 0
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
        assert _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", tmp_path / "b.pcz", "-q")[0] == 0
        assert _run(capsys, "decompress", tmp_path / "b.pcz", "-m", path, "-o", tmp_path / "r", "-q")[0] == 0
    finally:
        os.umask(old)
    for f in [tmp_path / "m.h5", tmp_path / "a.pcz", tmp_path / "r" / "a.png"]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_progress_lines_on_a_pipe_and_quiet(model, tmp_path, capsys, monkeypatch):
    import functools

    from probcirc.compress import cli
    from probmod.progress import Progress

    _, path = model
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(tmp_path / "a.png")
    monkeypatch.setattr(cli, "Progress", functools.partial(Progress, every=0.0))
    code, _, err = _run(capsys, "compress", tmp_path / "a.png", "-m", path, "-o", tmp_path / "a.pcz", "--threads", "1")
    assert code == 0 and "compress: " in err and "patch" in err
    code, _, err = _run(capsys, "decompress", tmp_path / "a.pcz", "-m", path, "-o", tmp_path / "r", "-q")
    assert code == 0 and err == ""


@pytest.mark.parametrize("command", ["train-codec", "compress", "decompress"])
def test_help_shows_the_shared_flags_and_exit_codes(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in [
        "-o OUTPUT, --output OUTPUT",
        "--force",
        "-q, --quiet",
        "--threads",
        "--max-values",
        "exit codes:",
        "  7  a size limit",
    ]:
        assert flag in text, (command, flag)
    assert "--overwrite" not in text and "67108864" in text


def test_damaged_streams_with_valid_checksums_are_format_errors(model, tmp_path, capsys):
    """constriction refuses some word sequences (all ones here) with an AssertionError; that is a corrupt file."""
    m, path = model
    blob = _crafted(m, [Entry(4, 4, 0)], [b"\xff" * 8])
    with pytest.raises(container.PczFormatError, match="cannot be decoded"):
        Codec(m).decode(blob)
    (tmp_path / "d.pcz").write_bytes(blob)
    code, _, err = _run(capsys, "decompress", tmp_path / "d.pcz", "-m", path, "-o", tmp_path / "o")
    assert code == 4 and err.count("\n") == 1


def test_a_small_pcz_cannot_ask_for_minutes_of_decoding(model, tmp_path, capsys):
    """Decode time grows with values x the model's cost per value, so that work per stream byte is bounded."""
    m, path = model
    codec = Codec(m)
    p = codec.program
    cost = p.work_per_value
    assert cost == -(-(len(p.ch_idx) + int((p.kind == 1).sum()) * 256) // 16)  # edges + leaf-table entries
    # 3M values in one byte per 32x32 image: refused before decoding
    bomb = _crafted(m, [Entry(32, 32, 0)] * 3000, [b"\x5a"] * 3000)
    assert len(bomb) < 64 * 1024
    with pytest.raises(LimitError, match="--max-work"):
        _bounded(lambda: codec.decode(bomb))
    (tmp_path / "bomb.pcz").write_bytes(bomb)
    code, _, err = _run(
        capsys, "decompress", tmp_path / "bomb.pcz", "-m", path, "-o", tmp_path / "o", "--max-ratio", 32
    )
    assert code == 7 and "--max-work" in err and err.count("\n") == 1  # the old name still parses
    # the most a file under 64 KB can ask for: 32 x 1,024 units per stream byte, whatever the model
    budget = container.MAX_RATIO * container.WORK_UNIT * 64 * 1024
    assert budget == 1 << 31
    n = 64 * 1024 // 36  # 32-byte streams and a few header bytes each
    width = 32 * container.MAX_RATIO * container.WORK_UNIT // cost  # values of 32 bytes' work at the limit
    fits = Header(codec.fingerprint, 4, 4, 256, 24, 64, [Entry(1, width, 0, stream_len=32)] * n)
    assert container.check_work(fits, cost) <= budget
    over = Header(codec.fingerprint, 4, 4, 256, 24, 64, [Entry(1, width + 1, 0, stream_len=32)] * n)
    with pytest.raises(LimitError, match="--max-work"):
        container.check_work(over, cost)
    assert container.check_work(over, cost, max_ratio=None) > container.WORK_FLOOR


def test_the_writer_is_warned_when_decoders_will_refuse_the_file(model, monkeypatch):
    """A file over the decoding-work limit (blank pages code to a few bytes) is flagged when written."""
    m, _ = model
    monkeypatch.setattr(container, "WORK_FLOOR", 0)  # so that a handful of small images can be over the limit
    strict = Codec(m, max_ratio=1e-3)
    images = [np.zeros((4, 4), np.uint8)] * 3
    with pytest.warns(HeavyFileWarning, match="--max-work"):
        blob = strict.encode(images, raw_fallback=False)
    with pytest.raises(LimitError, match="--max-work"):
        strict.decode(blob)
    assert all(np.array_equal(a, b) for a, b in zip(images, Codec(m, max_ratio=None).decode(blob)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", HeavyFileWarning)
        Codec(m, max_ratio=None).encode(images, raw_fallback=False)  # no limit, no warning
        Codec(m, max_ratio=1e6).encode(images, raw_fallback=False)  # the streams' bytes count: within the limit
