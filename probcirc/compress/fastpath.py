"""The incremental engine's bookkeeping without walks over whole ancestor lists; same node formulas, same bytes.

:func:`kernels._step_row` (mode ``LAZY``) visits every ancestor of a
variable's leaves at every step, and :func:`kernels._observe_row` marks all
of them stale: O(depth · k) per pixel, most of the time of a step. Here:

- **Inside values** carry the step at which they were computed (``tin``). A
  node whose scope is a contiguous run ``lo..hi`` of coding positions (every
  node of an HCLT in depth-first order) is stale exactly when a position in
  ``[tin, now - 1]`` lies in ``lo..hi``: two comparisons, no marking. Only
  the other nodes (``anc_nc``: ancestors with scattered scopes) are marked
  stale on observing, as before.
- **Derivatives** to recompute are found by walking up from the variable's
  leaves through invalid nodes only (validity as in ``LAZY``); a valid node's
  derivative is still exact, so the walk never needs to pass it.

Every value is a pure function of the evidence in (inside) or outside
(derivative) a node's scope, computed by the same node functions from the
same inputs, so when a node is recomputed never changes its bits: the PMFs
are those of :class:`~probcirc.compress.engine.PmfEngine` exactly
(``tests/probcirc/test_codec_speed.py`` checks them).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import rangecoder
from .kernels import LAZY, PROD, SUM, _inside_node, _observe_row, _outside_node, _pmf, _sort, _step_row, quantize


def nc_ancestors(program) -> tuple[np.ndarray, np.ndarray]:
    """CSR of the ancestors of each variable's leaves whose scope is not contiguous (none for an HCLT)."""
    keep = ~program.contig[program.anc]
    counts = np.add.reduceat(keep, program.anc_ptr[:-1]) if len(program.anc) else np.zeros(program.num_vars, int)
    counts = np.where(np.diff(program.anc_ptr) > 0, counts, 0)
    ptr = np.zeros(program.num_vars + 1, dtype=np.int64)
    ptr[1:] = np.cumsum(counts)
    return ptr, np.ascontiguousarray(program.anc[keep], dtype=np.int64)


@njit(cache=True, inline="always")
def _stale(c, now, contig, lo, hi, ok, tin):
    if contig[c]:
        return max(tin[c], lo[c]) <= min(now - 1, hi[c])
    return ok[c] == 0


@njit(cache=True)
def _ensure(n, now, a, M, E, x, obs, ok, tin, stack, pos):
    """Recompute the stale inside values under ``n`` (``n`` itself stale), children first.

    A depth-first walk through stale nodes only, each computed as the walk leaves it
    (post-order: its stale children are done by then, the others are fresh). A node is
    marked when first reached, so it is computed once. Linear in the nodes recomputed:
    sorting them by slot (topological too) cost quadratic time on the whole subtrees a
    depth-first coding order leaves stale (most of the encode time, #17).
    """
    kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w = a[:7]
    lo, hi, contig = a.lo, a.hi, a.contig
    if contig[n]:
        tin[n] = now  # collected: no longer stale, so never collected twice
    else:
        ok[n] = 2
    stack[0] = n
    pos[0] = ch_ptr[n]
    top = 1
    while top > 0:
        u = stack[top - 1]
        j = pos[top - 1]
        end = ch_ptr[u + 1] if kind[u] == PROD or kind[u] == SUM else j
        c = -1
        while j < end and c < 0:
            if _stale(ch_idx[j], now, contig, lo, hi, ok, tin):
                c = ch_idx[j]
                if contig[c]:
                    tin[c] = now
                else:
                    ok[c] = 2
            j += 1
        if c >= 0:
            pos[top - 1] = j
            stack[top] = c
            pos[top] = ch_ptr[c]
            top += 1
        else:
            top -= 1
            _inside_node(u, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs)
            ok[u] = 1


@njit(cache=True)
def step_row(i, now, precision, a, state, work, stamp, freq):
    """Quantised ``P(X_i | x_observed)`` of one row into ``freq``; ``now``: i's position; ``stamp``: new per call."""
    M, E, DM, DE, ok, sout, tin, x, obs = state
    tm, te, stack, todo, lst, vis, pbuf = work
    kind, ch_ptr, ch_idx = a.kind, a.ch_ptr, a.ch_idx
    par_ptr, par_node, par_edge, par_w = a.par_ptr, a.par_node, a.par_edge, a.par_w
    lo, hi, contig = a.lo, a.hi, a.contig
    root = kind.shape[0] - 1
    # the invalid derivatives: up from X_i's leaves, through invalid nodes only
    top, cnt = 0, 0
    for j in range(a.var_ptr[i], a.var_ptr[i + 1]):
        stack[top] = a.var_leaf[j]
        vis[a.var_leaf[j]] = stamp
        top += 1
    while top > 0:
        top -= 1
        n = stack[top]
        if sout[n] >= now or (contig[n] and sout[n] >= lo[n] and now - 1 <= hi[n]):
            continue
        lst[cnt] = n
        cnt += 1
        for jp in range(par_ptr[n], par_ptr[n + 1]):
            q = par_node[jp]
            if vis[q] != stamp:
                vis[q] = stamp
                stack[top] = q
                top += 1
    _sort(lst, cnt)
    for t in range(cnt - 1, -1, -1):  # parents first
        n = lst[t]
        for jp in range(par_ptr[n], par_ptr[n + 1]):
            q = par_node[jp]
            if kind[q] == PROD:
                for jj in range(ch_ptr[q], ch_ptr[q + 1]):
                    c = ch_idx[jj]
                    if c != n and _stale(c, now, contig, lo, hi, ok, tin):
                        _ensure(c, now, a, M, E, x, obs, ok, tin, stack, todo)
        _outside_node(n, root, kind, ch_ptr, ch_idx, par_w, par_ptr, par_node, par_edge, M, E, DM, DE, tm, te)
        sout[n] = now
    _pmf(i, a.var_ptr, a.var_leaf, a.leaf_row, a.table, DM, DE, pbuf)
    quantize(pbuf, precision, freq)


