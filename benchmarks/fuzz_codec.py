"""Time-boxed mutation fuzzing of the codec's untrusted inputs: .pcz files, model files, PNG, .npy and idx inputs.

Seeded random mutations (bit flips, byte sets, truncations, splices, and .pcz
header field edits with every checksum recomputed so that the parser's deeper
checks are reached) run in-process through the same paths the command line
uses: ``Codec.decode``, ``container.unpack``, ``probcirc info`` and
``decompress``, ``probmod.io.load`` with the CLI's model checks, and the CLI's
image and array readers. A case is clean when it succeeds, or fails with a
``probmod.errors`` error (one line), within ``--case-seconds`` and without
raising the process's peak memory by more than ``--mib`` MiB. The last line is
exactly ``cases=<n> clean=<c> bad=<b>``.

    python benchmarks/fuzz_codec.py --cases 20000 --seconds 600
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import random
import resource
import struct
import sys
import tempfile
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np


def _setup(tmp: Path):
    import torch

    import probcirc
    from probcirc.compress import Codec, CodecModel
    from probcirc.inputs import Categorical
    from probcirc.structures import HCLT
    from probmod.cli import set_threads

    set_threads(1)
    rng = np.random.default_rng(0)
    model = CodecModel(
        probcirc.compile(HCLT(rng.integers(0, 256, (40, 4)), 2, Categorical(256), num_bins=4), dtype=torch.float32),
        (2, 2),
    )
    probcirc.io.save(model, tmp / "model.h5")
    codec = Codec(model, threads=1)
    smooth = np.add.outer(np.arange(3), np.arange(5)).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pcz = [
            codec.encode([smooth, rng.integers(0, 256, (2, 3, 3)).astype(np.uint8)], ["a", "b"], [0, 1]),
            codec.encode([smooth], raw_fallback=False),
            codec.encode([np.zeros((1, 2), np.uint8)] * 3, ["x"] * 3, [1] * 3),
        ]
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(smooth).save(png, format="PNG")
    npy = io.BytesIO()
    np.save(npy, rng.integers(0, 256, (2, 3, 3)).astype(np.uint8))
    idx = gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">III", 2, 3, 3) + bytes(range(18)))
    seeds = {
        "pcz": pcz,
        "model": [(tmp / "model.h5").read_bytes()],
        "png": [png.getvalue()],
        "npy": [npy.getvalue()],
        "idx": [idx],
    }
    return codec, seeds


# ------------------------------------------------------------------ mutations
def _flip(r: random.Random, b: bytes) -> bytes:
    out = bytearray(b)
    for _ in range(r.choice([1, 1, 2, 4, 8])):
        if out:
            out[r.randrange(len(out))] ^= 1 << r.randrange(8)
    return bytes(out)


def _set(r: random.Random, b: bytes) -> bytes:
    out = bytearray(b)
    if out:
        i = r.randrange(len(out))
        width = r.choice([1, 2, 4])
        value = r.choice([0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, r.getrandbits(32)])
        out[i : i + width] = value.to_bytes(8, "little")[:width]
    return bytes(out)


def _truncate(r: random.Random, b: bytes) -> bytes:
    return b[: r.randrange(len(b) + 1)]


def _splice(r: random.Random, b: bytes, other: bytes) -> bytes:
    i, j = sorted(r.randrange(len(b) + 1) for _ in range(2))
    k = r.randrange(len(other) + 1)
    return b[:i] + other[k : k + r.randrange(64)] + b[j:]


def _mutate(r: random.Random, b: bytes, pool: list[bytes]) -> tuple[str, bytes]:
    kind = r.choice(["flip", "set", "truncate", "splice"])
    if kind == "flip":
        return kind, _flip(r, b)
    if kind == "set":
        return kind, _set(r, b)
    if kind == "truncate":
        return kind, _truncate(r, b)
    return kind, _splice(r, b, r.choice(pool))


def _reseal(data: bytes) -> bytes:
    """Recompute a .pcz's stream CRCs (where parsable), payload SHA-256 and header CRC after a mutation."""
    from probcirc.compress import container

    m = len(container.MAGIC)
    if len(data) < m + 6:
        return data
    _, hlen = struct.unpack_from("<HI", data, m)
    end = m + 6 + hlen
    if len(data) < end + 4:
        return data
    body, payload = bytearray(data[m + 6 : end]), data[end + 4 :]
    fixed = container._FIXED.size
    if len(body) >= fixed:
        body[fixed - 44 : fixed - 12] = hashlib.sha256(payload).digest()  # payload_sha precedes payload_len, n_images
        try:
            version = struct.unpack_from("<H", data, m)[0]
            view = memoryview(bytes(body))
            if version >= 3:
                entries, group, _ = container._entries_v3(view, version)
            else:
                entries, group = container._entries_v12(view, version)[0], 1
            checks = _checks(container.Header(b"", 0, 0, 0, 0, 0, entries, group=group), payload)
            if version >= 3:  # the checks end the header
                body[len(body) - 4 * len(checks) :] = struct.pack(f"<{len(checks)}I", *checks)
            else:
                body[fixed:] = container.header_bytes_v12(
                    container.Header(b"", 0, 0, 0, 0, 0, entries, checks=checks), version
                )[fixed:]
        except (struct.error, ValueError):
            pass
    lead = data[m : m + 6]
    return data[:m] + lead + bytes(body) + struct.pack("<I", zlib.crc32(lead + bytes(body))) + payload


