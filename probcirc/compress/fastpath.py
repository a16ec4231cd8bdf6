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
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from . import rangecoder
from .kernels import (
    HI,
    LAZY,
    LEAF,
    LO,
    MIN_SHIFT,
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
LANES = 16


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
def _collect(n, now, kind, ch_ptr, ch_idx, lo, hi, contig, ok, tin, stack, pos, todo, cnt):
    """Append to ``todo[cnt:]`` the stale nodes under ``n`` (``n`` itself stale), children first; return the count.

    A depth-first walk through stale nodes only, each appended as the walk leaves it
    (post-order: its stale children are listed by then, the others are fresh), so the
    list is topological. A node is marked when first reached, so it is listed once.
    Linear in the nodes listed: sorting them by slot cost quadratic time on the whole
    subtrees a depth-first coding order leaves stale (#17).
    """
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
                        nin = _collect(c, now, kind, ch_ptr, ch_idx, lo, hi, contig, ok, tin, stack, pos, todo, nin)
        sout[n] = now
    return nin, cnt


@intrinsic
def _bits(typingctx, x):
    """The IEEE-754 bits of a float64 (a bit cast: exact)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _double(typingctx, x):
    """The float64 with the IEEE-754 bits ``x`` (a bit cast: exact)."""
    if x != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_MANT = (1 << 52) - 1


@njit(cache=True, inline="always")
def _pow2(j):
    """2**j for j in [-1022, 1023], built from its bits: the table entry ``kernels._POW2`` holds."""
    return _double((j + 1023) << 52)


@njit(cache=True, inline="always")
def _vshift(m, s):
    """:func:`~probcirc.compress.kernels._shift` without branches (so a loop over lanes vectorises), for
    ``s`` <= 1023 or ``m`` = 0: the same one or two multiplications by powers of two (a factor 1.0 is exact)."""
    s = max(s, MIN_SHIFT)
    a = -600 if s < -1022 else 0
    return (m * _pow2(a)) * _pow2(min(s - a, 1023))


@njit(cache=True, inline="always")
def _vnorm(m, e):
    """:func:`~probcirc.compress.kernels._norm` without branches for ``m`` >= 0; ``frexp`` from the bits, which
    is exact for normal numbers. Third value: 1 when ``m`` is subnormal, infinite or NaN (then redo by the
    scalar path)."""
    b = _bits(m)
    ex = (b >> 52) & 0x7FF
    keep = m >= LO and m <= HI
    f = _double((b & _MANT) | (1022 << 52))
    mo = m if keep else f
    eo = e if keep else e + (ex - 1022)
    zero = m == 0.0
    bad = np.int64(not zero and (ex == 0 or ex == 0x7FF))
    return (0.0 if zero else mo), (ZERO_E if zero else eo), bad


@njit(cache=True)
def groups(a):
    """``(grp, pgrp, gofs)``: the sum groups (#17, speed) of the circuit, for :func:`run_plan`'s shared work.

    ``grp[n]``: for a sum node, the first slot of the run of consecutive sum slots with exactly
    its child list (an HCLT's k sums over one set of k children), else -1. ``pgrp[n]``: that group
    when every parent of ``n`` is a sum of one group, with weights in [2**-100, 1], else -1.
    ``gofs[g]``: the first of group g's rows of aligned children (``gofs[-1]``: their count).
    """
    S = a.kind.shape[0]
    ch_ptr, ch_idx = a.ch_ptr, a.ch_idx
    grp = np.full(S, -1, dtype=np.int64)
    pgrp = np.full(S, -1, dtype=np.int64)
    for n in range(S):
        if a.kind[n] != SUM:
            continue
        grp[n] = n
        m = n - 1
        if m >= 0 and grp[m] >= 0 and ch_ptr[n + 1] - ch_ptr[n] == ch_ptr[m + 1] - ch_ptr[m]:
            same = True
            for k in range(ch_ptr[n + 1] - ch_ptr[n]):
                same = same and ch_idx[ch_ptr[n] + k] == ch_idx[ch_ptr[m] + k]
            if same:
                grp[n] = grp[m]
    for n in range(S):
        j0, j1 = a.par_ptr[n], a.par_ptr[n + 1]
        if j1 == j0:
            continue
        g = grp[a.par_node[j0]]
        for j in range(j0, j1):
            w = a.par_w[j]
            if grp[a.par_node[j]] != g or g < 0 or not (2.0**-100 <= w <= 1.0):
                g = -1
        pgrp[n] = g
    gofs = np.zeros(S + 1, dtype=np.int64)
    rows = 0
    for n in range(S):
        if grp[n] == n:
            gofs[n] = rows
            rows += ch_ptr[n + 1] - ch_ptr[n]
    gofs[S] = rows
    return grp, pgrp, gofs


@njit(cache=True)
def run_plan(nr, a, todo, nin, lst, nout, M, E, DM, DE, X, OBS, tmp, fast, pref):
    """Lanes ``0..nr-1``: the inside values ``todo[:nin]``, then the derivatives ``lst[:nout]`` (parents first).

    State is lane-minor (``M[n, r]``): each node's index lists are read once for all lanes, and
    the lanes' loops vectorise. Per lane, every value goes through the operations of
    :func:`~probcirc.compress.kernels._inside_node` and :func:`~probcirc.compress.kernels._outside_node`
    in their order, so its bits are theirs.

    ``fast`` = (grp, pgrp, gofs, stamp, gstamp, SH, GE, dstamp, DP, GD): a sum group's children are
    aligned (largest exponent, shifted mantissas) once per step for all its sums
    (:func:`_sum_in`), and a node whose parents are one group's sums takes the powers of two
    that align them from one computation per step (:func:`_group_out`). ``pref`` = (pfj, PFM, PFE):
    the products of a large product's first children, kept while their inputs are unchanged
    (:func:`_out_prefix`); a node's recomputation drops the prefixes it is in. The node kernels take
    the arrays themselves: small functions on plain arrays compile to much faster loops.
    """
    kind, leaf_var, leaf_row, table = a.kind, a.leaf_var, a.leaf_row, a.table
    ch_ptr, ch_idx, ch_w = a.ch_ptr, a.ch_idx, a.ch_w
    par_ptr, par_node, par_edge, par_w = a.par_ptr, a.par_node, a.par_edge, a.par_w
    grp, pgrp, gofs, stamp, gstamp, SH, GE, dstamp, DP, GD = fast
    TM, TE = tmp
    pm, pe = TM[0], TE[0]
    pfj = pref[0]
    flag = np.empty(nr, dtype=np.bool_)
    for t in range(nin):
        n = todo[t]
        k = kind[n]
        if k == LEAF:
            _leaf_in(n, nr, leaf_var, leaf_row, table, M, E, X, OBS)
        elif k == PROD:
            _prod_in(n, nr, ch_ptr, ch_idx, M, E, pm, pe)
        elif k == SUM and grp[n] >= 0:
            if _sum_in(n, grp[n], nr, ch_ptr, ch_idx, ch_w, M, E, stamp, gstamp, SH[gofs[grp[n]] :], GE, pm):
                _inside_lanes(n, nr, a, M, E, X, OBS, tmp)
        else:
            _inside_lanes(n, nr, a, M, E, X, OBS, tmp)
        for jp in range(par_ptr[n], par_ptr[n + 1]):
            if pfj[par_node[jp]] > par_edge[jp]:
                pfj[par_node[jp]] = -1
    root = kind.shape[0] - 1
    for t in range(nout - 1, -1, -1):
        n = lst[t]
        pfj[n] = -1
        if n == root:
            for r in range(nr):
                DM[n, r] = 0.5
                DE[n, r] = 1
            continue
        g = pgrp[n]
        if g >= 0 and not _group_out(n, g, nr, par_ptr, par_node, par_w, DM, DE, stamp, dstamp, DP, GD, pm, flag):
            continue
        j0 = par_ptr[n]
        if par_ptr[n + 1] - j0 == 1 and kind[par_node[j0]] == PROD and _many(par_node[j0], ch_ptr):
            _out_prefix(n, par_node[j0], par_edge[j0], nr, ch_ptr, ch_idx, M, E, DM, DE, pref)
        elif _out(n, nr, kind, ch_ptr, ch_idx, par_ptr, par_node, par_edge, par_w, M, E, DM, DE, TM, TE):
            _outside_lanes(n, nr, a, M, E, DM, DE, tmp)


@njit(cache=True, inline="always")
def _many(q, ch_ptr):
    return ch_ptr[q + 1] - ch_ptr[q] > 2  # (from 3 children: so the small test circuits use it too)


@njit(cache=True)
def _out_prefix(n, q, jn, nr, ch_ptr, ch_idx, M, E, DM, DE, pref):
    """d root / d n for n whose one parent is a product q of many children (edge ``jn``): the product of
    ``DM[q]`` and n's siblings in order, as :func:`_out` makes it, starting from the product of the
    siblings before n kept from an earlier step when it reaches no further than n.

    The product is a left-to-right chain of roundings, so only a prefix can be shared: kept as
    the state after edges ``ch_ptr[q]..pfj[q]-1`` (``PFM``, ``PFE``), valid while ``DM[q]`` and
    those children are unchanged (:func:`run_plan` drops it when one is recomputed). In a
    depth-first coding order the siblings already coded stay fixed, so entering the next
    subtree of an HCLT's root product costs one more factor, not all of them.
    """
    pfj, PFM, PFE = pref
    a0, a1 = ch_ptr[q], ch_ptr[q + 1]
    pm, pe = DM[n], DE[n]
    start = a0
    if a0 < pfj[q] <= jn:
        start = pfj[q]
        for r in range(nr):
            pm[r] = PFM[q, r]
            pe[r] = PFE[q, r]
    else:
        for r in range(nr):
            pm[r] = DM[q, r]
            pe[r] = DE[q, r] if DM[q, r] != 0.0 else ZERO_E
    _fold(pm, pe, M, E, ch_idx, start, jn, -1, nr)
    for r in range(nr):
        PFM[q, r] = pm[r]
        PFE[q, r] = pe[r]
    pfj[q] = jn
    _fold(pm, pe, M, E, ch_idx, jn + 1, a1, -1, nr)


@njit(cache=True)
def _leaf_in(n, nr, leaf_var, leaf_row, table, M, E, X, OBS):
    v, row = leaf_var[n], leaf_row[n]
    for r in range(nr):
        if OBS[r, v]:
            M[n, r], E[n, r] = _norm(table[row, X[r, v]], 0)
        else:
            M[n, r], E[n, r] = 0.5, 1


@njit(cache=True)
def _fold(pm, pe, M, E, ch_idx, j0, j1, skip, nr):
    """``(pm, pe) = _norm(pm * M[c], pe + E[c])`` per lane for the children ``ch_idx[j0:j1]`` but the edge
    ``skip``, in order: the scalar loops' products. A zero factor makes the product 0 and keeps it there,
    as their break does; normalised factors never make a subnormal product. (A loop over a runtime
    lane count, indexing ``M[c, r]``: the form that vectorises.)"""
    for j in range(j0, j1):
        if j != skip:
            c = ch_idx[j]
            for r in range(nr):
                m, e, _ = _vnorm(pm[r] * M[c, r], pe[r] + E[c, r])
                pm[r] = m
                pe[r] = e


@njit(cache=True)
def _prod_in(n, nr, ch_ptr, ch_idx, M, E, pm, pe):
    """A product node's inside value on every lane, as :func:`_inside_lanes` (see :func:`_fold`)."""
    for r in range(nr):
        pm[r] = 0.5
        pe[r] = 1
    _fold(pm, pe, M, E, ch_idx, ch_ptr[n], ch_ptr[n + 1], -1, nr)
    for r in range(nr):
        M[n, r] = pm[r]
        E[n, r] = pe[r]


@njit(cache=True)
def _max_exponent(G, g, nr, idx, j0, j1, M, E):
    """``G[g, r]``: the largest exponent ``E[c, r]`` of the nonzero values ``M[c, r]``, c in ``idx[j0:j1]``."""
    for r in range(nr):
        G[g, r] = ZERO_E
    for j in range(j0, j1):
        c = idx[j]
        for r in range(nr):
            G[g, r] = max(G[g, r], E[c, r] if M[c, r] != 0.0 else ZERO_E)


@njit(cache=True)
def _sum_in(n, g, nr, ch_ptr, ch_idx, ch_w, M, E, stamp, gstamp, SH, GE, acc):
    """Sum node ``n`` (of group ``g``) on every lane from the group's aligned children; 1 when a lane needs the
    scalar path.

    Every sum of a group takes the same largest exponent and the same shifted mantissas
    ``_shift(M[c], E[c] - emax)``, so they are computed once per step (``SH``: g's rows, ``GE``);
    each sum then adds ``w * shifted`` in its child order, as :func:`_inside_lanes`. Zero children
    are not skipped: their shifted value is 0, and adding +0.0 to a sum of non-negative terms
    changes no bit.
    """
    b0, b1 = ch_ptr[g], ch_ptr[g + 1]
    if gstamp[g] != stamp:
        gstamp[g] = stamp
        _max_exponent(GE, g, nr, ch_idx, b0, b1, M, E)
        for j in range(b0, b1):
            c = ch_idx[j]
            for r in range(nr):
                SH[j - b0, r] = _vshift(M[c, r], E[c, r] - GE[g, r])
    j0 = ch_ptr[n]
    for r in range(nr):
        acc[r] = 0.0
    for k in range(b1 - b0):
        w = ch_w[j0 + k]
        for r in range(nr):
            acc[r] = acc[r] + w * SH[k, r]
    bad = np.int64(0)
    for r in range(nr):
        m, e, b = _vnorm(acc[r], GE[g, r])
        bad |= b
        M[n, r] = m
        E[n, r] = e
    return bad


@njit(cache=True)
def _group_out(n, g, nr, par_ptr, par_node, par_w, DM, DE, stamp, dstamp, DP, GD, acc, top):
    """d root / d n on every lane when n's parents are the sums of group ``g``; 1 when the shortcut does not
    apply to some lane (then the general path recomputes it).

    :func:`_outside_lanes` computes each term ``_norm(y, DE[q])`` with ``y = DM[q] * w``, the
    largest exponent ``emax`` of the nonzero terms, and adds ``_shift(term, exponent - emax)``.
    With w in [2**-100, 1], y is 0 only when ``DM[q]`` is, never exceeds 2**256, and is a normal
    number; when it falls below 2**-256 it is renormalised, which lowers its exponent below
    ``DE[q]``. So while some parent with the parents' largest exponent keeps its ``y`` in range,
    ``emax`` is that exponent (the same for every child of the group, ``GD``), and every term
    adds the real number ``y * 2**(DE[q] - emax)`` rounded once, renormalised or not: exactly
    ``y * DP[q]`` with ``DP[q] = 2**(DE[q] - emax)``, a normal power of two (``dstamp[g]`` is
    -stamp when some shift is below -1022; a product below the subnormal range rounds to 0 on
    both sides). The powers of two are computed once per step for the group.
    """
    j0, j1 = par_ptr[n], par_ptr[n + 1]
    if dstamp[g] != stamp and dstamp[g] != -stamp:
        dstamp[g] = stamp
        _max_exponent(GD, g, nr, par_node, j0, j1, DM, DE)
        low = np.int64(0)
        for j in range(j0, j1):
            q = par_node[j]
            for r in range(nr):
                s = DE[q, r] - GD[g, r] if DM[q, r] != 0.0 else 0
                low |= np.int64(s < -1022)
                DP[q, r] = _pow2(max(s, -1022))
        if low:
            dstamp[g] = -stamp
    if dstamp[g] != stamp:
        return 1
    for r in range(nr):
        acc[r] = 0.0
        top[r] = GD[g, r] == ZERO_E
    for j in range(j0, j1):
        q = par_node[j]
        w = par_w[j]
        for r in range(nr):
            y = DM[q, r] * w
            top[r] = top[r] or (DE[q, r] == GD[g, r] and y >= LO)
            acc[r] = acc[r] + y * DP[q, r]
    miss = False
    for r in range(nr):
        miss = miss or not top[r]
        m, e, _ = _vnorm(acc[r], GD[g, r])
        DM[n, r] = m
        DE[n, r] = e
    return miss


@njit(cache=True)
def _out(n, nr, kind, ch_ptr, ch_idx, par_ptr, par_node, par_edge, par_w, M, E, DM, DE, TM, TE):
    """:func:`_outside_lanes` with lane loops that vectorise (n is not the root); 1 when a lane needs it."""
    bad = np.int64(0)
    j0, j1 = par_ptr[n], par_ptr[n + 1]
    if j1 - j0 == 1 and kind[par_node[j0]] == PROD:
        # one term: the sum of one normalised nonzero value returns it, so d root / d n is the product
        q = par_node[j0]
        for r in range(nr):
            DM[n, r] = DM[q, r]
            DE[n, r] = DE[q, r] if DM[q, r] != 0.0 else ZERO_E
        _fold(DM[n], DE[n], M, E, ch_idx, ch_ptr[q], ch_ptr[q + 1], par_edge[j0], nr)
        return bad
    for j in range(j0, j1):
        q = par_node[j]
        t = j - j0 + 1  # row 0 stays free for the sum below
        if kind[q] == SUM:
            w = par_w[j]
            for r in range(nr):
                m, e, b = _vnorm(DM[q, r] * w, DE[q, r])
                bad |= b
                TM[t, r] = m
                TE[t, r] = e
            continue
        for r in range(nr):
            TM[t, r] = DM[q, r]
            TE[t, r] = DE[q, r] if DM[q, r] != 0.0 else ZERO_E
        _fold(TM[t], TE[t], M, E, ch_idx, ch_ptr[q], ch_ptr[q + 1], par_edge[j], nr)
    cnt = j1 - j0
    for r in range(nr):
        TE[0, r] = ZERO_E
        TM[0, r] = 0.0
    for t in range(1, cnt + 1):
        for r in range(nr):
            TE[0, r] = max(TE[0, r], TE[t, r] if TM[t, r] != 0.0 else ZERO_E)
    for t in range(1, cnt + 1):
        for r in range(nr):
            TM[0, r] = TM[0, r] + _vshift(TM[t, r], TE[t, r] - TE[0, r])
    for r in range(nr):
        m, e, b = _vnorm(TM[0, r], TE[0, r])
        bad |= b
        DM[n, r] = m
        DE[n, r] = e
    return bad


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
    _pmf(a.var_ptr[i], a.var_ptr[i + 1], a.var_leaf, a.leaf_row, a.table, lanes, nl, DM, DE, emax, OUT)


@njit(cache=True)
def _pmf(j0, j1, var_leaf, leaf_row, table, lanes, nl, DM, DE, emax, OUT):
    V = OUT.shape[1]
    for t in range(nl):
        r = lanes[t]
        em = ZERO_E
        for j in range(j0, j1):
            l = var_leaf[j]
            if DM[l, r] != 0.0 and DE[l, r] > em:
                em = DE[l, r]
        emax[r] = em
        for v in range(V):
            OUT[r, v] = 0.0
    for j in range(j0, j1):
        l = var_leaf[j]
        row = leaf_row[l]
        for t in range(nl):
            r = lanes[t]
            if emax[r] != ZERO_E and DM[l, r] != 0.0:
                c = _shift(DM[l, r], DE[l, r] - emax[r])
                for v in range(V):
                    OUT[r, v] = OUT[r, v] + c * table[row, v]


@njit(cache=True, parallel=True)
def code_blocks(
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
    lanes,
    cost,
):
    """Range-code whole blocks (each: rows ``blk_ptr[k]:blk_ptr[k+1]`` of ``X``, one coder) in one compiled call.

    Per block, for each variable in ``order`` and each of its rows in turn (the rows where
    ``VALID``): the row's PMF (the engine's node functions), then the range coder
    (:mod:`~probcirc.compress.rangecoder`: constriction's arithmetic; the short termination of
    :func:`~probcirc.compress.rangecoder.seal_short`), then the observation.
    ``encode``: ``X`` is read and block k's words are written from ``word_ptr[k]`` (room for
    one word per symbol and 4 more), their count into ``nwords[k]``; decoding: ``X``'s rows
    are filled from those words and ``nwords[k]`` is 1 where the words are damaged. Encoding
    also adds each row's ideal code length, ``Σ precision - log2 f``, to ``cost[row]`` (bits;
    the encoder's choice of raw storage reads it, the bytes never do). Blocks
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
    cap = max(1, min(lanes, -(-(blk_ptr[nb] - blk_ptr[0]) // max(1, chunks))))  # no more lanes than rows
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
            cost,
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
    cost,
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
    grp, pgrp, gofs = groups(a)
    fast = (
        grp,
        pgrp,
        gofs,
        np.int64(1),
        np.zeros(S, dtype=np.int64),  # gstamp
        np.empty((gofs[S], cap)),  # SH
        np.empty((S, cap), dtype=np.int64),  # GE
        np.zeros(S, dtype=np.int64),  # dstamp
        np.empty((S, cap)),  # DP
        np.empty((S, cap), dtype=np.int64),  # GD
    )
    pref = (np.full(S, -1, dtype=np.int64), np.empty((S, cap)), np.empty((S, cap), dtype=np.int64))
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
        pref[0][:] = -1  # new lanes: no kept prefix holds
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
                fast = fast[:3] + (np.int64(stamp),) + fast[4:]
                run_plan(
                    nr, a, todo, nin, lst, nout, M, E, DM, DE, XS, OBS, tmp, fast, pref
                )  # every lane: freshness is shared
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
                    cost[lane_row[r]] += precision - np.log2(np.float64(freq[sym]))
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
                nwords[kk] = rangecoder.seal_short(st[g], words[word_ptr[kk] : word_ptr[kk + 1]])
            else:
                nwords[kk] = st[g, rangecoder.FAILED]
        if not encode:
            for r in range(nr):
                X[lane_row[r]] = XS[r]
