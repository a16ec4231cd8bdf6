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
from .kernels import (
    LAZY,
    LEAF,
    PROD,
    SUM,
    ZERO_E,
    _norm,
    _observe_row,
    _shift,
    _sort,
    _step_row,
    quantize,
)

#: rows a worker codes in lockstep (more share the bookkeeping and the table reads; fewer keep the state in cache)
LANES = 8


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
def _collect(n, now, a, ok, tin, stack, pos, todo, cnt):
    """Append to ``todo[cnt:]`` the stale nodes under ``n`` (``n`` itself stale), children first; return the count.

    A depth-first walk through stale nodes only, each appended as the walk leaves it
    (post-order: its stale children are listed by then, the others are fresh), so the
    list is topological. A node is marked when first reached, so it is listed once.
    Linear in the nodes listed: sorting them by slot cost quadratic time on the whole
    subtrees a depth-first coding order leaves stale (#17).
    """
    kind, ch_ptr, ch_idx = a.kind, a.ch_ptr, a.ch_idx
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
            todo[cnt] = u
            ok[u] = 1
            cnt += 1
    return cnt


@njit(cache=True)
def plan(i, now, a, sched, work, stamp):
    """What variable ``i``'s PMF needs recomputed, the same for every lane: ``(n_inside, n_outside)``.

    ``todo[:n_inside]``: stale inside values, in an order where children come first;
    ``lst[:n_outside]``: the invalid derivatives, ascending (computed from the end: parents
    first). Invalid derivatives are found up from X_i's leaves, through invalid nodes only.
    ``sched`` = (ok, sout, tin) is the lanes' shared bookkeeping; ``stamp``: new per call.
    """
    ok, sout, tin = sched
    stack, pos, todo, lst, vis = work
    kind, ch_ptr, ch_idx = a.kind, a.ch_ptr, a.ch_idx
    par_ptr, par_node = a.par_ptr, a.par_node
    lo, hi, contig = a.lo, a.hi, a.contig
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
    nin = 0
    for t in range(cnt - 1, -1, -1):  # the siblings a derivative multiplies must be fresh
        n = lst[t]
        for jp in range(par_ptr[n], par_ptr[n + 1]):
            q = par_node[jp]
            if kind[q] == PROD:
                for jj in range(ch_ptr[q], ch_ptr[q + 1]):
                    c = ch_idx[jj]
                    if c != n and _stale(c, now, contig, lo, hi, ok, tin):
                        nin = _collect(c, now, a, ok, tin, stack, pos, todo, nin)
        sout[n] = now
    return nin, cnt


@njit(cache=True)
def run_plan(nr, a, todo, nin, lst, nout, M, E, DM, DE, X, OBS, tmp):
    """Lanes ``0..nr-1``: the inside values ``todo[:nin]``, then the derivatives ``lst[:nout]`` (parents first).

    State is lane-minor (``M[n, r]``): each node's index lists are read once for all lanes, and
    the lanes' independent arithmetic overlaps. Per lane, every value goes through the
    operations of :func:`~probcirc.compress.kernels._inside_node` and
    :func:`~probcirc.compress.kernels._outside_node` in their order, so its bits are theirs.
    """
    for t in range(nin):
        _inside_lanes(todo[t], nr, a, M, E, X, OBS, tmp)
    for t in range(nout - 1, -1, -1):
        _outside_lanes(lst[t], nr, a, M, E, DM, DE, tmp)


