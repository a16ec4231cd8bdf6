"""Deterministic exact kernels: conditional PMFs and their integer quantisation.

Every value is an *extended float* ``m · 2**e``: a float64 mantissa ``m`` kept
in [2**-256, 2**256] by ``frexp`` whenever it leaves that range (or exactly
0) and an int64 exponent ``e``, so that probabilities of
thousands of pixels never underflow. The kernels use only ``+``, ``*``,
comparisons, ``frexp`` and ``ldexp``: the first two are correctly rounded by
IEEE-754 and the last two are exact, so a value depends only on its inputs
and on the fixed order of the loops, never on the batch size, the thread count
or the CPU (no ``exp``/``log``, no BLAS, no reductions whose order a library
chooses). Each image (row ``b`` of the state) is computed alone; ``prange``
only decides which thread computes which row.

The kernels are compiled with numba (``fastmath`` off: no reassociation and
no fused multiply-add). ``tests/probcirc/test_codec.py`` runs the same
functions as plain Python (``.py_func``) and checks bit-equality.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit, prange

ZERO_E = -(1 << 40)  # exponent of an exact zero
MIN_SHIFT = -1100  # ldexp(m, s) is 0 for any s below this
CONST, LEAF, PROD, SUM = 0, 1, 2, 3


#: The program arrays the kernels read, passed to numba's entry points as one named tuple (see :func:`arrays`);
#: the inner node functions take the arrays themselves, which keeps their compiled loops as fast.
Arrays = namedtuple(
    "Arrays",
    "kind leaf_var leaf_row table ch_ptr ch_idx ch_w par_ptr par_node par_edge par_w var_ptr var_leaf anc_ptr anc "
    "lo hi contig",
)


def arrays(program) -> Arrays:
    """The kernels' view of a :class:`~probcirc.compress.program.Program` (its fields of the same names)."""
    return Arrays(*(getattr(program, name) for name in Arrays._fields))


LO = 2.0**-256  # mantissas are renormalised (frexp) only when they leave [LO, HI]
HI = 2.0**256


@njit(cache=True)
def _norm(m, e):
    if m == 0.0:
        return 0.0, ZERO_E
    if LO <= m <= HI:
        return m, e
    f, d = math.frexp(m)
    return f, e + d


#: 2**j for j in [-1022, 1023], all normal doubles: a product with one of them is ``ldexp``'s result, found with
#: one multiplication instead of a call into libm (both are the correctly rounded m * 2**j)
_POW2 = np.array([math.ldexp(1.0, j) for j in range(-1022, 1024)])


@njit(cache=True, inline="always")
def _pow2_scale(m, s):
    """``ldexp(m, s)`` for ``m`` in [2**-256, 2**256] (or 0) and ``s`` in [-1100, 1023], by multiplications.

    For ``s`` below -1022, ``m * 2**-600`` is exact (it stays a normal double), so the second
    product is the only rounding, as in ``ldexp``.
    """
    if s >= -1022:
        return m * _POW2[s + 1022]
    return (m * _POW2[1022 - 600]) * _POW2[s + 600 + 1022]


@njit(cache=True, inline="always")
def _shift(m, s):
    if s == 0:
        return m
    if s > 1023:  # pragma: no cover - exponents are aligned downwards only
        return math.ldexp(m, s)
    return _pow2_scale(m, max(s, MIN_SHIFT))


