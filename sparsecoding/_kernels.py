"""numba kernels for the E-step where they beat numpy (compiled once, cached on disk)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["active_lists", "superposition_sq_err"]


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
def superposition_sq_err(Y, obs, Wt, idx, act, val, magnitude):
    """``sum_d obs_d (y_d - Wbar_d(s))^2`` for every point and state, with a max superposition.

    ``Wbar_d(s)`` is the largest ``s_h W_hd`` (``magnitude`` False, MCA) or the
    ``s_h W_hd`` of largest magnitude (True, MMCA; ties to the lower slot),
    over the state's active slots and the value 0 of the inactive causes.
    """
    n, D = Y.shape
    M, g = act.shape
    out = np.empty((n, M))
    for i in range(n):
        for m in range(M):
            tot = 0.0
            for d in range(D):
                best = 0.0
                for a in range(g):
                    j = act[m, a]
                    if j < 0:
                        break
                    x = val[m, a] * Wt[idx[i, j], d]
                    if magnitude:
                        if abs(x) > abs(best):
                            best = x
                    elif x > best:
                        best = x
                r = Y[i, d] - best
                tot += obs[i, d] * r * r
            out[i, m] = tot
    return out


@njit(cache=True)
def linear_sq_err(b, yy, G, idx, act, val):
    """``||y - W s||^2 = y.y - 2 s.b + s^T G s`` over each state's active slots: (n, M)."""
    n = b.shape[0]
    M, g = act.shape
    out = np.empty((n, M))
    for i in range(n):
        for m in range(M):
            lin = 0.0
            quad = 0.0
            for a in range(g):
                ja = act[m, a]
                if ja < 0:
                    break
                ha = idx[i, ja]
                va = val[m, a]
                lin += va * b[i, ha]
                quad += va * va * G[ha, ha]
                for c in range(a):
                    hc = idx[i, act[m, c]]
                    quad += 2.0 * va * val[m, c] * G[ha, hc]
            out[i, m] = yy[i] - 2.0 * lin + quad
    return out


@njit(cache=True)
def linear_moments(post, idx, act, val, H):
    """Posterior moments over a block: ``<s>`` per point (n, H) and ``sum_n <s s^T>`` (H, H)."""
    n, M = post.shape
    g = act.shape[1]
    Es = np.zeros((n, H))
    low = np.zeros((H, H))  # pairs a > c, mirrored at the end
    diag = np.zeros(H)
    for i in range(n):
        for m in range(M):
            w = post[i, m]
            if w == 0.0:
                continue
            for a in range(g):
                ja = act[m, a]
                if ja < 0:
                    break
                ha = idx[i, ja]
                wa = w * val[m, a]
                Es[i, ha] += wa
                diag[ha] += wa * val[m, a]
                for c in range(a):
                    low[ha, idx[i, act[m, c]]] += wa * val[m, c]
    SS = low + low.T
    for h in range(H):
        SS[h, h] += diag[h]
    return Es, SS