@njit(cache=True)
def observe_row(i, value, nc_ptr, nc, ok, x, obs):
    """X_i = value; only the ancestors with scattered scopes are marked stale (the others go by ``tin``)."""
    x[i] = value
    obs[i] = True
    for j in range(nc_ptr[i], nc_ptr[i + 1]):
        ok[nc[j]] = 0


@njit(cache=True, parallel=True)
def code_blocks(
    encode, a, nc_ptr, nc, order, mode, precision, M0, E0, X, VALID, blk_ptr, words, word_ptr, nwords, chunks
):
    """Range-code whole blocks (each: rows ``blk_ptr[k]:blk_ptr[k+1]`` of ``X``, one coder) in one compiled call.

    Per block, for each variable in ``order`` and each of its rows in turn (the rows where
    ``VALID``): the row's PMF (the engine's node functions), then the range coder
    (:mod:`~probcirc.compress.rangecoder`: constriction's arithmetic), then the observation
    (mode ``LAZY``: :func:`step_row` and :func:`observe_row`). ``encode``: ``X`` is read and
    block k's words are written from ``word_ptr[k]`` (room for one word per symbol and 4
    more), their count into ``nwords[k]``; decoding: ``X``'s rows are filled from those
    words and ``nwords[k]`` is 1 where the words are damaged. Blocks are independent, so
    ``chunks`` workers take every ``chunks``-th block each; a block's bytes never depend on
    the others or on the threads. ``M0``/``E0``: the inside values with nothing observed
    (:func:`~probcirc.compress.kernels.init_state`, one row); ``nc_ptr``/``nc``:
    :func:`nc_ancestors`.
    """
    S = a.kind.shape[0]
    D = X.shape[1]
    V = a.table.shape[1]
    nb = blk_ptr.shape[0] - 1
    rows = 1
    for k in range(nb):
        rows = max(rows, blk_ptr[k + 1] - blk_ptr[k])
    max_par = 1
    for n in range(S):
        max_par = max(max_par, a.par_ptr[n + 1] - a.par_ptr[n])
    for c in prange(chunks):
        M = np.empty((rows, S))
        E = np.empty((rows, S), dtype=np.int64)
        DM = np.zeros((rows, S))
        DE = np.zeros((rows, S), dtype=np.int64)
        OK = np.empty((rows, S), dtype=np.int8)
        SOUT = np.empty((rows, S), dtype=np.int64)
        TIN = np.empty((rows, S), dtype=np.int64)
        XS = np.empty((rows, D), dtype=np.int64)
        OBS = np.empty((rows, D), dtype=np.bool_)
        stack = np.empty(S + 1, dtype=np.int64)
        todo = np.empty(S + 1, dtype=np.int64)
        lst = np.empty(S + 1, dtype=np.int64)
        vis = np.full(S, -1, dtype=np.int64)
        stamp = 0
        tm = np.empty(max_par, dtype=np.float64)
        te = np.empty(max_par, dtype=np.int64)
        pbuf = np.empty(V, dtype=np.float64)
        freq = np.empty(V, dtype=np.int64)
        st = np.zeros(6, dtype=np.uint64)
        for k in range(c, nb, chunks):
            r0, nr = blk_ptr[k], blk_ptr[k + 1] - blk_ptr[k]
            w = words[word_ptr[k] : word_ptr[k + 1]]
            for r in range(nr):
                M[r] = M0
                E[r] = E0
                OK[r] = 1
                SOUT[r] = -1
                TIN[r] = 0
                OBS[r] = False
                if encode:
                    XS[r] = X[r0 + r]
                else:
                    XS[r] = 0
            rangecoder.reset(st, w, encode)
            for t in range(D):
                i = order[t]
                for r in range(nr):
                    if not VALID[r0 + r, i]:
                        continue
                    if mode == LAZY:
                        state = (M[r], E[r], DM[r], DE[r], OK[r], SOUT[r], TIN[r], XS[r], OBS[r])
                        step_row(i, t, precision, a, state, (tm, te, stack, todo, lst, vis, pbuf), stamp, freq)
                        stamp += 1
                    else:
                        state = (M[r], E[r], DM[r], DE[r], OK[r], SOUT[r], XS[r], OBS[r])
                        _step_row(i, t, mode, precision, a, state, tm, te, stack, pbuf, freq)
                    if encode:
                        sym = XS[r, i]
                        cum = np.int64(0)
                        for v in range(sym):
                            cum += freq[v]
                        rangecoder.encode(st, w, cum, freq[sym], precision)
                    else:
                        sym = rangecoder.decode(st, w, freq, precision)
                        if sym < 0:
                            sym = 0  # damaged: finish the block with zeros, reported below
                    if mode == LAZY:
                        observe_row(i, sym, nc_ptr, nc, OK[r], XS[r], OBS[r])
                    else:
                        _observe_row(i, sym, mode, a, M[r], E[r], OK[r], XS[r], OBS[r])
            if encode:
                nwords[k] = rangecoder.seal(st, w)
            else:
                nwords[k] = st[rangecoder.FAILED]
                for r in range(nr):
                    X[r0 + r] = XS[r]