@njit(cache=True, inline="always")
def _inside_node(n, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs):
    k = kind[n]
    if k == LEAF:
        v = leaf_var[n]
        if obs[v]:
            m, e = _norm(table[leaf_row[n], x[v]], 0)
        else:
            m, e = 0.5, 1
    elif k == PROD:
        m, e = 0.5, 1
        for j in range(ch_ptr[n], ch_ptr[n + 1]):
            c = ch_idx[j]
            if M[c] == 0.0:
                m, e = 0.0, ZERO_E
                break
            m, e = _norm(m * M[c], e + E[c])
    elif k == SUM:
        emax = ZERO_E
        for j in range(ch_ptr[n], ch_ptr[n + 1]):
            c = ch_idx[j]
            if M[c] != 0.0 and E[c] > emax:
                emax = E[c]
        if emax == ZERO_E:
            m, e = 0.0, ZERO_E
        else:
            acc = 0.0
            for j in range(ch_ptr[n], ch_ptr[n + 1]):
                c = ch_idx[j]
                if M[c] != 0.0:
                    acc = acc + ch_w[j] * _shift(M[c], E[c] - emax)
            m, e = _norm(acc, emax)
    else:
        m, e = 0.5, 1
    M[n] = m
    E[n] = e


@njit(cache=True, inline="always")
def _outside_node(n, root, kind, ch_ptr, ch_idx, par_w, par_ptr, par_node, par_edge, M, E, DM, DE, tm, te):
    """DM/DE[n] = d root / d n, summed over n's parents in ascending order."""
    if n == root:
        DM[n] = 0.5
        DE[n] = 1
        return
    cnt = 0
    emax = ZERO_E
    for j in range(par_ptr[n], par_ptr[n + 1]):
        q = par_node[j]
        edge = par_edge[j]
        if DM[q] == 0.0:
            m, e = 0.0, ZERO_E
        elif kind[q] == SUM:
            m, e = _norm(DM[q] * par_w[j], DE[q])
        else:
            m, e = DM[q], DE[q]
            for jj in range(ch_ptr[q], ch_ptr[q + 1]):
                if jj != edge:
                    c = ch_idx[jj]
                    if M[c] == 0.0:
                        m, e = 0.0, ZERO_E
                        break
                    m, e = _norm(m * M[c], e + E[c])
        tm[cnt] = m
        te[cnt] = e
        if m != 0.0 and e > emax:
            emax = e
        cnt += 1
    if emax == ZERO_E:
        DM[n] = 0.0
        DE[n] = ZERO_E
        return
    acc = 0.0
    for t in range(cnt):
        if tm[t] != 0.0:
            acc = acc + _shift(tm[t], te[t] - emax)
    m, e = _norm(acc, emax)
    DM[n] = m
    DE[n] = e


@njit(cache=True)
def _pmf(i, var_ptr, var_leaf, leaf_row, table, DM, DE, out):
    """out[v] ∝ p(x_observed, X_i = v), scaled by a power of two."""
    emax = ZERO_E
    for j in range(var_ptr[i], var_ptr[i + 1]):
        l = var_leaf[j]
        if DM[l] != 0.0 and DE[l] > emax:
            emax = DE[l]
    for v in range(out.shape[0]):
        out[v] = 0.0
    if emax == ZERO_E:
        return
    for j in range(var_ptr[i], var_ptr[i + 1]):
        l = var_leaf[j]
        if DM[l] != 0.0:
            a = _shift(DM[l], DE[l] - emax)
            row = leaf_row[l]
            for v in range(out.shape[0]):
                out[v] = out[v] + a * table[row, v]


