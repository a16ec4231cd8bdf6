"""Lossless codec: exact PMFs, determinism, bit-exact round trips, format errors."""

import itertools
import math

import numba
import numpy as np
import pytest
import torch

import probcirc
from probcirc.compress import (
    BLOCK,
    Codec,
    CodecModel,
    ImageModeError,
    ModelMismatchError,
    PczFormatError,
    PmfEngine,
    kernels,
)
from probcirc.compress.images import planes_to_rgb, rgb_to_planes, tile, untile
from probcirc.inputs import Categorical
from probcirc.structures import HCLT

RNG = np.random.default_rng(0)


def _smooth_images(n, h, w, rng):
    """Blurry blobs with some noise: structured enough for the model to learn something."""
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1.5, 4)
        img = 200 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + rng.normal(0, 8, (h, w))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def model():
    imgs = _smooth_images(300, 4, 4, np.random.default_rng(1))
    data = np.stack(imgs).reshape(300, 16).astype(np.int64)
    pc = probcirc.compile(HCLT(data, 4, input_dist=Categorical(256), num_bins=4), dtype=torch.float32)
    probcirc.learn.em(pc, torch.from_numpy(data), epochs=1, batch_size=100, progress=False)
    return CodecModel(pc, (4, 4))


@pytest.fixture(scope="module")
def codec(model):
    return Codec(model)


def _tiny_circuit():
    """3 variables with 3 values; a small non-tree circuit (shared sums) for enumeration."""
    from probcirc.nodes import inputs, multiply, summate

    d = Categorical(3)
    a, b, c = inputs(0, 2, d), inputs(1, 2, d), inputs(2, 2, d)
    ab = summate(multiply(a, b), num_nodes=2)
    root = summate(multiply(ab, c), multiply(summate(multiply(a, b), num_nodes=2), c), num_nodes=1)
    return probcirc.compile(root, seed=3, dtype=torch.float64)


def test_engine_refuses_out_of_order_variables(codec):
    eng = PmfEngine(codec.program, 1)
    order = codec.program.order
    eng.pmfs(order[0], np.ones(1, bool))
    eng.observe(order[0], np.zeros(1, np.int64), np.ones(1, bool))
    with pytest.raises(ValueError, match="order"):
        eng.pmfs(order[0], np.ones(1, bool))


def test_pmfs_match_enumeration_on_a_tiny_circuit():
    pc = _tiny_circuit()
    from probcirc.compress.program import build_program

    prog = build_program(pc)
    allx = torch.tensor(list(itertools.product(range(3), repeat=3)))
    joint = pc.log_prob(allx).exp().reshape(3, 3, 3).numpy()
    for x in itertools.product(range(3), repeat=3):
        eng = PmfEngine(prog, 1)
        for k, i in enumerate(prog.order):
            freq = eng.pmfs(i, np.ones(1, bool))[0].copy()
            assert freq.sum() == 2**24 and freq.min() >= 1
            seen = list(prog.order[:k])
            t = joint.transpose(seen + [i] + [v for v in range(3) if v not in seen and v != i])
            marg = t[tuple(x[v] for v in seen)].reshape(3, -1).sum(1)
            exact = marg / marg.sum()
            np.testing.assert_allclose(freq / 2**24, exact, atol=3 / 2**24)
            eng.observe(i, np.array([x[i]]), np.ones(1, bool))


def test_naive_and_incremental_are_bit_identical(codec):
    x = np.stack(_smooth_images(5, 4, 4, RNG)).reshape(5, 16).astype(np.int64)
    act = np.ones(5, bool)
    engines = [PmfEngine(codec.program, 5, m) for m in ("incremental", "ancestors", "naive")]
    for i in codec.program.order:
        f = [e.pmfs(i, act).copy() for e in engines]
        assert np.array_equal(f[0], f[1]) and np.array_equal(f[0], f[2])
        for e in engines:
            e.observe(i, x[:, i], act)