@njit(cache=True)
def _inside_lanes(n, nr, a, M, E, X, OBS, tmp):
    kind, ch_ptr, ch_idx, ch_w = a.kind, a.ch_ptr, a.ch_idx, a.ch_w
    pm, pe = tmp[0][0], tmp[1][0]
    k = kind[n]
    if k == LEAF:
        v, row = a.leaf_var[n], a.leaf_row[n]
        for r in range(nr):
            if OBS[r, v]:
                M[n, r], E[n, r] = _norm(a.table[row, X[r, v]], 0)
            else:
                M[n, r], E[n, r] = 0.5, 1
        return
    if k == PROD:
        for r in range(nr):
            pm[r], pe[r] = 0.5, 1
        for j in range(ch_ptr[n], ch_ptr[n + 1]):
            c = ch_idx[j]
            for r in range(nr):
                if pm[r] != 0.0:  # a zero child ends the lane's product, as the scalar loop's break
                    if M[c, r] == 0.0:
                        pm[r], pe[r] = 0.0, ZERO_E
                    else:
                        pm[r], pe[r] = _norm(pm[r] * M[c, r], pe[r] + E[c, r])
    elif k == SUM:
        for r in range(nr):
            pe[r] = ZERO_E
        for j in range(ch_ptr[n], ch_ptr[n + 1]):
            c = ch_idx[j]
            for r in range(nr):
                if M[c, r] != 0.0 and E[c, r] > pe[r]:
                    pe[r] = E[c, r]
        for r in range(nr):
            pm[r] = 0.0
        for j in range(ch_ptr[n], ch_ptr[n + 1]):
            c = ch_idx[j]
            w = ch_w[j]
            for r in range(nr):
                if M[c, r] != 0.0:
                    pm[r] = pm[r] + w * _shift(M[c, r], E[c, r] - pe[r])
        for r in range(nr):
            pm[r], pe[r] = (0.0, ZERO_E) if pe[r] == ZERO_E else _norm(pm[r], pe[r])
    else:
        for r in range(nr):
            pm[r], pe[r] = 0.5, 1
    for r in range(nr):
        M[n, r] = pm[r]
        E[n, r] = pe[r]


@njit(cache=True)
def _outside_lanes(n, nr, a, M, E, DM, DE, tmp):
    """d root / d n for every lane, summed over n's parents in ascending order."""
    kind, ch_ptr, ch_idx = a.kind, a.ch_ptr, a.ch_idx
    TM, TE = tmp
    if n == kind.shape[0] - 1:
        for r in range(nr):
            DM[n, r], DE[n, r] = 0.5, 1
        return
    j0, j1 = a.par_ptr[n], a.par_ptr[n + 1]
    for j in range(j0, j1):
        q = a.par_node[j]
        pm, pe = TM[j - j0 + 1], TE[j - j0 + 1]  # row 0 stays free for the sum below
        if kind[q] == SUM:
            w = a.par_w[j]
            for r in range(nr):
                pm[r], pe[r] = (0.0, ZERO_E) if DM[q, r] == 0.0 else _norm(DM[q, r] * w, DE[q, r])
            continue
        for r in range(nr):
            pm[r], pe[r] = (0.0, ZERO_E) if DM[q, r] == 0.0 else (DM[q, r], DE[q, r])
        edge = a.par_edge[j]
        for jj in range(ch_ptr[q], ch_ptr[q + 1]):
            if jj != edge:
                c = ch_idx[jj]
                for r in range(nr):
                    if pm[r] != 0.0:
                        if M[c, r] == 0.0:
                            pm[r], pe[r] = 0.0, ZERO_E
                        else:
                            pm[r], pe[r] = _norm(pm[r] * M[c, r], pe[r] + E[c, r])
    cnt = j1 - j0
    for r in range(nr):
        emax = ZERO_E
        for t in range(1, cnt + 1):
            if TM[t, r] != 0.0 and TE[t, r] > emax:
                emax = TE[t, r]
        if emax == ZERO_E:
            DM[n, r], DE[n, r] = 0.0, ZERO_E
            continue
        acc = 0.0
        for t in range(1, cnt + 1):
            if TM[t, r] != 0.0:
                acc = acc + _shift(TM[t, r], TE[t, r] - emax)
        DM[n, r], DE[n, r] = _norm(acc, emax)


@njit(cache=True)
def pmf_lanes(i, lanes, nl, a, DM, DE, emax, OUT):
    """:func:`~probcirc.compress.kernels._pmf` for the lanes ``lanes[:nl]`` into ``OUT[r]``: the same sums in the
    same order per lane, with each leaf's table row read once for all lanes (it is the memory traffic)."""
    var_ptr, var_leaf, leaf_row, table = a.var_ptr, a.var_leaf, a.leaf_row, a.table
    V = OUT.shape[1]
    for t in range(nl):
        r = lanes[t]
        em = ZERO_E
        for j in range(var_ptr[i], var_ptr[i + 1]):
            l = var_leaf[j]
            if DM[l, r] != 0.0 and DE[l, r] > em:
                em = DE[l, r]
        emax[r] = em
        for v in range(V):
            OUT[r, v] = 0.0
    for j in range(var_ptr[i], var_ptr[i + 1]):
        l = var_leaf[j]
        row = table[leaf_row[l]]
        for t in range(nl):
            r = lanes[t]
            if emax[r] != ZERO_E and DM[l, r] != 0.0:
                _axpy(_shift(DM[l, r], DE[l, r] - emax[r]), row, OUT[r])


