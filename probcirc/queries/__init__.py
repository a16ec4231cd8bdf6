"""Exact queries on a compiled circuit, as plain functions."""

from .conditional import conditional, conditional_moments, posterior_moments
from .marginal import log_prob, parameters
from .sampling import max_log_prob, mpe, sample
from .soft_evidence import soft_evidence

__all__ = [
    "conditional",
    "conditional_moments",
    "log_prob",
    "max_log_prob",
    "mpe",
    "parameters",
    "posterior_moments",
    "sample",
    "soft_evidence",
]
