"""numba kernels for MCA and MMCA, whose max superposition no BLAS call computes (compiled once, cached on disk)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["POSTERIOR_SKIP", "active_lists", "superposition_stats", "superposition_sq_err"]

#: states whose posterior probability is below this add nothing to the max-superposition statistics
#: (their share of any sum is under 1e-12 per state); the rho-norm costs a power per state and pixel
POSTERIOR_SKIP = 1e-12


_ACTIVE_CACHE: dict = {}


def active_lists(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per template row, the active slots (padded with -1) and their values (cached per template)."""
    key = (vals.shape, hash(vals.tobytes()))
    hit = _ACTIVE_CACHE.get(key)
    if hit is not None:
        return hit
    if len(_ACTIVE_CACHE) > 64:
        _ACTIVE_CACHE.clear()
    _ACTIVE_CACHE[key] = out = _active_lists(vals)
    return out


def _active_lists(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    M, k = vals.shape
    g = max(1, int((vals != 0).sum(axis=1).max(initial=0)))
    act = np.full((M, g), -1, dtype=np.int64)
    val = np.zeros((M, g))
    order = np.argsort(vals == 0, axis=1, kind="stable")[:, :g]  # active slots first, in slot order
    nz = np.take_along_axis(vals, order, axis=1) != 0
    act[nz] = order[nz]
    val[nz] = np.take_along_axis(vals, order, axis=1)[nz]
    return act, val


@njit(cache=True, fastmath=False)
def _superpose(best, Wt, h, v, magnitude):
    """``best_d`` becomes the larger (or, with ``magnitude``, the larger in magnitude) of itself and ``v W_hd``."""
    for d in range(best.shape[0]):  # contiguous in d: the compiler vectorises it
        x = v * Wt[h, d]
        if magnitude:
            if abs(x) > abs(best[d]):
                best[d] = x
        elif x > best[d]:
            best[d] = x


@njit(cache=True, fastmath=False)
def superposition_sq_err(Y, obs, Wt, idx, act, val, magnitude):
    """``sum_d obs_d (y_d - Wbar_d(s))^2`` for every point and state, with a max superposition.

    ``Wbar_d(s)`` is the largest ``s_h W_hd`` (``magnitude`` False, MCA) or the
    ``s_h W_hd`` of largest magnitude (True, MMCA; ties to the lower slot),
    over the state's active slots and the value 0 of the inactive causes.
    """
    n, D = Y.shape
    M, g = act.shape
    out = np.empty((n, M))
    best = np.empty(D)
    for i in range(n):
        for m in range(M):
            best[:] = 0.0
            for a in range(g):
                j = act[m, a]
                if j < 0:
                    break
                _superpose(best, Wt, idx[i, j], val[m, a], magnitude)
            tot = 0.0
            for d in range(D):
                r = Y[i, d] - best[d]
                tot += obs[i, d] * r * r
            out[i, m] = tot
    return out


@njit(cache=True, fastmath=False)
def superposition_stats(Y, Wt, Wp, Wp1, idx, act, val, post, expo, magnitude, A, AY):
    """The max-superposition M-step statistics of one block, added into ``A`` and ``AY`` (H, D); returns the error.

    For every point ``i`` and state ``m`` with posterior ``w >= POSTERIOR_SKIP``: the squared error
    ``sum_d (y_d - Wbar_d)^2`` (as :func:`superposition_sq_err`) weighted by ``w``, and the rho-norm
    weights ``A_hd = s_h Wp1_hd (sum_h' s_h' Wp_h'd)^expo`` weighted by ``w`` (into ``A``) and by
    ``w y_d`` (into ``AY``), with ``Wp = mag^rho``, ``Wp1 = mag^(rho-1)``, ``expo = -(rho-1)/rho``
    and ``mag = |W|`` scaled per pixel. A state with one active cause of value 1 has ``A_hd = 1``
    where ``mag_hd > 0``: no power to take.
    """
    n, D = Y.shape
    M, g = act.shape
    err = 0.0
    best = np.empty(D)
    total = np.empty(D)
    for i in range(n):
        for m in range(M):
            w = post[i, m]
            if w < POSTERIOR_SKIP:
                continue
            best[:] = 0.0
            total[:] = 0.0
            k = 0
            for a in range(g):
                j = act[m, a]
                if j < 0:
                    break
                h = idx[i, j]
                _superpose(best, Wt, h, val[m, a], magnitude)
                for d in range(D):
                    total[d] += val[m, a] * Wp[h, d]
                k += 1
            tot_err = 0.0
            for d in range(D):
                r = Y[i, d] - best[d]
                tot_err += r * r
            err += w * tot_err
            if k == 1 and val[m, 0] == 1.0:
                h = idx[i, act[m, 0]]
                for d in range(D):
                    if total[d] > 0.0:
                        A[h, d] += w
                        AY[h, d] += w * Y[i, d]
                continue
            for d in range(D):  # from here on total holds w * total^expo
                total[d] = w * total[d] ** expo if total[d] > 0.0 else 0.0
            for a in range(k):
                h = idx[i, act[m, a]]
                v = val[m, a]
                for d in range(D):
                    c = total[d] * v * Wp1[h, d]
                    A[h, d] += c
                    AY[h, d] += c * Y[i, d]
    return err