@njit(cache=True)
def _axpy(c, x, y):
    for v in range(y.shape[0]):
        y[v] = y[v] + c * x[v]


@njit(cache=True, parallel=True)
def code_blocks(
    encode, a, nc_ptr, nc, order, mode, precision, M0, E0, X, VALID, blk_ptr, words, word_ptr, nwords, chunks, lanes
):
    """Range-code whole blocks (each: rows ``blk_ptr[k]:blk_ptr[k+1]`` of ``X``, one coder) in one compiled call.

    Per block, for each variable in ``order`` and each of its rows in turn (the rows where
    ``VALID``): the row's PMF (the engine's node functions), then the range coder
    (:mod:`~probcirc.compress.rangecoder`: constriction's arithmetic), then the observation.
    ``encode``: ``X`` is read and block k's words are written from ``word_ptr[k]`` (room for
    one word per symbol and 4 more), their count into ``nwords[k]``; decoding: ``X``'s rows
    are filled from those words and ``nwords[k]`` is 1 where the words are damaged. Blocks
    are independent, so ``chunks`` workers take every ``chunks``-th block each; a block's
    bytes never depend on the others or on the threads. ``M0``/``E0``: the inside values with
    nothing observed (:func:`~probcirc.compress.kernels.init_state`, one row);
    ``nc_ptr``/``nc``: :func:`nc_ancestors`.

    A worker codes its blocks in groups of at least ``lanes`` rows (a block's rows never
    split), one lane per row, in lockstep: in mode ``LAZY`` one :func:`plan` per variable
    serves every lane (it recomputes for all lanes what any lane's observations made stale:
    recomputing a fresh value gives the same bits), and each leaf's table row is read once
    for all lanes (:func:`pmf_lanes`). Each block keeps its own coder and order, so grouping
    never changes its bytes.
    """
    S = a.kind.shape[0]
    nb = blk_ptr.shape[0] - 1
    cap = max(1, lanes)
    for k in range(nb):
        cap = max(cap, blk_ptr[k + 1] - blk_ptr[k])
    max_par = 1
    for n in range(S):
        max_par = max(max_par, a.par_ptr[n + 1] - a.par_ptr[n])
    for c in prange(chunks):
        _worker(
            c,
            encode,
            a,
            nc_ptr,
            nc,
            order,
            mode,
            precision,
            M0,
            E0,
            X,
            VALID,
            blk_ptr,
            words,
            word_ptr,
            nwords,
            chunks,
            cap,
            max_par,
        )


