"""Maximal Causes Analysis (MCA): ``y_d = max_h s_h W_hd + N(0, sigma^2)``, ``s_h ~ Bern(pi)``, ``W >= 0``.

* log-likelihood of a state: Gaussian around ``Wbar_d(s) = max_h s_h W_hd``
  (the exact max of the generative model);
* M-step (Lücke & Sahani 2008): the max is softened by the ρ-norm
  ``Wbar^ρ_d = (sum_h (s_h W_hd)^ρ)^(1/ρ)``, ``ρ = 1 / (1 - 1/T)`` with
  ``T >= 1.05``, giving ``A_hd = s_h (W_hd / Wbar^ρ_d)^(ρ-1)`` and
  ``W_hd = sum_n <A_hd> y_d / sum_n <A_hd>``;
  ``sigma^2 = sum_n <||y - Wbar(s)||^2> / (N D)``; ``pi`` with the truncation correction.
"""

from __future__ import annotations

import numpy as np

from .base import SparseCodingModel

__all__ = ["MCA", "rho_of_T"]

LOG2PI = float(np.log(2 * np.pi))
T_MIN_RHO = 1.05


def rho_of_T(T: float) -> float:
    """``ρ = 1 / (1 - 1/T)`` with ``T`` bounded below by 1.05 (so ρ <= 21)."""
    T = max(float(T), T_MIN_RHO)
    return 1.0 / (1.0 - 1.0 / T)


class MCA(SparseCodingModel):
    """Maximal Causes Analysis: occlusion-like max superposition of non-negative causes.

    Example:
        >>> import numpy as np
        >>> from sparsecoding import MCA
        >>> m = MCA.from_params(W=np.array([[1.0, 3.0], [2.0, 0.0]]), pi=0.5, sigma=1e-9)
        >>> m.generate(m.params_, 1, np.random.default_rng(1))[1].round(6).tolist()
        [[3.0, 2.0]]
    """

    name = "mca"

    # -- the superposition rule (MMCA overrides these) ----------------------------
    @staticmethod
    def _combine(contribs):
        """Hard superposition of the slot contributions ``x_j = s_j W_jd``."""
        out = contribs[0]
        for x in contribs[1:]:
            out = np.maximum(out, x)
        return out

    @staticmethod
    def _magnitude(x):
        return x

    _magnitude_rule = False

    def _sq_err(self, params, Y, obs, idx, vals):
        """``sum_d obs_d (y_d - Wbar_d(s))^2`` for every point and state: (n, M) (numba kernel)."""
        from .._kernels import active_lists, superposition_sq_err  # numba: imported by the models that use it

        n = Y.shape[0]
        act, val = active_lists(vals)
        if idx is None:
            idx = np.broadcast_to(np.arange(vals.shape[1], dtype=np.int64), (n, vals.shape[1]))
        obs = np.ones_like(Y) if obs is None else np.ascontiguousarray(obs, dtype=np.float64)
        return superposition_sq_err(
            np.ascontiguousarray(Y),
            obs,
            np.ascontiguousarray(params["W"].T),
            np.ascontiguousarray(idx, dtype=np.int64),
            act,
            val,
            self._magnitude_rule,
        )

    # -- E-step ------------------------------------------------------------------
    def log_lik(self, params, Y, obs, idx, vals):
        s2 = float(params["sigma"]) ** 2
        Dn = float(Y.shape[1]) if obs is None else obs.sum(axis=1)[:, None]
        return -0.5 * Dn * (LOG2PI + np.log(s2)) - self._sq_err(params, Y, obs, idx, vals) / (2.0 * s2)

    # -- M-step ------------------------------------------------------------------
    def new_stats(self, params, D):
        H = params["W"].shape[1]
        return {"AY": np.zeros((H, D)), "A": np.zeros((H, D)), "err": np.zeros(())}

    def accumulate(self, params, Y, blocks, post, stats, T=1.0):
        # A_hd = s_h (|W_hd| / Wbar^ρ_d)^(ρ-1) = s_h |W_hd|^(ρ-1) (sum_h' s_h' |W_h'd|^ρ)^(-(ρ-1)/ρ)
        # (binary s); |W| is scaled per pixel by its maximum, which leaves A unchanged. A power per state and
        # pixel, no matrix product to hand to BLAS: one numba pass per block, over the states that carry mass.
        mag = self._magnitude(params["W"].T)  # (H, D)
        scale = mag.max(axis=0)
        mag = mag / np.where(scale > 0, scale, 1.0)
        rho = rho_of_T(T)
        Wp, Wp1 = np.ascontiguousarray(mag**rho), np.ascontiguousarray(mag ** (rho - 1.0))
        Wt = np.ascontiguousarray(params["W"].T)
        Yc = np.ascontiguousarray(Y)
        from .._kernels import active_lists, superposition_stats

        A, AY = np.zeros_like(stats["A"]), np.zeros_like(stats["AY"])
        err = 0.0
        for b, p in zip(blocks, post):
            if b.vals.shape[1] == 0:
                continue
            act, val = active_lists(b.vals)
            idx = b.idx
            if idx is None:
                idx = np.broadcast_to(np.arange(b.vals.shape[1], dtype=np.int64), (Y.shape[0], b.vals.shape[1]))
            err += superposition_stats(
                Yc,
                Wt,
                Wp,
                Wp1,
                np.ascontiguousarray(idx, dtype=np.int64),
                act,
                val,
                np.ascontiguousarray(p),
                -(rho - 1.0) / rho,
                self._magnitude_rule,
                A,
                AY,
            )
        stats["err"] += err
        stats["A"] += A
        stats["AY"] += AY

    def stat_size(self, H, D):
        return 2 * H * D + 1

    def work_per_point(self, H, Hprime, D, n_single, n_multi):
        # the rho-norm terms: (states, D) per point for the candidate block, (slots, D) for both blocks
        return n_single * H + n_multi * (Hprime + 2 * D) + 3 * (H + Hprime) * D

    def _check_own_params(self, params, error, source):
        if np.any(params["W"] < 0):
            raise error(f"{source}: {type(self).__name__} needs W >= 0 (use MMCA for signed causes)")

    def m_step(self, params, stats, common, N_use, T):
        D = params["W"].shape[0]
        A = stats["A"]
        ok = A > 1e-10
        W = np.where(ok, stats["AY"] / np.where(ok, A, 1.0), params["W"].T).T
        W = self._project(W)
        sigma = float(np.sqrt(max(float(stats["err"]), 1e-12) / (N_use * D)))
        return {"W": W, "pi": np.array(self.update_pi(params, common, N_use)), "sigma": np.array(sigma)}

    @staticmethod
    def _project(W):
        return np.maximum(W, 0.0)

    def perturb(self, params, scale, rng):
        out = super().perturb(params, scale, rng)
        out["W"] = self._project(out["W"])
        return out

    def init_params(self, D, mean, var, rng):
        H = int(self.H)
        W = mean[:, None] + 0.25 * np.sqrt(var)[:, None] * np.abs(rng.standard_normal((D, H)))
        return {"W": self._project(W), "pi": np.array(1.0 / H), "sigma": np.array(float(np.sqrt(np.mean(var))))}

    def init_from_data(self, params, samples):
        return {**params, "W": self._project(np.array(samples.T, dtype=np.float64))}

    def generate(self, params, n, rng):
        S = self.sample_states(params, n, rng)
        W = params["W"]
        contribs = S[:, :, None] * W.T[None]  # (n, H, D)
        Wbar = self._combine([contribs[:, h] for h in range(W.shape[1])])
        return S, Wbar + float(params["sigma"]) * rng.standard_normal(Wbar.shape)
