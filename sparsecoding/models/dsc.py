"""Discrete Sparse Coding (DSC): ``s_h`` takes values from a user-given set with a categorical prior.

``values`` lists the states (it must contain 0, the inactive state) and
``prior`` their probabilities. The observation model is linear-Gaussian as in
BSC (:class:`~sparsecoding.models.bsc.LinearGaussian`). M-step for the prior:
the probability of being non-zero, ``pi``, gets the truncation correction;
how the non-zero mass splits among the values follows the expected counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from probmod.errors import UsageError

from .base import with_base_hyperparameters
from .bsc import LinearGaussian, regress_W_sigma

__all__ = ["DSC"]


class DSC(LinearGaussian):
    """Discrete Sparse Coding with user-given state values.

    Args:
        values: the state values, starting with 0 (e.g. ``(0, 1, 2)``).
        others: as for :class:`~sparsecoding.models.base.SparseCodingModel`.

    Parameters (``params_``): ``W`` (D, H), ``prior`` (len(values),), ``pi = 1 - prior[0]``,
    ``sigma``; fitted attributes ``components_``, ``prior_``, ``pi_``, ``sigma_``. The
    initial prior puts 1 - 1/H on zero and splits the rest evenly.

    Example:
        >>> import numpy as np
        >>> from sparsecoding import DSC
        >>> m = DSC.from_params(values=(0, 1, 2), W=np.eye(2), prior=[0.8, 0.1, 0.1], sigma=0.1)
        >>> sorted(set(m.generate(m.params_, 50, np.random.default_rng(0))[0].ravel().tolist())), round(m.pi_, 12)
        ([0.0, 1.0, 2.0], 0.2)
    """

    name = "dsc"
    param_names = ("W", "prior", "pi", "sigma")

    @with_base_hyperparameters
    def __init__(
        self,
        H: int,
        Hprime: int | None = None,
        gamma: int | None = None,
        *,
        values: Sequence[float] = (0.0, 1.0),
        **common: Any,
    ):
        super().__init__(H, Hprime, gamma, **common)
        self.values = values

    @property
    def _values(self) -> np.ndarray:
        try:
            return np.asarray(self.values, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise UsageError(f"values must be numbers, e.g. (0, 1, 2); got {self.values!r}") from None

    @property
    def prior_(self) -> np.ndarray:
        """The probabilities of ``values``."""
        return self._param("prior")

    def check_hyper(self) -> None:
        super().check_hyper()
        v = self._values
        if len(v) < 2 or np.count_nonzero(v == 0) != 1 or len(np.unique(v)) != len(v) or not np.all(np.isfinite(v)):
            raise UsageError(f"values must hold 0 once plus at least one distinct non-zero value, got {v.tolist()}")
        if v[0] != 0:
            raise UsageError(f"values must start with the inactive state 0, e.g. (0, 1, 2); got {v.tolist()}")

    def check_params(self, params, D=None, *, error=UsageError, source="parameters"):
        if "prior" in params and "pi" not in params:  # pi is implied by the prior
            params = {**params, "pi": 1.0 - float(np.asarray(params["prior"], dtype=np.float64).ravel()[0])}
        return super().check_params(params, D, error=error, source=source)

    def _check_own_params(self, params, error, source):
        p, V = params["prior"], len(self._values)
        if p.shape != (V,) or np.any(p <= 0) or abs(p.sum() - 1) > 1e-6:
            raise error(f"{source}: prior must be {V} positive probabilities summing to 1, got {p.tolist()}")
        if abs(float(params["pi"]) - (1.0 - p[0])) > 1e-6:
            raise error(f"{source}: pi={float(params['pi'])} differs from 1 - prior[0] = {1.0 - p[0]}")

    def param_size(self, H, D):
        return super().param_size(H, D) + len(self._values)

    def nonzero_values(self) -> np.ndarray:
        return self._values[1:]

    def log_prior_values(self, params):
        p = np.asarray(params["prior"], dtype=np.float64)
        return float(np.log(p[0])), np.log(p[1:])

    def m_step(self, params, stats, common, N_use, T):
        W, sigma = regress_W_sigma(stats["SS"], stats["YS"], stats["YY"], N_use)
        pi = self.update_pi(params, common, N_use)
        counts = np.maximum(common["value_counts"], 1e-12)
        prior = np.concatenate([[1.0 - pi], pi * counts / counts.sum()])
        return {"W": W, "prior": prior, "pi": np.array(pi), "sigma": np.array(sigma)}

    def init_from_data(self, params, samples):
        # a data point is W s with values of mean size |v|: start W at the data point's scale over |v|
        return {**params, "W": samples.T / float(np.mean(np.abs(self._values[1:])))}

    def init_params(self, D, mean, var, rng):
        p = super().init_params(D, mean, var, rng)
        V = len(self._values) - 1
        pi = float(p["pi"])
        p["W"] = p["W"] / float(np.mean(np.abs(self._values[1:])))
        p["prior"] = np.concatenate([[1.0 - pi], np.full(V, pi / V)])
        return {"W": p["W"], "prior": p["prior"], "pi": p["pi"], "sigma": p["sigma"]}
