"""probcirc: probabilistic circuits and the Distribution interface shared by probmod."""

from . import inputs, io, nodes, queries
from .backend import set_backend
from .circuit import ConditionalCircuit, TensorCircuit, compile
from .distribution import Conditional, Distribution
from .gmm import ConditionalMixture, GaussianMixture

__all__ = [
    "Distribution",
    "Conditional",
    "GaussianMixture",
    "ConditionalMixture",
    "TensorCircuit",
    "ConditionalCircuit",
    "compile",
    "io",
    "nodes",
    "inputs",
    "queries",
    "set_backend",
]

#: subpackages loaded on first use, so ``import probcirc; probcirc.structures.HCLT`` works like torch.distributions
_LAZY = ("structures", "learn", "compile", "layers", "kernels", "compress", "colep", "datasets")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
