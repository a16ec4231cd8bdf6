"""probcirc: probabilistic circuits and the Distribution interface shared by probmod."""

from . import inputs, io, nodes, queries
from .backend import set_backend
from .circuit import ConditionalCircuit, TensorCircuit, compile
from .distribution import Distribution
from .gmm import ConditionalMixture, GaussianMixture

__all__ = ["Distribution", "GaussianMixture", "ConditionalMixture", "TensorCircuit", "ConditionalCircuit", "compile", "io", "nodes",
           "inputs", "queries", "set_backend"]
