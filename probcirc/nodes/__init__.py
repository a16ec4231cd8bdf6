"""The symbolic circuit: node groups and the functions that build them."""

from .groups import InputNodes, NodeGroup, ProdNodes, SumNodes, inputs, multiply, summate

__all__ = ["NodeGroup", "InputNodes", "ProdNodes", "SumNodes", "inputs", "multiply", "summate"]
