"""Maximum-Magnitude Causes Analysis (MMCA): ``y_d`` is the contribution of largest magnitude.

``Wbar_d(s) = s_{h*} W_{h* d}`` with ``h* = argmax_h |s_h W_hd|`` (ties go to
the lower cause index), plus Gaussian noise; W may be signed, ``s_h ~ Bern(pi)``.
The M-step softens the selection with the ρ-norm of the magnitudes,
``A_hd = s_h (|W_hd| / (sum_h' |s_h' W_h'd|^ρ)^(1/ρ))^(ρ-1)``, and sets
``W_hd = sum_n <A_hd> y_d / sum_n <A_hd>``; sigma and pi as in MCA.
"""

from __future__ import annotations

import numpy as np

from .mca import MCA

__all__ = ["MMCA"]


class MMCA(MCA):
    """Maximum-Magnitude Causes Analysis: like MCA, but signed causes compete by magnitude.

    Example:
        >>> import numpy as np
        >>> from sparsecoding import MMCA
        >>> m = MMCA.from_params(W=np.array([[1.0, -3.0], [2.0, 0.5]]), pi=0.5, sigma=1e-9)
        >>> m.generate(m.params_, 1, np.random.default_rng(1))[1].round(6).tolist()
        [[-3.0, 2.0]]
    """

    name = "mmca"

    @staticmethod
    def _combine(contribs):
        out = contribs[0]
        for x in contribs[1:]:
            out = np.where(np.abs(x) > np.abs(out), x, out)
        return out

    _magnitude_rule = True

    @staticmethod
    def _magnitude(x):
        return np.abs(x)

    @staticmethod
    def _project(W):
        return W

    def _check_own_params(self, params, error, source):
        """Signed W: no constraint beyond the common ones."""

    def init_params(self, D, mean, var, rng):
        H = int(self.H)
        W = mean[:, None] + 0.25 * np.sqrt(var)[:, None] * rng.standard_normal((D, H))
        return {"W": W, "pi": np.array(1.0 / H), "sigma": np.array(float(np.sqrt(np.mean(var))))}
