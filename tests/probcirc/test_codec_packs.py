"""Version 4: small images of one size share a range-coded stream (issue #17); version-3 files still decode.

``data/v3.pcz`` was written by the version-3 code (commit 9504c21) with ``data/v2_model.h5``
(2x2 patches): 20 2x2 crops of MNIST test digits, three 4x4 crops and a 5x7 noise image,
every seventh named ``d<i>``, the raw fallback choosing per image. ``data/v3_images.npz``
holds the originals. ``data/v4.pcz`` holds the same images written by the version-4 code
(commit 5e09ed8), packs included, so that later versions keep reading this one.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import probcirc
from probcirc.compress import Codec, CodecModel, PoorFitWarning, container
from probcirc.inputs import Categorical
from probcirc.structures import HCLT

DATA = Path(__file__).parent / "data"


def _blobs(n, rng, size=4):
    """Dark images with one bright 2x2 square (200-202) somewhere: a few bits each for a fitted model."""
    out = []
    for _ in range(n):
        img = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 1, 2)
        img[y : y + 2, x : x + 2] = 200 + rng.integers(0, 3, (2, 2))
        out.append(img)
    return out


@pytest.fixture(scope="module")
def codec():
    data = np.stack(_blobs(300, np.random.default_rng(1))).reshape(300, 16).astype(np.int64)
    pc = probcirc.compile(HCLT(data, 4, input_dist=Categorical(256), num_bins=4), dtype=torch.float32)
    probcirc.learn.em(pc, torch.from_numpy(data), epochs=1, batch_size=100, progress=False)
    return Codec(CodecModel(pc, (4, 4)))


def test_version_3_file_decodes_bit_exactly():
    codec = Codec(probcirc.io.load(DATA / "v2_model.h5"))
    blob = (DATA / "v3.pcz").read_bytes()
    header, _ = container.unpack(blob)
    assert header.version == 3 and all(e.pack == 1 for e in header.entries)
    with np.load(DATA / "v3_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(len(header.entries))]
    assert [e.name for e in header.entries] == [f"d{i}" if i % 7 == 0 else "" for i in range(len(originals))]
    assert {container.RAW, container.MODEL} <= {e.coding for e in header.entries}
    assert all(np.array_equal(a, b) for a, b in zip(originals, codec.decode(blob)))
    assert np.array_equal(codec.decode(blob, 21)[0], originals[21])


def test_version_4_file_decodes_bit_exactly():
    codec = Codec(probcirc.io.load(DATA / "v2_model.h5"))
    blob = (DATA / "v4.pcz").read_bytes()
    header, _ = container.unpack(blob)
    assert header.version == 4 and max(e.pack for e in header.entries) > 1
    with np.load(DATA / "v3_images.npz") as f:
        originals = [f[f"arr_{i}"] for i in range(len(header.entries))]
    assert [e.name for e in header.entries] == [f"d{i}" if i % 7 == 0 else "" for i in range(len(originals))]
    assert all(np.array_equal(a, b) for a, b in zip(originals, codec.decode(blob)))
    assert np.array_equal(codec.decode(blob, 5)[0], originals[5])


def test_equal_small_images_share_streams_and_round_trip(codec):
    imgs = _blobs(40, np.random.default_rng(2))  # one 4x4 patch each: 16 per stream
    odd = _blobs(3, np.random.default_rng(3), size=6)  # 4 patches each: 4 per stream
    blob = codec.encode(imgs + odd, names=["a"] * 43)
    header, payload = container.unpack(blob)
    assert header.version == 4
    assert [e.pack for e in header.entries] == ([16] + [0] * 15) * 2 + [8] + [0] * 7 + [3, 0, 0]
    assert all(e.stream_len == 0 for e in header.entries if e.pack == 0)
    back = codec.decode(blob)
    assert all(np.array_equal(a, b) for a, b in zip(imgs + odd, back))
    for i in (0, 5, 33, 39, 41):  # a pack's first, inner and last images, decoded alone
        assert np.array_equal(codec.decode(blob, i)[0], (imgs + odd)[i])
    # One termination per pack: a stream is within the coder's flush of its images' ideal bits.
    bits = codec.model_bits(imgs)
    for s in range(0, 40, 16):
        stream = container.stream(header, payload, s)
        assert 8 * len(stream) <= bits[s : s + 16].sum() + 40 + 0.01 * 16 * len(imgs[s : s + 16])
    # Each image alone ends its coder too (a byte or more), and its stream length costs header bits.
    alone = codec.encode_streams(imgs)[1]
    assert sum(len(container.stream(header, payload, s)) for s in (0, 16, 32)) <= sum(map(len, alone))


def test_a_poorly_fitting_image_leaves_its_pack_for_raw(codec):
    imgs = _blobs(20, np.random.default_rng(4))
    imgs[5] = np.random.default_rng(5).integers(0, 256, (4, 4)).astype(np.uint8)  # noise: cheaper raw
    with pytest.warns(PoorFitWarning, match="1 of 20 images are stored raw"):
        blob = codec.encode(imgs)
    header, _ = container.unpack(blob)
    assert [e.coding for e in header.entries] == [0] * 5 + [container.RAW] + [0] * 14
    assert [e.pack for e in header.entries] == [5, 0, 0, 0, 0, 1, 14] + [0] * 13
    assert all(np.array_equal(a, b) for a, b in zip(imgs, codec.decode(blob)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codec.decode(codec.encode(imgs, raw_fallback=False), 5)[0].tolist() == imgs[5].tolist()


def test_inconsistent_packs_are_refused_on_both_sides(codec):
    h = container.Header(b"\0" * 32, 4, 4, 256, 24, 64, [container.Entry(4, 4, 0, pack=2), container.Entry(4, 4, 0)])
    with pytest.raises(ValueError, match="pack 1"):
        container.pack(h, [b"ab", b""])
    blob = bytearray(codec.encode(_blobs(3, np.random.default_rng(6))))
    header, payload = container.unpack(bytes(blob))
    assert header.entries[0].pack == 3
    body = container.header_bytes(header).replace(b"\x03\x04\x04\x00\x03", b"\x03\x04\x04\x00\x41", 1)
    with pytest.raises(container.PczFormatError, match="streams of 65"):
        container.unpack(container.seal(body, bytes(payload)))
