"""The batched E-step and the tree reduction against plain references: loops over states, argsort, sequential sums."""

import warnings

import numpy as np
import pytest

from sparsecoding import BSC, DSC, MCA, MMCA, TSC
from sparsecoding.em import CollapseWarning, collapse_message, truncation_message
from sparsecoding.models.mca import rho_of_T
from sparsecoding.parallel import SerialComm, _tree_sum, chunked_sum, rank_chunks, tree_cover
from sparsecoding.truncation import select_candidates


@pytest.mark.parametrize(
    "cls, kw", [(BSC, {}), (TSC, {}), (DSC, {"values": (0, 1, 2), "prior": np.array([0.7, 0.2, 0.1])})]
)
def test_statistics_equal_explicit_sums_over_the_truncated_states(cls, kw):
    rng = np.random.default_rng(0)
    H, D, n = 7, 5, 40
    m = cls.from_params(W=rng.standard_normal((D, H)), pi=0.3, sigma=0.8, H=H, Hprime=5, gamma=3, **kw)
    params = m.params_
    Y = rng.standard_normal((n, D))
    et = m.engine()
    blocks = et.blocks(params, Y)
    post = et.posterior(blocks, 1.3)
    stats = m.new_stats(params, D)
    m.accumulate(params, Y, blocks, post, stats)
    # float64 reference: every state of every point, one at a time
    SS, YS = np.zeros((H, H)), np.zeros((D, H))
    W, s2 = params["W"], float(params["sigma"]) ** 2
    for b, p in zip(blocks, post):
        for i in range(n):
            for j, v in enumerate(b.vals):
                s = np.zeros(H)
                s[np.arange(H) if b.idx is None else b.idx[i]] = v
                SS += p[i, j] * np.outer(s, s)
                YS += p[i, j] * np.outer(Y[i], s)
                ll = -0.5 * D * np.log(2 * np.pi * s2) - np.sum((Y[i] - W @ s) ** 2) / (2 * s2)
                assert abs(b.logjoint[i, j] - ll - et._log_prior(params, v[None])[0]) < 1e-9
    np.testing.assert_allclose(stats["SS"], SS, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats["YS"], YS, rtol=1e-12, atol=1e-12)


def test_select_candidates_matches_a_stable_sort():
    rng = np.random.default_rng(1)
    score = rng.integers(0, 4, size=(300, 12)).astype(float)  # many ties
    score[::7, 3] = np.nan  # NaN counts as the lowest score
    for k in (1, 5, 11):
        ref = np.sort(np.argsort(-np.nan_to_num(score, nan=-np.inf), axis=1, kind="stable")[:, :k], axis=1)
        np.testing.assert_array_equal(select_candidates(score, k), ref)


class _SimulatedComm:
    """Rank ``rank`` of ``size``, whose Allreduce returns the table all ranks filled."""

    def __init__(self, size, rank, table):
        self.size, self.rank, self.table = size, rank, table

    def allreduce_sum(self, buf):
        assert buf.shape == self.table.shape
        return self.table


@pytest.mark.parametrize("C", [1, 2, 5, 13, 196])
def test_tree_reduction_gives_the_same_bits_on_any_rank_count(C):
    rng = np.random.default_rng(C)
    vals = {c: rng.standard_normal(3) * 10.0 ** rng.integers(-8, 8) for c in range(C)}
    serial = chunked_sum(vals, C, 3, SerialComm())
    np.testing.assert_allclose(serial, np.sum(np.stack(list(vals.values())), axis=0), rtol=1e-12)
    for size in (2, 3, 4, 7):
        cover = tree_cover(C, size)
        assert len(cover) <= size * (2 * max(1, C).bit_length() + 1)
        table = np.zeros((len(cover), 3))
        for r in range(size):  # what each rank contributes: the nodes inside its own chunks
            mine = rank_chunks(C, 1, r, size)
            for row, (lo, hi) in enumerate(cover):
                if mine.start <= lo and hi <= mine.stop:
                    table[row] += _tree_sum(lo, hi, lambda c: vals[c])
        for r in range(size):
            local = {c: vals[c] for c in rank_chunks(C, 1, r, size)}
            assert chunked_sum(local, C, 3, _SimulatedComm(size, r, table)).tobytes() == serial.tobytes()


def test_collapse_and_truncation_checks():
    W = np.ones((4, 32))
    assert collapse_message({"W": W, "pi": np.array(0.1), "sigma": np.array(0.5)}, np.ones(4)) is None
    assert "pi collapsed" in collapse_message({"W": W, "pi": np.array(0.003), "sigma": np.array(0.5)}, np.ones(4))
    assert "sigma collapsed" in collapse_message({"W": W, "pi": np.array(0.1), "sigma": np.array(0.99)}, np.ones(4))
    assert truncation_message({"W": W, "pi": np.array(0.02)}, 3) is None  # P(|s| <= 3) = 0.996
    assert "raise gamma" in truncation_message({"W": W, "pi": np.array(0.2)}, 3)  # P(|s| <= 3) = 0.04
    # pure noise: the best dictionary explains nothing, and fit says so
    Y = np.random.default_rng(0).standard_normal((400, 9))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BSC(H=4, Hprime=4, gamma=2, steps=8, random_state=0).fit(Y)
    kinds = {w.category for w in caught}
    assert CollapseWarning in kinds


@pytest.mark.parametrize("cls", [MCA, MMCA])
def test_max_superposition_statistics_equal_explicit_sums(cls):
    rng = np.random.default_rng(2)
    H, D, n, T = 6, 5, 30, 1.7
    W = np.abs(rng.standard_normal((D, H))) if cls is MCA else rng.standard_normal((D, H))
    m = cls.from_params(W=W, pi=0.3, sigma=0.8, H=H, Hprime=4, gamma=3)
    Y = rng.standard_normal((n, D)) + 1.0
    et = m.engine()
    blocks = et.blocks(m.params_, Y)
    post = et.posterior(blocks, T)
    stats = m.new_stats(m.params_, D)
    m.accumulate(m.params_, Y, blocks, post, stats, T)
    rho = rho_of_T(T)
    A, AY, err = np.zeros((H, D)), np.zeros((H, D)), 0.0
    for b, p in zip(blocks, post):
        for i in range(n):
            for j, v in enumerate(b.vals):
                s = np.zeros(H)
                s[np.arange(H) if b.idx is None else b.idx[i]] = v
                contrib = s[:, None] * W.T  # (H, D)
                pick = np.argmax(np.abs(contrib) if cls is MMCA else contrib, axis=0)
                Wbar = np.where(s.any(), contrib[pick, np.arange(D)], 0.0)
                if cls is MCA:
                    Wbar = np.maximum(Wbar, 0.0)
                err += p[i, j] * np.sum((Y[i] - Wbar) ** 2)
                mag = np.abs(W.T)
                norm = np.sum(s[:, None] * mag**rho, axis=0) ** (1 / rho)  # the rho-norm Wbar^rho
                with np.errstate(divide="ignore", invalid="ignore"):
                    a = np.where(norm > 0, s[:, None] * (mag / norm) ** (rho - 1), 0.0)
                A += p[i, j] * a
                AY += p[i, j] * a * Y[i]
    assert abs(float(stats["err"]) - err) < 1e-9 * err
    np.testing.assert_allclose(stats["A"], A, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(stats["AY"], AY, rtol=1e-9, atol=1e-11)