@njit(cache=True)
def quantize(p, precision, freq):
    """Integer frequencies ``freq`` (≥ 1 each, summing to exactly 2**precision) from ``p`` ≥ 0.

    1. Fixed point: ``w_v = floor(p_v · 2**(32 - ex))`` with ``2**ex`` just above max p, so
       ``w`` < 2**32 (exact: a power-of-two scaling and a floor). All zero → uniform.
    2. Integers only: ``f_v = 1 + (w_v · R) // T`` with ``R = 2**precision - V``, ``T = Σ w``.
    3. The remainder ``2**precision - Σ f`` (< V) goes to the first most frequent symbol.
    """
    V = p.shape[0]
    pmax = 0.0
    for v in range(V):  # branch-free (a select), so it vectorises; the maximum is the same whatever the order
        pmax = p[v] if p[v] > pmax else pmax
    total = np.int64(0)
    if pmax > 0.0:
        _, ex = math.frexp(pmax)
        k = 32 - ex
        if -1022 <= k <= 1023:  # p · 2**k < 2**32: exact, as ldexp (and no call into libm)
            scale = _POW2[k + 1022]
            for v in range(V):
                freq[v] = np.int64(p[v] * scale)  # >= 0, so truncation is the floor
                total += freq[v]
        else:
            for v in range(V):
                freq[v] = np.int64(math.floor(math.ldexp(p[v], k)))
                total += freq[v]
    else:
        for v in range(V):
            freq[v] = 1
        total = np.int64(V)
    R = (np.int64(1) << precision) - V
    inv = 1.0 / np.float64(total)
    for v in range(V):  # branch-free, so it vectorises; then the sum and the first maximum
        freq[v] = 1 + _floordiv(freq[v] * R, total, inv)
    s = np.int64(0)
    fmax = np.int64(0)
    for v in range(V):  # integer sum and maximum: vectorised, exact in any order
        s += freq[v]
        fmax = max(fmax, freq[v])
    best = 0
    while freq[best] != fmax:  # the first most frequent symbol
        best += 1
    freq[best] += (np.int64(1) << precision) - s


@njit(cache=True, inline="always")
def _floordiv(a, b, inv):
    """``a // b`` for 0 <= a < 2**56, 0 < b < 2**41, with ``inv`` = 1.0 / b: the float64 estimate ``a * inv``
    is off by at most one (the quotient is below 2**25, each rounding relative 2**-53), corrected with
    integers; exact, and cheaper than a division."""
    q = np.int64(np.float64(a) * inv)
    r = a - q * b
    return q - np.int64(r < 0) + np.int64(r >= b)


@njit(cache=True)
def _init_row(kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs):
    for n in range(kind.shape[0]):
        _inside_node(n, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs)


@njit(cache=True)
def init_state(a, M, E, X, OBS):
    for b in range(M.shape[0]):
        _init_row(a.kind, a.leaf_var, a.leaf_row, a.table, a.ch_ptr, a.ch_idx, a.ch_w, M[b], E[b], X[b], OBS[b])


NAIVE, ANCESTORS, LAZY = 0, 1, 2


@njit(cache=True)
def _sort(buf, cnt):
    """Insertion sort of buf[:cnt] in place (short lists; no allocation)."""
    for t in range(1, cnt):
        u = buf[t]
        j = t
        while j > 0 and buf[j - 1] > u:
            buf[j] = buf[j - 1]
            j -= 1
        buf[j] = u


@njit(cache=True)
def _ensure_inside(n, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs, ok, stack):
    """Recompute the stale inside values under ``n``.

    The stale nodes reachable from ``n`` are collected first (each once: ``ok`` is 2 while
    collected), then recomputed in ascending slot order, which is topological, so every
    child is fresh before its parents whatever the shape of the DAG.
    """
    if ok[n] == 1:
        return
    S = kind.shape[0]
    ok[n] = 2
    stack[0] = n
    top, cnt = 1, 0
    while top > 0:
        top -= 1
        u = stack[top]
        stack[S - cnt] = u  # collected nodes fill the stack's far end
        cnt += 1
        if kind[u] == PROD or kind[u] == SUM:
            for j in range(ch_ptr[u], ch_ptr[u + 1]):
                c = ch_idx[j]
                if ok[c] == 0:
                    ok[c] = 2
                    stack[top] = c
                    top += 1
    todo = stack[S - cnt + 1 : S + 1]
    _sort(todo, cnt)
    for t in range(cnt):
        u = todo[t]
        _inside_node(u, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs)
        ok[u] = 1


