"""The compiled coding loop (#17, speed): constriction's bytes, the engine's PMFs, batch- and thread-invariant."""

import constriction
import numpy as np
import pytest
import torch

import probcirc
from probcirc.compress import Codec, CodecModel, PmfEngine, kernels
from probcirc.compress import rangecoder as rc
from probcirc.compress.images import tile
from probcirc.inputs import Categorical
from probcirc.structures import HCLT

RNG = np.random.default_rng(17)


@pytest.fixture(scope="module")
def codec():
    data = np.clip(RNG.normal(100, 40, (200, 16)), 0, 255).astype(np.int64)
    pc = probcirc.compile(HCLT(data, 3, Categorical(256), num_bins=4), dtype=torch.float32)
    probcirc.learn.em(pc, torch.from_numpy(data), epochs=1, batch_size=100, progress=False)
    return Codec(CodecModel(pc, (4, 4)))


def _freqs(n, conc):
    F = np.zeros((n, 256), np.int64)
    for j in range(n):
        p = RNG.dirichlet(np.full(256, conc))
        p[RNG.random(256) < 0.3] *= 1e-30
        kernels.quantize(p, 24, F[j])
    return F


@pytest.mark.parametrize("conc", [0.01, 1.0, 100.0])
def test_range_coder_writes_and_reads_constrictions_words(conc):
    family = constriction.stream.model.Categorical(perfect=False)
    for n in [0, 1, 2, 57, 400]:
        F = _freqs(n, conc)
        syms = np.array([RNG.choice(256, p=f / f.sum()) for f in F], dtype=np.int32)
        ref = constriction.stream.queue.RangeEncoder()
        if n:
            ref.encode(syms, family, (F - 1).astype(np.float64))
        want = ref.get_compressed().astype(np.uint32)
        st, words = rc.encoder(), np.zeros(n + 4, np.uint32)
        for f, s in zip(F, syms):
            rc.encode(st, words, int(f[:s].sum()), int(f[s]), 24)
        assert np.array_equal(words[: rc.seal(st, words)], want)
        dec = rc.decoder(want)
        assert [rc.decode(dec, want, f, 24) for f in F] == list(syms)


def _reference_stream(codec, img):
    """One-block image coded the way the codec did before the compiled loop: PmfEngine + constriction."""
    vals, valid = tile(img, *codec.patch)
    eng = PmfEngine(codec.program, len(vals))
    enc = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    X = vals.astype(np.int64)
    for i in codec.program.order:
        act = valid[:, i]
        if act.any():
            f = eng.pmfs(i, act)
            rows = np.flatnonzero(act)
            enc.encode(X[rows, i].astype(np.int32), family, (f[rows] - 1).astype(np.float64))
            eng.observe(i, X[:, i], act)
    return enc.get_compressed().astype("<u4").tobytes()  # the codec then drops up to 3 trailing zero bytes


def test_compiled_loop_codes_the_engines_pmfs(codec):
    imgs = [np.clip(RNG.normal(100, 40, s), 0, 255).astype(np.uint8) for s in [(4, 4), (9, 7), (16, 16)]]
    _, streams = codec.encode_streams(imgs)
    for img, got in zip(imgs, streams):
        want = _reference_stream(codec, img)
        assert got == want[: len(got)] and want[len(got) :] == b"\0" * (len(want) - len(got))


def test_an_image_alone_and_in_a_batch_code_the_same_bytes(codec):
    imgs = [np.clip(RNG.normal(100, 40, s), 0, 255).astype(np.uint8) for s in [(4, 4), (33, 70), (5, 9), (12, 12)]]
    _, together = codec.encode_streams(imgs)
    for img, s in zip(imgs, together):
        assert codec.encode_streams([img])[1][0] == s
    for threads, batch in [(1, 1), (2, 3), (2, 1000)]:
        other = Codec(CodecModel(codec.circuit, codec.patch), threads=threads, batch_size=batch)
        assert other.encode_streams(imgs)[1] == together
        back = other.decode(other.encode(imgs, raw_fallback=False))
        assert all(np.array_equal(a, b) for a, b in zip(imgs, back))
