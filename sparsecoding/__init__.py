"""Probabilistic sparse coding with Expectation Truncation (ProSper-style), data-parallel with MPI.

Models: :class:`BSC`, :class:`TSC`, :class:`DSC`, :class:`MCA`, :class:`MMCA`,
:class:`GSC`. Each is a :class:`probcirc.distribution.Distribution` (its
``log_prob`` is the truncated approximation) and an sklearn-like estimator
(``fit``, ``transform``, ``log_likelihood``).

Example:
    >>> import numpy as np
    >>> from sparsecoding import BSC, bars_data
    >>> d = bars_data(N=200, seed=0)
    >>> m = BSC(H=10, Hprime=6, gamma=3, steps=5).fit(d["Y"])
    >>> m.W.shape
    (25, 10)
"""

from .data import bars_data, bars_dictionary, greedy_match, image_patches
from .em import parse_anneal, run_em
from .models import BSC, DSC, GSC, MCA, MMCA, MODELS, TSC, SparseCodingModel
from .truncation import ExpectationTruncation, n_multi_states

__all__ = [
    "BSC", "TSC", "DSC", "MCA", "MMCA", "GSC", "MODELS", "SparseCodingModel",
    "ExpectationTruncation", "n_multi_states", "run_em", "parse_anneal",
    "bars_data", "bars_dictionary", "image_patches", "greedy_match",
]