@njit(cache=True)
def _step_row(i, now, mode, precision, a, state, tm, te, stack, pbuf, freq):
    M, E, DM, DE, ok, sout, x, obs = state
    # Arrays' fields, in their order: locals, as the node functions take the arrays themselves
    kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w = a[:7]
    par_ptr, par_node, par_edge, par_w, var_ptr, var_leaf, anc_ptr, anc, lo, hi, contig = a[7:]
    S = kind.shape[0]
    root = S - 1
    if mode == NAIVE:
        # the whole circuit, inside then outside, for every variable
        for n in range(1, S):
            _inside_node(n, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs)
        for n in range(S - 1, 0, -1):
            _outside_node(n, root, kind, ch_ptr, ch_idx, par_w, par_ptr, par_node, par_edge, M, E, DM, DE, tm, te)
    elif mode == ANCESTORS:
        # inside values are refreshed by observe(); derivatives on every ancestor of X_i's leaves
        for j in range(anc_ptr[i + 1] - 1, anc_ptr[i] - 1, -1):
            _outside_node(anc[j], root, kind, ch_ptr, ch_idx, par_w, par_ptr, par_node, par_edge, M, E, DM, DE, tm, te)
    else:
        # lazy: a derivative d root / d n depends only on variables outside n's scope, so it
        # is reused when every variable coded since it was computed lies inside that scope
        # (scopes are position intervals [lo, hi] in the coding order); stale inside values
        # are recomputed only when a derivative needs them.
        for j in range(anc_ptr[i + 1] - 1, anc_ptr[i] - 1, -1):
            n = anc[j]
            if sout[n] >= now or (contig[n] and sout[n] >= lo[n] and now - 1 <= hi[n]):
                continue
            for jp in range(par_ptr[n], par_ptr[n + 1]):
                q = par_node[jp]
                if kind[q] == PROD:
                    for jj in range(ch_ptr[q], ch_ptr[q + 1]):
                        c = ch_idx[jj]
                        if c != n and ok[c] != 1:  # (a call costs more than the check)
                            _ensure_inside(
                                c, kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs, ok, stack
                            )
            _outside_node(n, root, kind, ch_ptr, ch_idx, par_w, par_ptr, par_node, par_edge, M, E, DM, DE, tm, te)
            sout[n] = now
    _pmf(i, var_ptr, var_leaf, leaf_row, table, DM, DE, pbuf)
    quantize(pbuf, precision, freq)


@njit(cache=True, parallel=True)
def step(i, now, mode, precision, a, M, E, DM, DE, OK, SOUT, STACK, X, OBS, active, max_par, FREQ):
    """Quantised P(X_i | x_observed) for every active row into FREQ (B, V); ``now`` is i's position."""
    V = a.table.shape[1]
    for b in prange(M.shape[0]):
        if active[b]:
            tm = np.empty(max_par, dtype=np.float64)
            te = np.empty(max_par, dtype=np.int64)
            pbuf = np.empty(V, dtype=np.float64)
            state = (M[b], E[b], DM[b], DE[b], OK[b], SOUT[b], X[b], OBS[b])  # the row's own slices
            _step_row(i, now, mode, precision, a, state, tm, te, STACK[b], pbuf, FREQ[b])


@njit(cache=True, parallel=True)
def observe(i, mode, a, M, E, OK, X, OBS, active, values):
    """Set X_i = values[b] on the active rows; refresh (ANCESTORS) or mark stale (LAZY) what depends on it."""
    for b in prange(M.shape[0]):
        if active[b]:
            _observe_row(i, values[b], mode, a, M[b], E[b], OK[b], X[b], OBS[b])


@njit(cache=True)
def _observe_row(i, value, mode, a, M, E, ok, x, obs):
    kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w = a[:7]  # the first of Arrays' fields
    anc_ptr, anc = a.anc_ptr, a.anc
    x[i] = value
    obs[i] = True
    if mode == ANCESTORS:
        for j in range(anc_ptr[i], anc_ptr[i + 1]):
            _inside_node(anc[j], kind, leaf_var, leaf_row, table, ch_ptr, ch_idx, ch_w, M, E, x, obs)
    elif mode == LAZY:
        for j in range(anc_ptr[i], anc_ptr[i + 1]):
            ok[anc[j]] = 0