def test_compiled_kernels_equal_pure_python(codec):
    """numba (no fastmath) and the same functions run as plain Python agree bit for bit,
    which also rules out fused multiply-adds in the compiled code."""
    from probcirc.compress import kernels as K

    p = codec.program
    x = np.stack(_smooth_images(1, 4, 4, RNG)).reshape(16).astype(np.int64)
    S, V = p.num_slots, p.num_values
    M, E, DM, DE = np.zeros(S), np.zeros(S, np.int64), np.zeros(S), np.zeros(S, np.int64)
    obs = np.zeros(16, bool)
    obs[p.order[:7]] = True
    for n in range(S):
        K._inside_node.py_func(n, p.kind, p.leaf_var, p.leaf_row, p.table, p.ch_ptr, p.ch_idx, p.ch_w, M, E, x, obs)
    tm, te, pbuf, freq = np.zeros(p.max_parents), np.zeros(p.max_parents, np.int64), np.zeros(V), np.zeros(V, np.int64)
    # plain-Python outside pass and quantisation for variable 7
    for n in range(S - 1, 0, -1):
        K._outside_node.py_func(
            n, S - 1, p.kind, p.ch_ptr, p.ch_idx, p.par_w, p.par_ptr, p.par_node, p.par_edge, M, E, DM, DE, tm, te
        )
    K._pmf.py_func(p.order[7], p.var_ptr, p.var_leaf, p.leaf_row, p.table, DM, DE, pbuf)
    K.quantize.py_func(pbuf, 24, freq)
    eng = PmfEngine(p, 1)
    for i in p.order[:7]:
        eng.pmfs(i, np.ones(1, bool))
        eng.observe(i, x[None, i], np.ones(1, bool))
    assert np.array_equal(eng.pmfs(p.order[7], np.ones(1, bool))[0], freq)


def test_quantize_properties():
    freq = np.zeros(256, np.int64)
    for p in [
        np.zeros(256),
        np.ones(256),
        RNG.dirichlet(np.ones(256) * 0.01),
        np.r_[1.0, np.zeros(255)],
        RNG.random(256) * 1e-300,
    ]:
        kernels.quantize(p, 24, freq)
        assert freq.sum() == 2**24 and freq.min() >= 1
    p = RNG.dirichlet(np.ones(256))
    kernels.quantize(p, 24, freq)
    np.testing.assert_allclose(freq / 2**24, p, atol=300 / 2**24)


@pytest.mark.parametrize("shape", [(4, 4), (1, 1), (5, 7), (9, 3), (13, 11)])
def test_round_trip_random_and_odd_sizes(codec, shape):
    imgs = [RNG.integers(0, 256, shape).astype(np.uint8), np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8)]
    out = codec.decode(codec.encode(imgs, raw_fallback=False))
    assert all(np.array_equal(a, b) and b.dtype == np.uint8 for a, b in zip(imgs, out))


def test_round_trip_rgb_and_ycocg(codec):
    rgb = RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)
    assert np.array_equal(planes_to_rgb(rgb_to_planes(rgb)), rgb)
    every = np.array(list(itertools.product([0, 1, 127, 128, 254, 255], repeat=3)), np.uint8)[None]
    assert np.array_equal(planes_to_rgb(rgb_to_planes(every)), every)
    img = RNG.integers(0, 256, (6, 9, 3)).astype(np.uint8)
    assert np.array_equal(codec.decode(codec.encode([img], raw_fallback=False))[0], img)


def test_real_digits_round_trip_and_code_length(codec):
    imgs = _smooth_images(12, 4, 4, np.random.default_rng(7)) + _smooth_images(2, 8, 8, np.random.default_rng(8))
    _, streams = codec.encode_streams(imgs)
    model = codec.model_bits(imgs)
    for s, bits, img in zip(streams, model, imgs):
        # range-coder flush (<= 32 bits) + quantisation (<= ~1e-4 bit/symbol) + block table
        assert 8 * len(s) <= bits + 40 + 0.01 * img.size
    assert all(np.array_equal(a, b) for a, b in zip(imgs, codec.decode(codec.encode(imgs))))


