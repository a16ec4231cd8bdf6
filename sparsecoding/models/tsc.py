"""Ternary Sparse Coding (TSC): ``s_h in {-1, 0, 1}``, ``y = W s + N(0, sigma^2 I)``.

Prior: ``P(s_h = 0) = 1 - pi``, ``P(s_h = -1) = P(s_h = 1) = pi / 2``. The
likelihood and the W and sigma updates are those of BSC
(:class:`~sparsecoding.models.bsc.LinearGaussian`); ``pi`` is the expected
fraction of non-zero causes, with the truncation correction. The truncated
state set holds every sign assignment of the active causes.
"""

from __future__ import annotations

import numpy as np

from .bsc import LinearGaussian

__all__ = ["TSC"]


class TSC(LinearGaussian):
    """Ternary Sparse Coding: states in {-1, 0, 1}; the dictionary is identifiable up to sign.

    Example:
        >>> import numpy as np
        >>> from sparsecoding import TSC
        >>> m = TSC.from_params(W=np.eye(3), pi=0.3, sigma=0.5)
        >>> m.generate(m.params_, 4, np.random.default_rng(0))[0].shape
        (4, 3)
    """

    name = "tsc"

    def nonzero_values(self) -> np.ndarray:
        return np.array([-1.0, 1.0])

    def log_prior_values(self, params):
        pi = float(params["pi"])
        return float(np.log1p(-pi)), np.full(2, np.log(pi / 2.0))
