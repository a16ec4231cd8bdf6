"""Binary Sparse Coding (BSC): ``s_h ~ Bern(pi)``, ``y = W s + N(0, sigma^2 I)``.

The linear-Gaussian equations here are shared by TSC and DSC, which differ
only in the prior over the state values.

* log-likelihood of a state: ``-D/2 log(2 pi sigma^2) - ||y - W s||^2 / (2 sigma^2)``,
  computed from ``b = W^T y`` and the Gram matrix ``G = W^T W`` as
  ``||y||^2 - 2 s.b + s^T G s`` restricted to the state's active causes;
* M-step: ``W = (sum_n y <s>^T)(sum_n <s s^T>)^-1``,
  ``sigma^2 = sum_n <||y - W s||^2> / (N D)`` with the new W,
  ``pi`` with the truncation correction.
"""

from __future__ import annotations

import numpy as np

from ..truncation import (
    PairTemplate,
    gather_mat,
    gather_vec,
    pair_template,
    scatter_sum_pairs,
    scatter_vec,
    singleton_template,
)
from .base import SparseCodingModel

__all__ = ["BSC", "LinearGaussian"]

LOG2PI = float(np.log(2 * np.pi))


def regress_W_sigma(SS: np.ndarray, YS: np.ndarray, YY, N_use: int) -> tuple[np.ndarray, float]:
    """The linear-Gaussian M-step from expected moments: W = <y sᵀ><s sᵀ>⁻¹ and the residual σ.

    ``SS`` (H, H) is Σ<s sᵀ>, ``YS`` (D, H) Σ y<s>ᵀ and ``YY`` Σ|y|²; σ² is the
    mean squared residual per dimension. A tiny ridge keeps unused causes solvable.
    """
    D, H = YS.shape
    ridge = 1e-9 * max(1.0, float(np.trace(SS)) / H)
    W = np.linalg.solve(SS + ridge * np.eye(H), YS.T).T
    err = float(YY) - 2.0 * float(np.sum(W * YS)) + float(np.sum((W.T @ W) * SS))
    return W, float(np.sqrt(max(err, 1e-12) / (N_use * D)))


_GRAM: list = []  # [(W copy, WᵀW)]: one Gram matrix per parameter set, shared by a step's chunks


def gram(W: np.ndarray) -> np.ndarray:
    """``WᵀW``, computed once per distinct ``W`` (compared by value, so an edit in place is seen)."""
    if _GRAM and _GRAM[0][0].shape == W.shape and np.array_equal(_GRAM[0][0], W):
        return _GRAM[0][1]
    G = W.T @ W
    _GRAM[:] = [(W.copy(), G)]
    return G


_TEMPLATES: dict = {}
_LAST_MOMENTS: list = []  # [(Y, W, moments)] of the last chunk


def _templates(vals: np.ndarray) -> tuple[bool, np.ndarray, np.ndarray]:
    """Per candidate template: whether it is binary, the log-likelihood coefficients and the moment template.

    ``||y - W s||^2 - y.y`` is ``F @ coef`` with features ``F = [b_K, G_KK pairs]`` and
    ``coef = [-2 valsᵀ; quad]``. For binary states ``s_j^2 = s_j``, so the diagonal pairs fold
    into the linear terms (``F = [G_jj - 2 b_j, 2 G_jk (j < k)]``): a fifth fewer columns.
    The moment template gives ``<s_j>`` and ``<s_j s_k>`` (all pairs, or j < k when binary).
    """
    key = (vals.shape, vals.tobytes())
    hit = _TEMPLATES.get(key)
    if hit is None:
        pairs = pair_template(vals)
        binary = bool(np.all((vals == 0) | (vals == 1)))
        if binary:
            off = pairs.ju != pairs.ku
            coef = np.concatenate([vals.T, pairs.quad[off]])
            moments = np.concatenate([vals, pairs.prod[:, off]], 1)
        else:
            coef = np.concatenate([-2.0 * vals.T, pairs.quad])
            moments = np.concatenate([vals, pairs.prod], 1)
        hit = (binary, np.ascontiguousarray(coef), np.ascontiguousarray(moments))
        _TEMPLATES.clear() if len(_TEMPLATES) > 64 else None
        _TEMPLATES[key] = hit
    return hit


