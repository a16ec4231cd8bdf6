"""Symbolic circuit -> layered tensor circuit."""

from .circuit import FAMILIES, CompiledCircuit
from .layering import build_layers, levels

__all__ = ["CompiledCircuit", "build_layers", "levels", "FAMILIES"]
