"""Leaf families for probabilistic circuits."""

from .base import InputDist
from .discrete import Bernoulli, Binomial, Categorical
from .gaussian import Gaussian

__all__ = ["Bernoulli", "Binomial", "Categorical", "Gaussian", "InputDist"]
