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

from .._kernels import active_lists, linear_moments, linear_sq_err
from ..truncation import gather_mat, gather_vec
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


class LinearGaussian(SparseCodingModel):
    """``y = W s + N(0, sigma^2 I)`` with discrete states; the prior is set by the subclass."""

    # -- E-step ------------------------------------------------------------------
    @staticmethod
    def _moments(params: dict, Y: np.ndarray, obs: np.ndarray | None):
        W = params["W"]
        if obs is None:
            return Y @ W, np.einsum("nd,nd->n", Y, Y), W.T @ W, float(W.shape[0])
        Yo = Y * obs
        G = np.einsum("dh,nd,dl->nhl", W, obs, W, optimize=True)
        return Yo @ W, np.einsum("nd,nd->n", Yo, Yo), G, obs.sum(axis=1)

    def log_lik(self, params, Y, obs, idx, vals):
        b, yy, G, Dn = self._moments(params, Y, obs)
        s2 = float(params["sigma"]) ** 2
        if obs is None and idx is not None:  # candidate block: numba over active slots only
            act, val = active_lists(vals)
            err = linear_sq_err(b, yy, G, np.ascontiguousarray(idx, dtype=np.int64), act, val)
            return -0.5 * Dn * (LOG2PI + np.log(s2)) - err / (2.0 * s2)
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
                act, val = active_lists(b.vals)
                es, ss = linear_moments(
                    np.ascontiguousarray(p), np.ascontiguousarray(b.idx, dtype=np.int64), act, val, H
                )
                Es += es
                stats["SS"] += ss
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
