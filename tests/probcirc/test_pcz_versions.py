"""Files written by earlier .pcz versions still decode bit-exactly (issue #17).

``data/v2.pcz`` was written by the version-2 code (commit 700a310) with the tiny model
``data/v2_model.h5`` (HCLT, 2 latents, 2x2 patches, one EM epoch on the first 3 MNIST
test digits): those 3 digits (array elements named seven, two, one), a 5x7 noise image
and a 6x5 RGB ramp, the last two stored raw. ``data/v2_images.npz`` holds the originals.
"""

from pathlib import Path

import numpy as np
import pytest

import probcirc
from probcirc.compress import Codec, container

DATA = Path(__file__).parent / "data"


def test_version_2_file_decodes_bit_exactly():
    codec = Codec(probcirc.io.load(DATA / "v2_model.h5"))
    blob = (DATA / "v2.pcz").read_bytes()
    header, _ = container.unpack(blob)
    assert header.version == 2
    assert [e.name for e in header.entries] == ["seven", "two", "one", "noise", "rgb"]
    assert [e.coding for e in header.entries] == [container.MODEL] * 3 + [container.RAW] * 2
    with np.load(DATA / "v2_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(5)]
    decoded = codec.decode(blob)
    assert all(a.dtype == b.dtype and np.array_equal(a, b) for a, b in zip(originals, decoded))
    assert np.array_equal(codec.decode(blob, 1)[0], originals[1])  # one image alone, checked by its own CRC


def _header(entries):
    return container.Header(b"\x07" * 32, 4, 4, 256, 24, 64, entries)


def test_version_3_round_trips_mixed_sizes_modes_codings_and_names():
    rng = np.random.default_rng(17)
    entries, streams = [], []
    for i in range(700):
        h, w = [(28, 28), (28, 28), (5, 7), (300, 200)][min(i // 100, 3) if i % 9 else i % 4]
        mode, coding, source = int(i % 13 == 0), int(i % 17 == 0), i % 2
        e = container.Entry(h, w, mode, source, f"img-{i}" if i % 5 == 0 else "", coding=coding)
        values = e.values
        n = 1 + values + (values + 7) // 8 if coding else int(rng.integers(2 * -(-values // 16 // 64), 3 * values))
        entries.append(e)
        streams.append(rng.bytes(min(n, 1 + values) if coding else max(n, 1)))
    streams[5] = rng.bytes(100_000)  # a length far from its run's centre takes the escape
    blob = container.pack(_header(entries), streams, group=64)
    header, payload = container.unpack(blob, max_values=None)
    assert header.version == container.VERSION and header.group == 64 and len(header.checks) == 11
    got = [(e.height, e.width, e.mode, e.source, e.name, e.coding) for e in header.entries]
    assert got == [(e.height, e.width, e.mode, e.source, e.name, e.coding) for e in entries]
    assert [container.stream(header, payload, i) for i in range(700)] == streams


def test_a_damaged_stream_names_its_group_of_images():
    streams = [bytes([i % 251]) * (100 + i % 40) for i in range(600)]
    blob = bytearray(container.pack(_header([container.Entry(28, 28, 0) for _ in streams]), streams, group=256))
    offset = len(blob) - sum(map(len, streams)) + sum(map(len, streams[:300]))  # image 300's first byte
    blob[offset + 3] ^= 1
    with pytest.raises(container.PczFormatError, match="images 256-511 damaged"):
        container.unpack(bytes(blob))
    header, payload = container.unpack(bytes(blob), verify_payload=False)
    assert container.stream(header, payload, 10) == streams[10]  # other groups still decode alone
    with pytest.raises(container.PczFormatError, match="images 256-511: checksum mismatch"):
        container.stream(header, payload, 300)


def test_equal_size_images_cost_under_a_byte_each():
    """From the layout: a run stores its size once, and a stream length within 32 bytes of the
    run's median takes at most k + 2 = 7 bits (k = 5: zigzag value < 64, quotient <= 1); a
    CRC-32 covers GROUP images. So each image adds at most 7/8 + 4/GROUP bytes, rounding aside."""
    rng = np.random.default_rng(3)

    def header_len(n):
        streams = [b"\1" * int(x) for x in rng.integers(125 - 32, 125 + 32, n)]
        blob = container.pack(_header([container.Entry(28, 28, 0) for _ in range(n)]), streams)
        return int.from_bytes(blob[10:14], "little")

    per_image = (header_len(3000) - header_len(1000)) / 2000
    assert per_image <= 7 / 8 + 4 / container.GROUP + 4 / 2000
    assert 8 * per_image / 784 < 0.01  # bits per MNIST pixel


def test_hostile_run_counts_and_rice_tables_are_format_errors():
    entries = [container.Entry(2, 2, 0) for _ in range(3)]
    blob = container.pack(_header(entries), [b"ab", b"c", b"de"])
    header, payload = container.unpack(blob)
    header.entries[0].stream_len = 1 << 40  # lengths that do not add up to the payload
    body = container.header_bytes(header)
    with pytest.raises(container.PczFormatError, match="truncated"):
        container.unpack(container.seal(body, bytes(payload)))
    fixed = container._FIXED.size
    for bad in (body[: fixed + 3], body[:fixed] + b"\0" + body[fixed + 1 :], body[:fixed] + b"\1\xff\xff\xff\x0f"):
        with pytest.raises(container.PczFormatError, match="corrupt .pcz header"):
            container.unpack(container.seal(bad, bytes(payload)))


def test_word_lengths_code_in_words_with_the_short_ones_listed():
    """Lengths that are whole 32-bit words but for a few: the run counts words (shift 2) and lists
    the short streams, costing less than counting bytes; every length comes back exactly."""
    rng = np.random.default_rng(5)
    lengths = [4 * int(x) for x in rng.integers(30, 60, 500)]
    for i, drop in ((0, 3), (17, 1), (18, 2), (499, 1)):
        lengths[i] -= drop
    streams = [b"\2" * n for n in lengths]
    blob = container.pack(_header([container.Entry(28, 28, 0) for _ in streams]), streams)
    header, payload = container.unpack(blob)
    assert [e.stream_len for e in header.entries] == lengths
    words, in_bytes = container._run_lengths(lengths), container._lengths_in(lengths, 0)
    assert words[0] == 2 and len(words) < len(in_bytes)


def test_hostile_units_and_short_lists_are_format_errors():
    lengths = [4 * (10 + i % 7) for i in range(40)]
    lengths[2] -= 1
    streams = [b"\3" * n for n in lengths]
    blob = container.pack(_header([container.Entry(2, 2, 0) for _ in streams]), streams)
    header, payload = container.unpack(blob)
    body, run = container.header_bytes(header), container._run_lengths(lengths)
    assert run[0] == 2 and run[-2:] == b"\1\6"  # words; one short stream: gap 2, drop 1 -> 2 * 3 + 0
    at = body.index(run)
    hostile = [run[:-2] + b"\1\x7f", run[:-2] + b"\x29", b"\3" + run[1:]]  # past the run; 41 of 40; 8-byte units
    for bad in hostile:
        with pytest.raises(container.PczFormatError, match="corrupt .pcz header"):
            container.unpack(container.seal(body[:at] + bad + body[at + len(run) :], bytes(payload)))
