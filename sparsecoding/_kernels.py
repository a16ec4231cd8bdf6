"""numba kernels for the E-step where they beat numpy (compiled once, cached on disk)."""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["active_lists", "superposition_sq_err"]


def active_lists(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per template row, the active slots (padded with -1) and their values."""
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