def _singleton_values(vals: np.ndarray) -> np.ndarray | None:
    """The non-zero values if ``vals`` is the singleton template (zero state, then cause by cause); else None."""
    key = ("single", vals.shape, vals.tobytes())
    if key not in _TEMPLATES:
        M, H = vals.shape
        V = (M - 1) // H if H else 0
        values = vals[1 : V + 1, 0].copy() if V else np.zeros(0)
        ok = V > 0 and M == 1 + H * V and np.array_equal(vals, singleton_template(H, values))
        _TEMPLATES.clear() if len(_TEMPLATES) > 64 else None
        _TEMPLATES[key] = values if ok else None
    return _TEMPLATES[key]


def _candidate_features(b: np.ndarray, G: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """The features ``F`` (n, columns of the coefficients) of :func:`_templates` for the candidates ``idx``."""
    binary = _templates(vals)[0]
    pairs = pair_template(vals)
    H = G.shape[0]
    bK = np.take_along_axis(b, idx, axis=1)
    flatG = G.ravel()  # np.take on flat indices: several times faster than 2-D fancy indexing
    if binary:
        off = pairs.ju != pairs.ku
        lin = np.take(flatG, idx * (H + 1)) - 2.0 * bK
        return np.concatenate([lin, np.take(flatG, idx[:, pairs.ju[off]] * H + idx[:, pairs.ku[off]])], axis=1)
    return np.concatenate([bK, np.take(flatG, idx[:, pairs.ju] * H + idx[:, pairs.ku])], axis=1)


class LinearGaussian(SparseCodingModel):
    """``y = W s + N(0, sigma^2 I)`` with discrete states; the prior is set by the subclass."""

    # -- E-step ------------------------------------------------------------------
    @staticmethod
    def _moments(params: dict, Y: np.ndarray, obs: np.ndarray | None):
        W = params["W"]
        if obs is None:
            # both blocks of a chunk ask for the same moments; the cache holds the arrays themselves and
            # compares them by identity (an id alone could be reused by the next chunk once this one is freed)
            hit = _LAST_MOMENTS[0] if _LAST_MOMENTS else None
            if hit is not None and hit[0] is Y and hit[1] is W:
                return hit[2]
            out = (Y @ W, np.einsum("nd,nd->n", Y, Y), gram(W), float(W.shape[0]))
            _LAST_MOMENTS[:] = [(Y, W, out)]
            return out
        Yo = Y * obs
        G = np.einsum("dh,nd,dl->nhl", W, obs, W, optimize=True)
        return Yo @ W, np.einsum("nd,nd->n", Yo, Yo), G, obs.sum(axis=1)

    def log_lik(self, params, Y, obs, idx, vals):
        b, yy, G, Dn = self._moments(params, Y, obs)
        s2 = float(params["sigma"]) ** 2
        if obs is None and idx is not None:
            # candidate block: ||y - W s||^2 = y.y + [b_K, G_KK pairs] @ [-2 s; s s pairs], one GEMM for all states
            ll = _candidate_features(b, G, idx, vals) @ _templates(vals)[1]  # then in place: const - (ll + yy) / 2s2
            ll += yy[:, None]
            ll *= -0.5 / s2
            ll += -0.5 * Dn * (LOG2PI + np.log(s2))
            return ll
        values = _singleton_values(vals) if idx is None and obs is None else None
        if values is not None:  # the zero state and one cause at a time: read b and G's diagonal, no products
            n, H = b.shape
            lin = np.zeros((n, vals.shape[0]))
            lin[:, 1:] = (b[:, :, None] * values).reshape(n, -1)
            quad = np.zeros(vals.shape[0])
            quad[1:] = (np.diagonal(G)[:, None] * values**2).reshape(-1)
            ll = yy[:, None] - 2.0 * lin + quad
            return -0.5 * Dn * (LOG2PI + np.log(s2)) - ll / (2.0 * s2)
        bc = gather_vec(b, idx)  # (n, k)
        Gc = gather_mat(G, idx)  # (k, k) or (n, k, k)
        lin = bc @ vals.T  # (n, M)
        quad = np.einsum("...mk,mk->...m", vals @ Gc, vals)  # (M,) or (n, M)
        err = yy[:, None] - 2.0 * lin + quad
        Dn = np.asarray(Dn)
        return -0.5 * (Dn[..., None] if Dn.ndim else Dn) * (LOG2PI + np.log(s2)) - err / (2.0 * s2)

    # -- M-step ------------------------------------------------------------------
    def new_stats(self, params, D):
        H = params["W"].shape[1]
        return {"YS": np.zeros((D, H)), "SS": np.zeros((H, H)), "YY": np.zeros(())}

    def accumulate(self, params, Y, blocks, post, stats, T=1.0):
        H = params["W"].shape[1]
        Es = np.zeros((Y.shape[0], H))
        for b, p in zip(blocks, post):
            if b.idx is not None:
                # <s> and <s_j s_k> on the candidate slots in one GEMM, then placed at their causes
                k = b.vals.shape[1]
                binary, _, moments = _templates(b.vals)
                X = p @ moments
                es = scatter_vec(X[:, :k], b.idx, H)
                Es += es
                pairs = pair_template(b.vals)
                if binary:  # <s_j^2> = <s_j>: the diagonal comes from the means
                    off = pairs.ju != pairs.ku
                    pairs = PairTemplate(pairs.ju[off], pairs.ku[off], pairs.prod, pairs.quad)
                    stats["SS"] += np.diag(es.sum(axis=0))
                stats["SS"] += scatter_sum_pairs(X[:, k:], b.idx, pairs, H)
                continue
            values = _singleton_values(b.vals)
            if values is not None:  # one cause at a time: <s_h> and <s_h^2> gather the states of cause h
                q = p[:, 1:].reshape(len(p), H, len(values))
                Es += q @ values
                stats["SS"] += np.diag(q.sum(axis=0) @ values**2)
                continue
            # the shared block (slot h is cause h): sum_n <s sᵀ> = valsᵀ diag(sum_n q_n) vals, without a
            # (states, H²) table of outer products (8 GB for H = 1000)
            Es += p @ b.vals
            stats["SS"] += b.vals.T @ (p.sum(axis=0)[:, None] * b.vals)
        stats["YS"] += Y.T @ Es
        stats["YY"] += np.einsum("nd,nd->", Y, Y)

    def m_step(self, params, stats, common, N_use, T):
        W, sigma = regress_W_sigma(stats["SS"], stats["YS"], stats["YY"], N_use)
        return {"W": W, "pi": np.array(self.update_pi(params, common, N_use)), "sigma": np.array(sigma)}

    def stat_size(self, H, D):
        return D * H + H * H + 1

    def init_params(self, D, mean, var, rng):
        H = int(self.H)
        W = mean[:, None] + 0.25 * np.sqrt(var)[:, None] * rng.standard_normal((D, H))
        return {"W": W, "pi": np.array(1.0 / H), "sigma": np.array(float(np.sqrt(np.mean(var))))}

    def generate(self, params, n, rng):
        S = self.sample_states(params, n, rng)
        W = params["W"]
        Y = S @ W.T + float(params["sigma"]) * rng.standard_normal((n, W.shape[0]))
        return S, Y


class BSC(LinearGaussian):
    """Binary Sparse Coding: ``s_h ~ Bern(pi)`` i.i.d., ``y = W s + N(0, sigma^2 I)``.

    Fitted attributes: ``components_`` (H, D), the dictionary ``W`` transposed;
    ``pi_``, ``sigma_``; ``params_`` (``W`` (D, H), ``pi``, ``sigma`` as
    arrays). See :class:`~sparsecoding.models.base.SparseCodingModel` for the
    hyperparameters.

    Example:
        >>> import torch
        >>> from sparsecoding import BSC, bars_dictionary
        >>> truth = BSC.from_params(W=bars_dictionary(4, amplitude=10.0), pi=0.2, sigma=1.0)  # 16 pixels, 8 bars
        >>> Y = truth.sample((300,), generator=torch.Generator().manual_seed(0)).numpy()
        >>> model = BSC(H=8, Hprime=6, gamma=3, steps=30, random_state=0).fit(Y)
        >>> model.components_.shape, model.transform(Y[:2]).shape, model.converged_
        ((8, 16), (2, 8), True)
    """

    name = "bsc"