def test_determinism_across_batch_sizes_and_threads(model):
    imgs = [RNG.integers(0, 256, (9, 10)).astype(np.uint8) for _ in range(3)] + _smooth_images(4, 4, 4, RNG)
    enc = Codec(model, batch_size=1, threads=1)
    blob = enc.encode(imgs, raw_fallback=False)
    for bs, threads in [(3, 2), (1000, 2), (7, 1)]:
        dec = Codec(model, batch_size=bs, threads=threads)
        assert dec.encode(imgs, raw_fallback=False) == blob
        assert all(np.array_equal(a, b) for a, b in zip(imgs, dec.decode(blob)))
    naive = Codec(model, mode="naive", batch_size=2)
    assert naive.encode(imgs[-2:], raw_fallback=False) == Codec(model).encode(imgs[-2:], raw_fallback=False)
    assert numba.get_num_threads() >= 1


def test_many_blocks_and_single_image_decode(codec):
    big = RNG.integers(0, 256, (4 * 9, 4 * 8)).astype(np.uint8)  # 72 patches: two blocks
    assert BLOCK < 72
    small = np.zeros((3, 3), np.uint8)
    blob = codec.encode([small, big, small], raw_fallback=False)
    assert np.array_equal(codec.decode(blob, index=1)[0], big)
    assert np.array_equal(codec.decode(blob)[1], big)


def test_tiling_inverse():
    plane = RNG.integers(0, 256, (7, 10)).astype(np.uint8)
    v, m = tile(plane, 3, 4)
    assert v.shape == (9, 12) and m.sum() == 70
    assert np.array_equal(untile(v, 7, 10, 3, 4), plane)


def test_bad_images_are_refused(codec):
    for bad in [
        np.zeros((4, 4), np.uint16) + 300,
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4,), np.uint8),
        np.zeros((4, 4), np.float32),
    ]:
        with pytest.raises(ImageModeError):
            codec.encode([bad])


def test_corruption_truncation_foreign_and_mismatch(codec, model):
    blob = codec.encode([RNG.integers(0, 256, (5, 5)).astype(np.uint8)])
    with pytest.raises(PczFormatError, match="magic"):
        codec.decode(b"GIF89a" + blob)
    for cut in [3, 12, 40, len(blob) - 1]:
        with pytest.raises(PczFormatError):
            codec.decode(blob[:cut])
    flipped = bytearray(blob)
    flipped[-2] ^= 0x10
    with pytest.raises(PczFormatError, match="checksum"):
        codec.decode(bytes(flipped))
    with pytest.raises(PczFormatError, match="checksum"):
        codec.decode(bytes(flipped), index=0)
    head = bytearray(blob)
    head[20] ^= 1
    with pytest.raises(PczFormatError, match="header checksum"):
        codec.decode(bytes(head))
    with pytest.raises(PczFormatError, match="trailing"):
        codec.decode(blob + b"\0")
    other = CodecModel(
        probcirc.compile(HCLT(np.random.default_rng(5).integers(0, 256, (40, 16)), 2, Categorical(256), num_bins=4)),
        (4, 4),
    )
    with pytest.raises(ModelMismatchError, match="another model"):
        Codec(other).decode(blob)


def test_model_file_round_trip(model, tmp_path):
    probcirc.io.save(model, tmp_path / "m.h5")
    back = probcirc.io.load(tmp_path / "m.h5")
    assert isinstance(back, CodecModel) and back.patch == (4, 4)
    assert back.circuit.fingerprint() == model.circuit.fingerprint()
    img = RNG.integers(0, 256, (6, 6)).astype(np.uint8)
    assert Codec(back).encode([img], raw_fallback=False) == Codec(model).encode([img], raw_fallback=False)


def test_bits_per_dim_beats_uniform(codec):
    imgs = _smooth_images(30, 4, 4, np.random.default_rng(11))
    _, streams = codec.encode_streams(imgs)
    model_bits = codec.model_bits(imgs).sum()
    assert math.isfinite(model_bits)
    assert 8 * sum(map(len, streams)) <= model_bits + 40 * 30
