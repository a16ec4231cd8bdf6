"""Expectation Truncation (ET): the one E-step engine shared by every model.

For each data point ``y_n`` the engine

1. scores every cause ``h`` with the model's selection score (by default the
   log-joint of the singleton states, maximised over the non-zero values) and
   keeps the top ``Hprime`` causes as candidates ``K_n``;
2. builds the truncated state set ``S_n``: the zero state, every singleton
   (all ``H`` causes, every non-zero value) and every state with
   ``2..gamma`` active causes among the candidates (every assignment of
   non-zero values to the active ones);
3. evaluates the model's log-joint ``log p(y_n, s)`` on ``S_n`` and normalises
   the posterior over ``S_n`` with temperature ``T``:
   ``q_n(s) ∝ exp(log p(y_n, s) / T)``;
4. reports the truncated log-likelihood ``log sum_{s in S_n} p(y_n, s)``
   (at ``T = 1``), a lower bound of ``log p(y_n)``.

The set is represented by two *blocks* ``(idx, vals)``: ``idx`` maps the
``k`` slots of a block to causes (``None`` means slot ``h`` is cause ``h``
for every data point) and ``vals`` (``M x k``) lists the states' values on
those slots. The singleton block is shared by all data points; the
multi-cause block is one template applied to each point's candidates.
Everything is vectorised over data points; no Python loop runs over them.

Data truncation (``Ncut_factor``) and the truncation correction of ``pi``
follow Lücke & Eggert (2010) and the ProSper library.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb

import numpy as np

__all__ = [
    "Block",
    "ExpectationTruncation",
    "exact_log_marginal",
    "full_states",
    "exp_shifted",
    "logsumexp",
    "multi_state_template",
    "n_multi_states",
    "n_use",
    "pair_template",
    "select_candidates",
    "singleton_template",
    "truncation_factors",
]


@dataclass
class Block:
    """One block of truncated states: values ``vals`` (M, k) on slots mapped by ``idx`` (n, k) or None."""

    idx: np.ndarray | None
    vals: np.ndarray
    logjoint: np.ndarray | None = None  # (n, M), filled by the engine
    #: every block's log-joints side by side (n, all states) when the engine wrote them into one work array
    joint: np.ndarray | None = None


def n_multi_states(Hprime: int, gamma: int, n_values: int = 1) -> int:
    """Number of states with ``2..gamma`` active causes among ``Hprime`` candidates.

    ``sum_{k=2}^{gamma} C(Hprime, k) * n_values**k``; for binary states with
    ``Hprime=8, gamma=5`` this is 28 + 56 + 70 + 56 = 210.

    Example:
        >>> n_multi_states(8, 5)
        210
    """
    return sum(comb(Hprime, k) * n_values**k for k in range(2, gamma + 1))


def multi_state_template(Hprime: int, gamma: int, values: np.ndarray) -> np.ndarray:
    """All states with ``2..gamma`` active slots among ``Hprime``, every non-zero value assignment.

    Returns an array of shape ``(n_multi_states(Hprime, gamma, len(values)), Hprime)``.

    Example:
        >>> multi_state_template(3, 2, np.array([1.0])).tolist()
        [[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    """
    values = np.asarray(values, dtype=np.float64)
    rows = []
    for k in range(2, gamma + 1):
        combos = np.array(list(itertools.combinations(range(Hprime), k)), dtype=np.int64).reshape(-1, k)
        assign = np.array(list(itertools.product(values, repeat=k)), dtype=np.float64).reshape(-1, k)
        block = np.zeros((len(combos), len(assign), Hprime))
        rows_i = np.arange(len(combos))[:, None, None]
        assign_i = np.arange(len(assign))[None, :, None]
        block[rows_i, assign_i, combos[:, None, :]] = assign[None, :, :]
        rows.append(block.reshape(-1, Hprime))
    if not rows:
        return np.zeros((0, Hprime))
    return np.concatenate(rows, axis=0)


def singleton_template(H: int, values: np.ndarray) -> np.ndarray:
    """The zero state followed by every singleton: row ``1 + h*V + v`` has value ``values[v]`` on cause ``h``."""
    values = np.asarray(values, dtype=np.float64)
    V = len(values)
    out = np.zeros((1 + H * V, H))
    h = np.repeat(np.arange(H), V)
    out[1 + np.arange(H * V), h] = np.tile(values, H)
    return out


def truncation_factors(pi: float, H: int, gamma: int) -> tuple[float, float, float]:
    """``A = P(|s| <= gamma)``, ``B = E[|s| 1(|s| <= gamma)]`` and the correction ``E = pi H A / B``.

    Under the prior the number of active causes is Binomial(H, pi); the
    truncated posterior never puts mass on more than ``gamma`` active causes,
    so the mean activity it sees is biased low. ``pi_new = E * <|s|> / H``
    removes that bias (Lücke & Eggert 2010).

    Example:
        >>> A, B, E = truncation_factors(0.2, 10, 10)
        >>> round(A, 12), round(E, 12)
        (1.0, 1.0)
    """
    A = sum(comb(H, g) * pi**g * (1 - pi) ** (H - g) for g in range(gamma + 1))
    B = sum(g * comb(H, g) * pi**g * (1 - pi) ** (H - g) for g in range(gamma + 1))
    E = pi * H * A / B if B > 0 else 1.0
    return float(A), float(B), float(E)


def n_use(N: int, pi: float, H: int, gamma: int, Ncut_factor: float) -> int:
    """Number of data points kept by data truncation: ``int(N (1 - (1 - A) Ncut_factor))``."""
    if Ncut_factor <= 0:
        return int(N)
    A = truncation_factors(pi, H, gamma)[0]
    return max(1, min(int(N), int(N * (1.0 - (1.0 - A) * Ncut_factor))))


#: shifted log-weights are clipped here before exp(): below about -708 exp() is subnormal (or takes
#: numpy's out-of-range path), 20 to 100 times slower than a normal exp; the clipped weight, 1e-304,
#: is far below float64 resolution next to the largest weight, which is 1
EXP_FLOOR = -700.0


def exp_shifted(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``exp(max(x, EXP_FLOOR))`` for log-weights ``x <= 0`` shifted by their maximum (into ``out`` if given).

    Example:
        >>> exp_shifted(np.array([0.0, -800.0])).tolist() == [1.0, float(np.exp(-700.0))]
        True
    """
    out = np.maximum(x, EXP_FLOOR, out=out)
    return np.exp(out, out=out)


def logsumexp(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable ``log(sum(exp(a)))`` along ``axis``."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    x = a - m
    w = np.where(x < EXP_FLOOR, 0.0, exp_shifted(x))  # exact zeros, so a row of -inf keeps log 0 = -inf
    return np.log(np.sum(w, axis=axis)) + np.squeeze(m, axis=axis)


def select_candidates(score: np.ndarray, Hprime: int) -> np.ndarray:
    """Indices of the ``Hprime`` highest scores per row, sorted ascending (a canonical order).

    Ties at the threshold go to the lower cause index, whatever the chunk or rank. A partition
    finds each row's ``Hprime``-th largest score in O(H) (a full sort cost 11% of an EM step at
    H = 100); NaN scores count as the lowest.

    Example:
        >>> select_candidates(np.array([[0.1, 5.0, 3.0, 5.0, -1.0]]), 2).tolist()
        [[1, 3]]
    """
    n, H = score.shape
    if Hprime >= H:
        return np.broadcast_to(np.arange(H), (n, H)).copy()
    s = np.where(np.isnan(score), -np.inf, score) if np.isnan(score).any() else score
    thr = np.partition(s, H - Hprime, axis=1)[:, H - Hprime][:, None]
    keep = s >= thr
    if np.count_nonzero(keep) != n * Hprime:  # ties at the threshold: take the lowest causes among them
        tied = s == thr
        need = Hprime - (s > thr).sum(axis=1, keepdims=True)
        keep = (s > thr) | (tied & (np.cumsum(tied, axis=1) <= need))
    return np.nonzero(keep)[1].reshape(n, Hprime)  # row-major nonzero: ascending within each row


@dataclass(frozen=True)
class PairTemplate:
    """Products of slot values for quadratic forms over a state template ``vals`` (M, k).

    ``ju <= ku`` run over the slot pairs of the upper triangle (diagonal included),
    ``prod[m, p] = vals[m, ju[p]] * vals[m, ku[p]]`` and ``quad = (prod * w).T`` with
    ``w = 2`` off the diagonal, so that ``s_m^T G s_m = G[ju, ku] @ quad[:, m]`` for a
    symmetric ``G``: every state's quadratic form is one matrix product per block.
    """

    ju: np.ndarray
    ku: np.ndarray
    prod: np.ndarray
    quad: np.ndarray


_PAIR_CACHE: dict = {}


def pair_template(vals: np.ndarray) -> PairTemplate:
    """The :class:`PairTemplate` of ``vals`` (cached per template: the engine's templates are fixed).

    Example:
        >>> t = pair_template(np.array([[1.0, 1.0], [0.0, 2.0]]))
        >>> G = np.array([[1.0, 0.5], [0.5, 3.0]])
        >>> (G[t.ju, t.ku] @ t.quad).tolist()   # [1+1+3, 4*3]
        [5.0, 12.0]
    """
    key = (vals.shape, vals.tobytes())
    hit = _PAIR_CACHE.get(key)
    if hit is not None:
        return hit
    ju, ku = np.triu_indices(vals.shape[1])
    prod = vals[:, ju] * vals[:, ku]
    quad = np.ascontiguousarray((prod * np.where(ju == ku, 1.0, 2.0)).T)
    if len(_PAIR_CACHE) > 64:
        _PAIR_CACHE.clear()
    _PAIR_CACHE[key] = out = PairTemplate(ju, ku, np.ascontiguousarray(prod), quad)
    return out


class ExpectationTruncation:
    """The truncated E-step for a :class:`~sparsecoding.models.base.SparseCodingModel`.

    Args:
        model: supplies the state values, prior, log-likelihood and selection score.
        H: number of causes.
        Hprime: candidates kept per data point (``1 <= Hprime <= H``).
        gamma: most active causes in a multi-cause state (``1 <= gamma <= Hprime``).

    Example:
        >>> import numpy as np
        >>> from sparsecoding import BSC
        >>> m = BSC(H=4, Hprime=3, gamma=2)
        >>> et = ExpectationTruncation(m, 4, 3, 2)
        >>> et.n_states          # zero + 4 singletons + C(3, 2) pairs
        8
    """

    def __init__(self, model, H: int, Hprime: int, gamma: int):
        self.model = model
        self.H, self.Hprime, self.gamma = int(H), int(Hprime), int(gamma)
        values = np.asarray(model.nonzero_values(), dtype=np.float64)
        self.values = values
        self.single_vals = singleton_template(self.H, values)
        self.multi_vals = multi_state_template(self.Hprime, self.gamma, values)
        self.n_states = len(self.single_vals) + len(self.multi_vals)
        self._priors: tuple | None = None
        self._work = np.empty((0, self.n_states))
        # per-state counts used by the engine's common statistics
        self._nnz = [np.count_nonzero(v, axis=1).astype(np.float64) for v in (self.single_vals, self.multi_vals)]
        self._value_counts = [
            np.stack([(v == x).sum(axis=1) for x in values], axis=1).astype(np.float64)
            for v in (self.single_vals, self.multi_vals)
        ]

    # -- log-joints ---------------------------------------------------------
    def _log_prior(self, params: dict, vals: np.ndarray) -> np.ndarray:
        log_p0, log_pv = self.model.log_prior_values(params)
        lp = np.full(vals.shape, log_p0)
        for x, lpx in zip(self.values, np.atleast_1d(log_pv)):
            lp = np.where(vals == x, lpx, lp)
        return lp.sum(axis=1) + (self.H - vals.shape[1]) * log_p0

    def _log_priors(self, params: dict) -> tuple[np.ndarray, np.ndarray]:
        """Log-priors of both templates, computed once per parameter set (every chunk of a step shares them)."""
        log_p0, log_pv = self.model.log_prior_values(params)
        key = (float(log_p0), np.atleast_1d(log_pv).tobytes())
        if self._priors is None or self._priors[0] != key:
            self._priors = (key, self._log_prior(params, self.single_vals), self._log_prior(params, self.multi_vals))
        return self._priors[1], self._priors[2]

    def work_array(self, n: int) -> np.ndarray:
        """An (n, n_states) work array for :meth:`blocks`, the same memory for every chunk of a run.

        A chunk's log-joints are the largest arrays of an E-step (about 1 MB at H = 100); fresh ones
        per chunk cost page faults as well as a pass over memory. The array grows to the largest
        ``n`` asked for and is reused; its contents are overwritten by the next :meth:`blocks`.
        """
        if self._work.shape[0] < n:
            self._work = np.empty((n, self.n_states))
        return self._work[:n]

    def blocks(self, params: dict, Y: np.ndarray, obs: np.ndarray | None = None, reuse: bool = False) -> list[Block]:
        """Candidate selection and log-joints of both blocks for the data ``Y`` (n, D).

        With ``reuse``, the log-joints go into :meth:`work_array` (the blocks' ``logjoint`` are
        views of it, ``joint`` the whole) and :meth:`posterior_and_log_marginal` turns them into
        the posterior in place: the blocks are valid until the next call with ``reuse``.
        """
        n = Y.shape[0]
        lp_single, lp_multi = self._log_priors(params)
        S = len(self.single_vals)
        joint = self.work_array(n) if reuse else None
        single = Block(None, self.single_vals, joint=joint)
        ll = self.model.log_lik(params, Y, obs, None, self.single_vals)
        single.logjoint = self._joint(ll, lp_single, joint, 0, S, n)
        blocks = [single]
        if len(self.multi_vals):
            score = self.model.selection_score(params, Y, obs, single.logjoint)
            K = select_candidates(score, self.Hprime)
            multi = Block(K, self.multi_vals, joint=joint)
            ll = self.model.log_lik(params, Y, obs, K, self.multi_vals)
            multi.logjoint = self._joint(ll, lp_multi, joint, S, self.n_states, n)
            blocks.append(multi)
        return blocks

    @staticmethod
    def _joint(ll: np.ndarray, lp: np.ndarray, joint: np.ndarray | None, a: int, b: int, n: int) -> np.ndarray:
        """``ll + lp`` as (n, b - a): written into columns a..b of ``joint`` when given."""
        if joint is None:
            return np.broadcast_to(ll + lp, (n, b - a))
        return np.add(ll, lp, out=joint[:, a:b])

    @staticmethod
    def log_marginal(blocks: list[Block]) -> np.ndarray:
        """Truncated log-likelihood ``log sum_{s in S_n} p(y_n, s)`` per data point."""
        return logsumexp(np.concatenate([b.logjoint for b in blocks], axis=1), axis=1)

    @staticmethod
    def posterior(blocks: list[Block], T: float = 1.0) -> list[np.ndarray]:
        """Posterior over the truncated set, ``q(s) ∝ p(y, s)^(1/T)``, split per block."""
        L = np.concatenate([b.logjoint for b in blocks], axis=1)
        L -= np.max(L, axis=1, keepdims=True)
        if T != 1.0:
            L *= 1.0 / T
        P = exp_shifted(L, out=L)
        P /= P.sum(axis=1, keepdims=True)
        return ExpectationTruncation._split(P, blocks)

    @staticmethod
    def _split(P: np.ndarray, blocks: list[Block]) -> list[np.ndarray]:
        out, start = [], 0
        for b in blocks:
            out.append(P[:, start : start + b.vals.shape[0]])
            start += b.vals.shape[0]
        return out

    @staticmethod
    def posterior_and_log_marginal(blocks: list[Block], T: float = 1.0) -> tuple[list[np.ndarray], np.ndarray]:
        """:meth:`posterior` at ``T`` and :meth:`log_marginal` (at T = 1), sharing the work when T = 1.

        The work arrays are updated in place (the blocks' own ``joint`` when :meth:`blocks` wrote
        one, which then holds the posterior): each (chunk, states) temporary costs page faults as
        well as a pass over memory.
        """
        L = _joined(blocks)
        m = np.max(L, axis=1, keepdims=True)
        L -= m
        P = np.multiply(L, 1.0 / T) if T != 1.0 else L
        P1 = exp_shifted(L, out=L)
        Z1 = P1.sum(axis=1, keepdims=True)
        logZ = (np.log(Z1) + m)[:, 0]
        if T != 1.0:
            P = exp_shifted(P, out=P)
            P /= P.sum(axis=1, keepdims=True)
        else:
            P /= Z1
        return ExpectationTruncation._split(P, blocks), logZ

    def common_stats(self, blocks: list[Block], post: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Expected number of active causes and expected counts of each non-zero value (summed over n)."""
        n_active = 0.0
        counts = np.zeros(len(self.values))
        for i, p in enumerate(post):
            w = p.sum(axis=0)
            n_active += float(w @ self._nnz[i])
            counts += w @ self._value_counts[i]
        return {"n_active": np.array(n_active), "value_counts": counts}


def _joined(blocks: list[Block]) -> np.ndarray:
    """The blocks' log-joints side by side: their shared ``joint`` work array, or a new concatenation."""
    joint = blocks[0].joint
    if joint is not None and all(b.joint is joint for b in blocks):
        return joint
    return np.concatenate([b.logjoint for b in blocks], axis=1)


def full_states(H: int, values: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """States ``start .. stop-1`` of the full space, where every cause takes 0 or one of ``values``.

    State ``i`` is ``i`` written in base ``1 + len(values)`` (cause 0 the lowest
    digit). Returns the digits (n, H), 0 for an inactive cause, and the state values.

    Example:
        >>> full_states(2, np.array([1.0]), 0, 4)[1].tolist()
        [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    """
    allv = np.concatenate([[0.0], np.asarray(values, dtype=np.float64)])
    base = len(allv) ** np.arange(H, dtype=np.int64)
    digits = (np.arange(start, stop, dtype=np.int64)[:, None] // base) % len(allv)
    return digits, allv[digits]


def exact_log_marginal(model, params: dict, Y: np.ndarray, obs: np.ndarray | None = None) -> np.ndarray:
    """``log p(y_n) = log sum_s p(y_n, s)`` over every latent state, by enumeration in blocks of states.

    The exact counterpart of :meth:`ExpectationTruncation.log_marginal`; its cost
    grows as ``(1 + V)**H``, so callers bound ``H`` first.
    """
    values = np.asarray(model.nonzero_values(), dtype=np.float64)
    H, D = params["W"].shape[1], params["W"].shape[0]
    log_p0, log_pv = model.log_prior_values(params)
    log_prior = np.concatenate([[log_p0], np.atleast_1d(log_pv)])
    total = (1 + len(values)) ** H
    n = Y.shape[0]
    # states per block: keep the model's (n, states, slots, width) work arrays to a few million floats
    per_state = model.work_per_point(H, H, D, 0, 64) / 64 + 4  # model work arrays plus log-joints
    step = max(1, int(2**21 // (n * per_state)))
    parts = []
    for start in range(0, total, step):
        digits, S = full_states(H, values, start, min(total, start + step))
        lj = model.log_lik(params, Y, obs, None, S) + log_prior[digits].sum(axis=1)
        parts.append(logsumexp(np.broadcast_to(lj, (n, len(S))), axis=1))
    return logsumexp(np.stack(parts, axis=1), axis=1)


# ---------------------------------------------------------------------------
# helpers the models use to gather and scatter block quantities
# ---------------------------------------------------------------------------
def gather_vec(x: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """``x`` (n, H) or (H,) restricted to the block's slots: (n, k) or (k,)/(n, H)."""
    if idx is None:
        return x
    if x.ndim == 1:
        return x[idx]
    return np.take_along_axis(x, idx, axis=1)


def gather_mat(G: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
    """``G`` (H, H) or (n, H, H) restricted to the block's slots: (k, k) or (n, k, k)."""
    if idx is None:
        return G
    if G.ndim == 2:
        return G[idx[:, :, None], idx[:, None, :]]
    rows = np.arange(G.shape[0])[:, None, None]
    return G[rows, idx[:, :, None], idx[:, None, :]]


def scatter_vec(x: np.ndarray, idx: np.ndarray | None, H: int) -> np.ndarray:
    """Per-point slot values ``x`` (n, k) placed at their causes: (n, H)."""
    if idx is None:
        return x
    out = np.zeros((x.shape[0], H))
    rows = np.arange(x.shape[0])[:, None]
    out[rows, idx] = x  # candidates are distinct within a row
    return out


def scatter_sum_mat(x: np.ndarray, idx: np.ndarray | None, H: int) -> np.ndarray:
    """Sum over points of slot matrices ``x`` (n, k, k) placed at their causes: (H, H)."""
    if idx is None:
        return x.sum(axis=0) if x.ndim == 3 else x
    flat = (idx[:, :, None] * H + idx[:, None, :]).reshape(-1)
    return np.bincount(flat, weights=x.reshape(-1), minlength=H * H).reshape(H, H)


def scatter_sum_pairs(x: np.ndarray, idx: np.ndarray, pairs: PairTemplate, H: int) -> np.ndarray:
    """Sum over points of upper-triangle slot-pair values ``x`` (n, P) placed at their causes, mirrored: (H, H).

    ``idx`` rows are ascending (:func:`select_candidates`), so pair ``ju <= ku`` lands on or above the diagonal.
    """
    flat = (idx[:, pairs.ju] * H + idx[:, pairs.ku]).reshape(-1)
    up = np.bincount(flat, weights=x.reshape(-1), minlength=H * H).reshape(H, H)
    return up + up.T - np.diag(np.diagonal(up))


def scatter_sum_rows(x: np.ndarray, idx: np.ndarray | None, H: int) -> np.ndarray:
    """Sum over points of slot rows ``x`` (n, k, D) placed at their causes: (H, D)."""
    if idx is None:
        return x.sum(axis=0)
    D = x.shape[2]
    flat = (idx[:, :, None] * D + np.arange(D)[None, None, :]).reshape(-1)
    return np.bincount(flat, weights=x.reshape(-1), minlength=H * D).reshape(H, D)
