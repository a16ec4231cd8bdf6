"""Symbolic circuit -> layered tensor circuit, and the public views applications use (graph, leaf passes)."""

from .circuit import FAMILIES, CompiledCircuit
from .graph import INPUT, PRODUCT, SUM, CircuitGraph, LeafGroup, LeafPass
from .layering import build_layers, levels

__all__ = [
    "FAMILIES",
    "INPUT",
    "PRODUCT",
    "SUM",
    "CircuitGraph",
    "CompiledCircuit",
    "LeafGroup",
    "LeafPass",
    "build_layers",
    "levels",
]
