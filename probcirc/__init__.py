"""probcirc: probabilistic circuits and the Distribution interface shared by probmod."""

from . import io
from .distribution import Distribution
from .gmm import ConditionalMixture, GaussianMixture

__all__ = ["Distribution", "GaussianMixture", "ConditionalMixture", "io"]