def _edit_header(r: random.Random, data: bytes) -> bytes:
    """Change one header field to a hostile value and write a file whose checksums all hold."""
    from probcirc.compress import container

    header, payload = container.unpack(data)
    e = r.choice(header.entries)
    field = r.choice(
        [
            "height",
            "width",
            "mode",
            "coding",
            "source",
            "name",
            "stream_len",
            "patch",
            "block",
            "values",
            "precision",
            "count",
            "version",
            "group",
        ]
    )
    big = r.choice([0, 1, 2, 3, 255, 4096, 12000, 1 << 20, 1 << 31, (1 << 63) - 1])
    if field in ("height", "width"):
        setattr(e, field, big)
    elif field in ("mode", "coding", "source"):
        setattr(e, field, r.choice([0, 1, 2, 7, 15]) & (1 if field == "coding" else 7 if field == "source" else 15))
    elif field == "name":
        e.name = r.choice(["../../x", "/etc/passwd", "a\x00b", "\x1b[2J", "..", "", "é" * 300, "a/b\\c"])
    elif field == "stream_len":
        e.stream_len = r.randrange(0, 2 * e.stream_len + 2)
    elif field == "patch":
        header.patch_h, header.patch_w = r.choice([(0, 2), (2, 0), (1, 4), (65535, 65535), (2, 2)])
    elif field == "block":
        header.block = r.choice([0, 1, 2, 63, 65535])
    elif field == "values":
        header.num_values = r.choice([0, 2, 255, 257, 65535])
    elif field == "precision":
        header.precision = r.choice([0, 1, 23, 25, 255])
    elif field == "group":
        header.group = r.choice([1, 2, 3, 1000, (1 << 40)])
    elif field == "count":
        header.entries = header.entries * r.choice([0, 2, 50])
    return _write(header, payload, version=r.choice([1, 2, 3]) if field == "version" else header.version)


