"""Leaf families for probabilistic circuits."""

from .base import InputDist
from .discrete import Bernoulli, Binomial, Categorical
from .gaussian import Gaussian

__all__ = ["InputDist", "Categorical", "Bernoulli", "Binomial", "Gaussian"]
