"""The compiled coding loop (#17, speed): constriction's bytes, the engine's PMFs, batch- and thread-invariant."""

import constriction
import numpy as np
import pytest
import torch
from numba import njit

import probcirc
from probcirc.compress import Codec, CodecModel, PmfEngine, fastpath, kernels
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
    return enc.get_compressed().astype("<u4").tobytes()


def test_compiled_loop_codes_the_engines_pmfs(codec):
    imgs = [np.clip(RNG.normal(100, 40, s), 0, 255).astype(np.uint8) for s in [(4, 4), (9, 7), (16, 16)]]
    _, streams = codec.encode_streams(imgs)
    for img, got in zip(imgs, streams):
        want = _reference_stream(codec, img)
        body = len(want) - 8  # all but constriction's termination (rangecoder.seal_short ends it shorter)
        assert got[:body] == want[:body] and len(got) <= len(want)


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


@njit
def _vnorm_all(m, e, out_m, out_e, bad):
    for k in range(m.shape[0]):
        out_m[k], out_e[k], bad[k] = fastpath._vnorm(m[k], e[k])


@njit
def _vshift_all(m, s, out):
    for k in range(m.shape[0]):
        out[k] = fastpath._vshift(m[k], s[k])


def test_branch_free_norm_and_shift_are_the_scalar_ones_bit_for_bit():
    """Edge values: 0, the renormalisation bounds and their neighbours, subnormals, huge numbers."""
    lo, hi, tiny = kernels.LO, kernels.HI, np.finfo(float).smallest_subnormal
    edges = [0.0, lo, hi, np.nextafter(lo, 0), np.nextafter(hi, np.inf), 0.5, 1.0, 2.0**-1022, tiny, 3 * tiny, 1e300]
    m = np.concatenate([edges, 2.0 ** RNG.uniform(-1000, 1000, 500), RNG.uniform(0, 1, 100)])
    e = RNG.integers(-(10**6), 10**6, len(m))
    got_m, got_e, bad = np.empty_like(m), np.empty_like(e), np.empty_like(e)
    _vnorm_all(m, e, got_m, got_e, bad)
    subnormal = (m > 0) & (m < 2.0**-1022)
    assert np.array_equal(bad.astype(bool), subnormal)  # the cases the callers redo by the scalar path
    for k in np.flatnonzero(~subnormal):
        assert (got_m[k], got_e[k]) == kernels._norm(m[k], e[k])
    # shifts as the kernels make them: a normalised or zero mantissa, s <= 0 down past the clamp
    mm = np.concatenate([[0.0, lo, hi, 0.5], 2.0 ** RNG.uniform(-256, 256, 400)])
    for s in [0, -1, -300, -1021, -1022, -1023, -1074, -1099, -1100, -1101, -5000]:
        out = np.empty_like(mm)
        _vshift_all(mm, np.full(len(mm), s), out)
        want = np.array([kernels._shift(x, s) for x in mm])
        assert np.array_equal(out.view(np.int64), want.view(np.int64))


def test_group_kernels_give_the_scalar_node_values(codec):
    """Sum groups (inside) and derivatives under one group (outside), on random lanes with exponents far apart
    and zeros, against the scalar lane functions."""
    a = codec._arrays
    grp, pgrp, gofs = fastpath.groups(a)
    assert (grp[a.kind == kernels.SUM] >= 0).all()
    S, nr = len(a.kind), 5
    M = np.where(RNG.random((S, nr)) < 0.1, 0.0, 2.0 ** RNG.uniform(-256, 256, (S, nr)))
    E = np.where(M == 0, kernels.ZERO_E, RNG.integers(-3000, 3000, (S, nr)))
    DM, DE = M[::-1].copy(), E[::-1].copy()
    tmp = (np.empty((a.par_ptr.shape[0], nr)), np.empty((a.par_ptr.shape[0], nr), np.int64))
    X, OBS = np.zeros((nr, len(a.var_ptr) - 1), np.int64), np.zeros((nr, len(a.var_ptr) - 1), bool)
    GE, SH = np.empty((S, nr), np.int64), np.empty((gofs[-1], nr))
    DP, GD = np.empty((S, nr)), np.empty((S, nr), np.int64)
    acc, top = np.empty(nr), np.empty(nr, np.bool_)
    checked = 0
    for n in np.flatnonzero(grp >= 0):
        g = grp[n]
        want_m, want_e = M.copy(), E.copy()
        fastpath._inside_lanes(n, nr, a, want_m, want_e, X, OBS, tmp)
        got_m, got_e = M.copy(), E.copy()
        bad = fastpath._sum_in(
            n, g, nr, a.ch_ptr, a.ch_idx, a.ch_w, got_m, got_e, 1, np.zeros(S, np.int64), SH[gofs[g] :], GE, acc
        )
        assert bad or (np.array_equal(got_m[n], want_m[n]) and np.array_equal(got_e[n], want_e[n]))
    for n in np.flatnonzero(pgrp >= 0):
        want_m, want_e = DM.copy(), DE.copy()
        fastpath._outside_lanes(n, nr, a, M, E, want_m, want_e, tmp)
        got_m, got_e = DM.copy(), DE.copy()
        miss = fastpath._group_out(
            n, pgrp[n], nr, a.par_ptr, a.par_node, a.par_w, got_m, got_e, 1, np.zeros(S, np.int64), DP, GD, acc, top
        )
        if not miss:
            checked += 1
            assert np.array_equal(got_m[n], want_m[n]) and np.array_equal(got_e[n], want_e[n])
    assert checked > 0