def _checks(header, payload: bytes) -> list[int]:
    return [zlib.crc32(header.group_bytes(payload, g)) for g in range(-(-len(header.entries) // header.group))]


def _write(header, payload: bytes, version: int) -> bytes:
    """container.pack, but keeping the (possibly false) declared stream lengths."""
    from probcirc.compress import container

    header.patch_h, header.patch_w, header.block = (
        header.patch_h & 0xFFFF,
        header.patch_w & 0xFFFF,
        header.block & 0xFFFF,
    )
    header.num_values, header.precision = header.num_values & 0xFFFF, header.precision & 0xFF
    header.payload_sha = hashlib.sha256(payload).digest()
    header.payload_len = sum(e.stream_len for e in header.entries)
    header.group = max(1, header.group) if version >= 3 else 1
    header.checks = _checks(header, payload)
    body = container.header_bytes(header) if version >= 3 else container.header_bytes_v12(header, version)
    return container.seal(body, bytes(payload), version)


# ------------------------------------------------------------------ targets
def _cli(argv: list[str]) -> None:
    """Run the CLI in-process; an exit status of 1 (internal error) or a multi-line error is a failure."""
    from probcirc.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    text = err.getvalue()
    if code == 1 or (code and text.count("\n") != 1):
        raise AssertionError(f"exit {code}: {text!r}")


def _target(kind: str, data: bytes, r: random.Random, codec, tmp: Path, model_path: Path) -> None:
    from probcirc.compress import cli, container

    if kind == "pcz":
        roll = r.random()
        if roll < 0.9:
            container.unpack(data)
            codec.decode(data)
            return
        (tmp / "in.pcz").write_bytes(data)
        if roll < 0.97:
            _cli(["info", str(tmp / "in.pcz")])
        else:
            _cli(
                [
                    "decompress",
                    str(tmp / "in.pcz"),
                    "-m",
                    str(model_path),
                    "-o",
                    str(tmp / "out"),
                    "--force",
                    "-q",
                    "--threads",
                    "1",
                ]
            )
        return
    path = tmp / {"model": "m.h5", "png": "in.png", "npy": "in.npy", "idx": "in-idx3-ubyte.gz"}[kind]
    path.write_bytes(data)
    if kind == "model":
        args = argparse.Namespace(
            model=str(path), input="seed.pcz", patch=None, batch_size=64, threads=1, max_values=container.MAX_VALUES
        )
        cli._load_codec(args, (2, 2))
    elif kind == "png":
        cli._read_image(path)
    else:
        cli._read_array(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=20000, help="stop after this many cases")
    p.add_argument("--seconds", type=float, default=900.0, help="stop after this much wall time")
    p.add_argument("--seed", type=int, default=0, help="random seed of the mutations")
    p.add_argument("--case-seconds", type=float, default=5.0, help="a case slower than this is bad")
    p.add_argument("--mib", type=float, default=200.0, help="a case raising peak memory by more than this is bad")
    p.add_argument("--save", default=None, help="folder to keep the inputs of bad cases in")
    args = p.parse_args(argv)

    from probmod.errors import ProbmodError

    warnings.simplefilter("ignore")
    r = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="fuzz_codec_"))
    codec, seeds = _setup(tmp)
    pool = [b for group in seeds.values() for b in group]
    weights = {"pcz": 0.6, "model": 0.1, "png": 0.1, "npy": 0.1, "idx": 0.1}
    kinds = list(weights)
    n = clean = bad = 0
    start = time.monotonic()
    last_log = start
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    while n < args.cases and time.monotonic() - start < args.seconds:
        kind = r.choices(kinds, [weights[k] for k in kinds])[0]
        seed = r.choice(seeds[kind])
        if kind == "pcz" and r.random() < 0.35:
            how, data = "edit", _edit_header(r, seed)
        else:
            how, data = _mutate(r, seed, pool)
            if kind == "pcz" and r.random() < 0.5:
                how, data = how + "+reseal", _reseal(data)
        n += 1
        t = time.perf_counter()
        problem = None
        try:
            _target(kind, data, r, codec, tmp, tmp / "model.h5")
        except ProbmodError as err:
            if "\n" in str(err):
                problem = f"multi-line error: {err!r}"
        except BaseException as err:
            if isinstance(err, KeyboardInterrupt):
                raise
            problem = "".join(traceback.format_exception_only(type(err), err)).strip()
        elapsed = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if problem is None and elapsed > args.case_seconds:
            problem = f"took {elapsed:.1f} s"
        if problem is None and rss - base_rss > args.mib:
            problem = f"peak memory {rss - base_rss:.0f} MiB above the start"
        if problem is None:
            clean += 1
        else:
            bad += 1
            print(f"bad case {n} ({kind}, {how}): {problem}", file=sys.stderr)
            if args.save:
                os.makedirs(args.save, exist_ok=True)
                Path(args.save, f"case{n}.{kind}").write_bytes(data)
        if time.monotonic() - last_log > 30:
            last_log = time.monotonic()
            print(f"{n} cases, {bad} bad, {n / (last_log - start):.0f} cases/s", file=sys.stderr, flush=True)
    print(f"cases={n} clean={clean} bad={bad}")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
