"""Probabilistic sparse coding with Expectation Truncation (ProSper-style), data-parallel with MPI.

Models: :class:`BSC`, :class:`TSC`, :class:`DSC`, :class:`MCA`, :class:`MMCA`,
:class:`GSC`. Each is a scikit-learn estimator (``fit``, ``transform``,
``fit_transform``, ``score``; fitted ``components_``, ``pi_``, ``sigma_``, ...)
and a :class:`probmod.distribution.Distribution` (``log_prob`` exact where the
states can be enumerated, ``log_prob_lower_bound`` the truncated bound, ``sample``).

Example:
    >>> from sparsecoding import BSC, bars_data
    >>> d = bars_data(N=1000, seed=0)                      # the bars test: 10 bars on 5x5
    >>> m = BSC(H=10, Hprime=8, gamma=5, random_state=0).fit(d["Y"])
    >>> m.components_.shape, round(m.pi_, 2), m.converged_
    ((10, 25), 0.2, True)
"""

from . import models
from .data import bars_data, bars_dictionary, greedy_match, image_patches
from .em import parse_anneal, run_em
from .models import *  # noqa: F403 - the models package's public names are this package's too
from .truncation import ExpectationTruncation, n_multi_states

__all__ = [
    "ExpectationTruncation",
    "bars_data",
    "bars_dictionary",
    "greedy_match",
    "image_patches",
    "n_multi_states",
    "parse_anneal",
    "run_em",
]
__all__ += models.__all__