@njit(cache=True)
def _worker(
    c,
    encode,
    a,
    nc_ptr,
    nc,
    order,
    mode,
    precision,
    M0,
    E0,
    X,
    VALID,
    blk_ptr,
    words,
    word_ptr,
    nwords,
    chunks,
    cap,
    max_par,
):
    """Worker ``c`` of :func:`code_blocks`: blocks c, c + chunks, ..., in groups of at most ``cap`` rows."""
    S = a.kind.shape[0]
    D = X.shape[1]
    V = a.table.shape[1]
    nb = blk_ptr.shape[0] - 1
    M = np.empty((S, cap))  # lane-minor: a node's values for all lanes side by side
    E = np.empty((S, cap), dtype=np.int64)
    DM = np.zeros((S, cap))
    DE = np.zeros((S, cap), dtype=np.int64)
    OK = np.empty((cap, S), dtype=np.int8)
    SOUT = np.empty((cap, S), dtype=np.int64)
    XS = np.empty((cap, D), dtype=np.int64)
    OBS = np.empty((cap, D), dtype=np.bool_)
    tin = np.empty(S, dtype=np.int64)
    stack = np.empty(S + 1, dtype=np.int64)
    pos = np.empty(S + 1, dtype=np.int64)
    todo = np.empty(S + 1, dtype=np.int64)
    lst = np.empty(S + 1, dtype=np.int64)
    vis = np.full(S, -1, dtype=np.int64)
    stamp = 0
    tm = np.empty(max_par, dtype=np.float64)
    te = np.empty(max_par, dtype=np.int64)
    tmp = (np.empty((max_par + 1, cap)), np.empty((max_par + 1, cap), dtype=np.int64))
    OUT = np.empty((cap, V), dtype=np.float64)
    emax = np.empty(cap, dtype=np.int64)
    freq = np.empty(V, dtype=np.int64)
    st = np.zeros((cap, 6), dtype=np.uint64)
    gblk = np.empty(cap, dtype=np.int64)
    lane_row = np.empty(cap, dtype=np.int64)
    lane_blk = np.empty(cap, dtype=np.int64)
    act = np.empty(cap, dtype=np.int64)
    kb = np.int64(c)
    while kb < nb:
        ng, nr = 0, 0  # this group's blocks and lanes
        while kb < nb and nr + blk_ptr[kb + 1] - blk_ptr[kb] <= cap:
            for row in range(blk_ptr[kb], blk_ptr[kb + 1]):
                lane_row[nr] = row
                lane_blk[nr] = ng
                nr += 1
            gblk[ng] = kb
            rangecoder.reset(st[ng], words[word_ptr[kb] : word_ptr[kb + 1]], encode)
            ng += 1
            kb += chunks
        for r in range(nr):
            M[:, r] = M0
            E[:, r] = E0
            OK[r] = 1
            SOUT[r] = -1
            OBS[r] = False
            if encode:
                XS[r] = X[lane_row[r]]
            else:
                XS[r] = 0
        TIN = tin
        TIN[:] = 0
        for t in range(D):
            i = order[t]
            nl = 0
            for r in range(nr):
                if VALID[lane_row[r], i]:
                    act[nl] = r
                    nl += 1
            if nl == 0:
                continue
            if mode == LAZY:  # lane 0's OK and SOUT are the group's
                nin, nout = plan(i, t, a, (OK[0], SOUT[0], TIN), (stack, pos, todo, lst, vis), stamp)
                stamp += 1
                run_plan(nr, a, todo, nin, lst, nout, M, E, DM, DE, XS, OBS, tmp)  # every lane: freshness is shared
                pmf_lanes(i, act, nl, a, DM, DE, emax, OUT)
            for q in range(nl):
                r = act[q]
                if mode == LAZY:
                    quantize(OUT[r], precision, freq)
                else:
                    state = (M[:, r], E[:, r], DM[:, r], DE[:, r], OK[r], SOUT[r], XS[r], OBS[r])
                    _step_row(i, t, mode, precision, a, state, tm, te, stack, OUT[r], freq)
                g = lane_blk[r]
                w = words[word_ptr[gblk[g]] : word_ptr[gblk[g] + 1]]
                if encode:
                    sym = XS[r, i]
                    cum = np.int64(0)
                    for v in range(sym):
                        cum += freq[v]
                    rangecoder.encode(st[g], w, cum, freq[sym], precision)
                else:
                    sym = rangecoder.decode(st[g], w, freq, precision)
                    if sym < 0:
                        sym = 0  # damaged: finish the block with zeros, reported below
                if mode == LAZY:
                    XS[r, i] = sym
                    OBS[r, i] = True
                else:
                    _observe_row(i, sym, mode, a, M[:, r], E[:, r], OK[r], XS[r], OBS[r])
            if mode == LAZY:  # only the ancestors with scattered scopes are marked (the others go by TIN)
                for j in range(nc_ptr[i], nc_ptr[i + 1]):
                    OK[0, nc[j]] = 0
        for g in range(ng):
            kk = gblk[g]
            if encode:
                nwords[kk] = rangecoder.seal(st[g], words[word_ptr[kk] : word_ptr[kk + 1]])
            else:
                nwords[kk] = st[g, rangecoder.FAILED]
        if not encode:
            for r in range(nr):
                X[lane_row[r]] = XS[r]
