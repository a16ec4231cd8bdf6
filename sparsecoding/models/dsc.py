"""Discrete Sparse Coding (DSC): ``s_h`` takes values from a user-given set with a categorical prior.

``values`` lists the states (it must contain 0, the inactive state) and
``prior`` their probabilities. The observation model is linear-Gaussian as in
BSC (:class:`~sparsecoding.models.bsc.LinearGaussian`). M-step for the prior:
the probability of being non-zero, ``pi``, gets the truncation correction;
how the non-zero mass splits among the values follows the expected counts.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .bsc import LinearGaussian, regress_W_sigma

__all__ = ["DSC"]


class DSC(LinearGaussian):
    """Discrete Sparse Coding with user-given state values.

    Args:
        H, Hprime, gamma, ...: as for :class:`~sparsecoding.models.base.SparseCodingModel`.
        values: the state values, including 0 (e.g. ``(0, 1, 2)``).
        prior: initial or fixed probabilities of ``values`` (default: 1 - 1/H on
            zero, the rest split evenly).

    Parameters: ``W`` (D, H), ``prior`` (len(values),), ``pi = 1 - prior[0]``, ``sigma``.

    Example:
        >>> import numpy as np
        >>> from sparsecoding import DSC
        >>> m = DSC(H=2, values=(0, 1, 2), W=np.eye(2), prior=[0.8, 0.1, 0.1], sigma=0.1)
        >>> sorted(set(m.generate(m.params, 50, np.random.default_rng(0))[0].ravel().tolist()))
        [0.0, 1.0, 2.0]
    """

    name = "dsc"
    param_names = ("W", "prior", "pi", "sigma")

    def __init__(self, H: int, Hprime: int | None = None, gamma: int | None = None, *,
                 values: Sequence[float] = (0.0, 1.0), **kwargs: Any):
        values = np.asarray(values, dtype=np.float64).ravel()
        if "prior" in kwargs and "pi" not in kwargs:
            kwargs["pi"] = 1.0 - float(np.asarray(kwargs["prior"], dtype=np.float64).ravel()[0])
        super().__init__(H, Hprime, gamma, **kwargs)
        self.values = values

    def check_hyper(self) -> None:
        super().check_hyper()
        v = self.values
        if len(v) < 2 or np.count_nonzero(v == 0) != 1 or len(np.unique(v)) != len(v):
            raise ValueError(f"values must hold 0 once plus at least one distinct non-zero value, got {v.tolist()}")
        if v[0] != 0:
            raise ValueError(f"values must start with the inactive state 0, e.g. (0, 1, 2); got {v.tolist()}")
        if "prior" in self.params:
            p = self.params["prior"]
            if p.shape != v.shape or np.any(p <= 0) or abs(p.sum() - 1) > 1e-6:
                raise ValueError(f"prior must be {len(v)} positive probabilities summing to 1, got {p.tolist()}")

    def nonzero_values(self) -> np.ndarray:
        return self.values[1:]

    def log_prior_values(self, params):
        p = np.asarray(params["prior"], dtype=np.float64)
        return float(np.log(p[0])), np.log(p[1:])

    def m_step(self, params, stats, common, N_use, T):
        W, sigma = regress_W_sigma(stats["SS"], stats["YS"], stats["YY"], N_use)
        pi = self.update_pi(params, common, N_use)
        counts = np.maximum(common["value_counts"], 1e-12)
        prior = np.concatenate([[1.0 - pi], pi * counts / counts.sum()])
        return {"W": W, "prior": prior, "pi": np.array(pi), "sigma": np.array(sigma)}

    def init_params(self, D, mean, var, rng):
        p = super().init_params(D, mean, var, rng)
        V = len(self.values) - 1
        pi = float(p["pi"])
        p["W"] = p["W"] / float(np.mean(np.abs(self.values[1:])))
        p["prior"] = np.concatenate([[1.0 - pi], np.full(V, pi / V)])
        return {"W": p["W"], "prior": p["prior"], "pi": p["pi"], "sigma": p["sigma"]}
