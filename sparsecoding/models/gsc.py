"""Gaussian Sparse Coding (GSC), spike-and-slab: ``s_h ~ Bern(pi)``, ``z ~ N(mu, Psi)``,
``y = W (s ⊙ z) + N(0, sigma^2 I)``.

Given a binary state ``s`` with active set ``A`` the slab integrates out in
closed form (Sheikh, Shelton & Lücke 2014), keeping every ½ factor:

* ``log p(y | s) = log N(y; W_A mu_A, C_s)``, ``C_s = sigma^2 I + W_A Psi_A W_A^T``,
  computed in the k-dimensional (k = |A|) information form:
  ``Lambda_s = (Psi_A^-1 + W_A^T W_A / sigma^2)^-1``, ``r = y - W_A mu_A``,
  ``v = W_A^T r / sigma^2``, and
  ``log p(y|s) = -D/2 log(2 pi sigma^2) - ½ log|Psi_A| + ½ log|Lambda_s| - ½ (r.r / sigma^2 - v^T Lambda_s v)``;
* ``z_A | y, s ~ N(kappa_s, Lambda_s)`` with ``kappa_s = mu_A + Lambda_s v``.

M-step: ``W = (sum y <s⊙z>^T)(sum <(s⊙z)(s⊙z)^T>)^-1``, ``sigma^2`` from the
expected residual with the new W, ``mu_h = sum <s_h z_h> / sum <s_h>``,
``Psi_hl = sum <s_h s_l (z_h - mu_h)(z_l - mu_l)> / sum <s_h s_l>`` (only the
diagonal unless ``psi_full=True``), ``pi`` with the truncation correction.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from probmod.errors import UsageError

from ..truncation import gather_mat, gather_vec, scatter_sum_mat, scatter_vec
from .base import SparseCodingModel, with_base_hyperparameters
from .bsc import LinearGaussian, regress_W_sigma

__all__ = ["GSC"]

LOG2PI = float(np.log(2 * np.pi))
#: the last E-step block per thread, kept off the estimator so that transform leaves its state unchanged
_CACHE = threading.local()


class GSC(SparseCodingModel):
    """Spike-and-slab sparse coding with a closed-form truncated E-step.

        Args:
            psi_full: learn the full slab covariance ``Psi`` (default: diagonal).
            others: as for :class:`~sparsecoding.models.base.SparseCodingModel`.

        Parameters (``params_``): ``W`` (D, H), ``pi``, ``sigma``, ``mu`` (H,), ``Psi`` (H, H);
        fitted attributes ``components_``, ``pi_``, ``sigma_``, ``mu_``, ``Psi_``.
        ``W`` and the slab are identifiable only up to a per-cause scale: compare
        ``W * mu`` across fits.

        Example:
            >>> import numpy as np

    from probmod.errors import UsageError
            >>> from sparsecoding import GSC
            >>> m = GSC.from_params(W=np.eye(3)[:, :2], pi=0.5, sigma=0.1, mu=np.ones(2), Psi=0.01 * np.eye(2))
            >>> Y = m.generate(m.params_, 5, np.random.default_rng(0))[1]
            >>> m.transform(Y).shape
            (5, 2)
    """

    name = "gsc"
    param_names = ("W", "pi", "sigma", "mu", "Psi")

    @with_base_hyperparameters
    def __init__(
        self, H: int, Hprime: int | None = None, gamma: int | None = None, *, psi_full: bool = False, **common: Any
    ):
        super().__init__(H, Hprime, gamma, **common)
        self.psi_full = psi_full

    @property
    def mu_(self) -> np.ndarray:
        """The slab means (H,)."""
        return self._param("mu")

    @property
    def Psi_(self) -> np.ndarray:
        """The slab covariance (H, H)."""
        return self._param("Psi")

    def check_hyper(self) -> None:
        super().check_hyper()
        if not isinstance(self.psi_full, (bool, np.bool_)):
            raise UsageError(f"psi_full must be True or False, got {self.psi_full!r}")

    def _check_own_params(self, params, error, source):
        H = int(self.H)
        if params["mu"].shape != (H,):
            raise error(f"{source}: mu must have shape ({H},), got {params['mu'].shape}")
        Psi = params["Psi"]
        ok = Psi.shape == (H, H) and np.allclose(Psi, Psi.T) and np.linalg.eigvalsh(0.5 * (Psi + Psi.T)).min() > 0
        if not ok:
            raise error(f"{source}: Psi must be a symmetric positive definite ({H}, {H}) matrix")

    def stat_size(self, H, D):
        return D * H + 3 * H * H + 2 * H + 1

    def param_size(self, H, D):
        return super().param_size(H, D) + H + H * H

    def work_per_point(self, H, Hprime, D, n_single, n_multi):
        # the slab's posterior mean (slots) and covariance (slots x slots, twice) per state; (H, H) moments per point
        return 2 * n_single * H + 2 * H * H + n_multi * Hprime * (1 + 3 * Hprime)

    _moments = staticmethod(LinearGaussian._moments)

    # -- E-step ------------------------------------------------------------------
    def _gauss(self, params, Y, obs, idx, vals):
        """Per state: ``log p(y|s)`` (n, M), and the posterior mean and covariance of the active slab.

        The last result is reused when the E-step's statistics ask for the same block again. The
        cache holds the arrays themselves and compares them by identity: an ``id`` alone could be
        reused by the next chunk's arrays once this chunk's are freed.
        """
        arrays = (Y, obs, idx, vals)
        values = (params["W"].tobytes(), params["Psi"].tobytes(), params["mu"].tobytes(), float(params["sigma"]))
        cached = getattr(_CACHE, "gauss", None)
        if cached is not None and all(a is b for a, b in zip(cached[0], arrays)) and cached[1] == values:
            return cached[2]
        out = self._gauss_compute(params, Y, obs, idx, vals)
        _CACHE.gauss = (arrays, values, out)
        return out

    def _gauss_compute(self, params, Y, obs, idx, vals):
        b, yy, G, Dn = self._moments(params, Y, obs)
        s2 = float(params["sigma"]) ** 2
        Dn = np.asarray(Dn)
        const = -0.5 * (Dn[:, None] if Dn.ndim else Dn) * (LOG2PI + np.log(s2))
        mu, Psi = params["mu"], params["Psi"]
        n = Y.shape[0]
        mm = vals != 0
        if mm.sum(axis=1).max(initial=0) <= 1:
            return self._gauss_single(b, yy, G, s2, const, mu, Psi, idx, mm, n)
        bc = gather_vec(b, idx)  # (n, k)
        Gc = gather_mat(G, idx)  # (k, k) | (n, k, k)
        Psic = gather_mat(Psi, idx)
        muc = gather_vec(mu, idx)  # (k,) | (n, k)
        k = vals.shape[1]
        P = mm[:, :, None] & mm[:, None, :]  # (M, k, k)
        eye = np.eye(k)
        if np.count_nonzero(Psi - np.diag(np.diagonal(Psi))) == 0:  # diagonal slab covariance: no inversion
            psid = np.diagonal(Psic, axis1=-2, axis2=-1)[..., None, :]  # (1|n, 1, k)
            psis = np.where(mm, psid, 1.0)  # (M|n,M, k)
            logdet_psi = np.log(psis).sum(axis=-1)
            Psis_inv = eye * (1.0 / psis)[..., None, :]
        else:
            Psis = np.where(P, Psic[..., None, :, :], eye)  # (M|n,M, k, k)
            Psis_inv = np.linalg.inv(Psis)
            logdet_psi = np.linalg.slogdet(Psis)[1]
        Lam_inv = Psis_inv + np.where(P, Gc[..., None, :, :] / s2, 0.0)
        chol = np.linalg.cholesky(Lam_inv)
        logdet_lam_inv = 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(axis=-1)
        Lam = np.linalg.inv(Lam_inv)
        mus = np.broadcast_to(np.where(mm, muc[..., None, :], 0.0), (n,) + mm.shape)  # (n, M, k)
        Gc3 = Gc if Gc.ndim == 3 else Gc[None]
        Gmu = np.matmul(mus, Gc3)  # (n, M, k)
        v = np.where(mm, bc[:, None, :] - Gmu, 0.0) / s2
        mub = np.einsum("nmk,nk->nm", mus, bc)
        muGmu = np.einsum("nmk,nmk->nm", Gmu, mus)
        rr = yy[:, None] - 2.0 * mub + muGmu
        if Lam.ndim == 3:
            Lv = np.einsum("mkl,nml->nmk", Lam, v)
        else:
            Lv = np.einsum("nmkl,nml->nmk", Lam, v)
        vLv = np.einsum("nmk,nmk->nm", v, Lv)
        ll = const - 0.5 * logdet_psi - 0.5 * logdet_lam_inv - 0.5 * (rr / s2 - vLv)
        kappa = mus + Lv
        return ll, kappa, np.where(P, Lam, 0.0), False

    def _gauss_single(self, b, yy, G, s2, const, mu, Psi, idx, mm, n):
        """The same for states with at most one active cause (scalar formulas)."""
        Gd = np.diagonal(G, axis1=-2, axis2=-1)  # (H,) | (n, H)
        bc, gc = gather_vec(b, idx), gather_vec(Gd, idx)
        muc, psic = gather_vec(mu, idx), gather_vec(np.diagonal(Psi), idx)
        lam = 1.0 / (1.0 / psic + gc / s2)
        v = (bc - gc * muc) / s2
        rr = yy[:, None] - 2.0 * muc * bc + muc**2 * gc
        ll_slot = const - 0.5 * np.log(psic) + 0.5 * np.log(lam) - 0.5 * (rr / s2 - v**2 * lam)  # (n, k)
        kap_slot = muc + lam * v
        M, k = mm.shape
        active = np.where(mm.any(axis=1), np.argmax(mm, axis=1), -1)
        on = active >= 0
        ll = np.broadcast_to(const - 0.5 * yy[:, None] / s2, (n, M)).copy()
        ll[:, on] = ll_slot[:, active[on]]
        kappa = np.zeros((n, M, k))
        kappa[:, np.nonzero(on)[0], active[on]] = kap_slot[:, active[on]]
        lam_b = np.broadcast_to(lam, (n, k))
        Lam = np.zeros((n, M, k))  # diagonal only: Lam[n, m, j] for j = active slot
        Lam[:, np.nonzero(on)[0], active[on]] = lam_b[:, active[on]]
        return ll, kappa, Lam, True

    def log_lik(self, params, Y, obs, idx, vals):
        return self._gauss(params, Y, obs, idx, vals)[0]

    # -- M-step ------------------------------------------------------------------
    def new_stats(self, params, D):
        H = params["W"].shape[1]

        def z(*s):
            return np.zeros(s)

        return {"YSZ": z(D, H), "SZ": z(H), "SZZ": z(H, H), "S": z(H), "SS": z(H, H), "S_SZ": z(H, H), "YY": z()}

    def accumulate(self, params, Y, blocks, post, stats, T=1.0):
        H = params["W"].shape[1]
        ESZ = np.zeros((Y.shape[0], H))
        for b, p in zip(blocks, post):
            _, kappa, Lam, diag = self._gauss(params, Y, None, b.idx, b.vals)
            mm = (b.vals != 0).astype(np.float64)
            k = mm.shape[1]
            esz = np.einsum("nm,nmk->nk", p, kappa)
            ESZ += scatter_vec(esz, b.idx, H)
            es = p @ mm
            if diag:  # single-active block: Lam holds the diagonal
                q = np.einsum("nm,nmk->nk", p, Lam + kappa**2)
                Q = np.zeros((Y.shape[0], k, k))
                Q[:, np.arange(k), np.arange(k)] = q
                S_SZ = np.zeros_like(Q)
                S_SZ[:, np.arange(k), np.arange(k)] = esz
            else:
                Q = np.einsum("nm,nmkl->nkl", p, Lam + kappa[..., :, None] * kappa[..., None, :])
                S_SZ = np.einsum("nm,mj,nml->njl", p, mm, kappa)
            if b.idx is None:
                stats["S"] += es.sum(axis=0)
                stats["SS"] += mm.T @ (p.sum(axis=0)[:, None] * mm)  # no (states, H²) table of outer products
                stats["SZZ"] += Q.sum(axis=0)
                stats["S_SZ"] += S_SZ.sum(axis=0)
            else:
                stats["S"] += np.bincount(b.idx.reshape(-1), weights=es.reshape(-1), minlength=H)
                MM = (mm[:, :, None] * mm[:, None, :]).reshape(len(mm), k * k)
                stats["SS"] += scatter_sum_mat((p @ MM).reshape(-1, k, k), b.idx, H)
                stats["SZZ"] += scatter_sum_mat(Q, b.idx, H)
                stats["S_SZ"] += scatter_sum_mat(S_SZ, b.idx, H)
        stats["YSZ"] += Y.T @ ESZ
        stats["SZ"] += ESZ.sum(axis=0)
        stats["YY"] += np.einsum("nd,nd->", Y, Y)

    def m_step(self, params, stats, common, N_use, T):
        SZZ = stats["SZZ"]
        W, sigma = regress_W_sigma(SZZ, stats["YSZ"], stats["YY"], N_use)  # the slab values z play the role of s
        S, SS, S_SZ = stats["S"], stats["SS"], stats["S_SZ"]
        ok = S > 1e-8
        mu = np.where(ok, stats["SZ"] / np.where(ok, S, 1.0), params["mu"])
        num = SZZ - mu[:, None] * S_SZ - mu[None, :] * S_SZ.T + np.outer(mu, mu) * SS
        okm = SS > 1e-8
        Psi = np.where(okm, num / np.where(okm, SS, 1.0), params["Psi"])
        if not self.psi_full:
            Psi = np.diag(np.diagonal(Psi))
        Psi = 0.5 * (Psi + Psi.T)
        w, V = np.linalg.eigh(Psi)
        Psi = (V * np.maximum(w, 1e-6)) @ V.T  # keep it positive definite
        pi = self.update_pi(params, common, N_use)
        return {"W": W, "pi": np.array(pi), "sigma": np.array(sigma), "mu": mu, "Psi": Psi}

    def init_params(self, D, mean, var, rng):
        H = int(self.H)
        W = mean[:, None] + 0.25 * np.sqrt(var)[:, None] * rng.standard_normal((D, H))
        return {
            "W": W,
            "pi": np.array(1.0 / H),
            "sigma": np.array(float(np.sqrt(np.mean(var)))),
            "mu": np.ones(H),
            "Psi": np.eye(H),
        }

    def generate(self, params, n, rng):
        W, mu, Psi = params["W"], params["mu"], params["Psi"]
        H = W.shape[1]
        S = (rng.random((n, H)) < float(params["pi"])).astype(np.float64)
        L = np.linalg.cholesky(Psi + 1e-300 * np.eye(H))
        Z = mu + rng.standard_normal((n, H)) @ L.T
        Y = (S * Z) @ W.T + float(params["sigma"]) * rng.standard_normal((n, W.shape[0]))
        return S, Y

    def _code(self, Y, blocks, post, kind):
        if kind == "map":
            return super()._code(Y, blocks, post, kind)
        H = int(self.H)
        out = np.zeros((Y.shape[0], H))
        for b, p in zip(blocks, post):
            kappa = self._gauss(self.params_, Y, None, b.idx, b.vals)[1]
            out += scatter_vec(np.einsum("nm,nmk->nk", p, kappa), b.idx, H)
        return out
