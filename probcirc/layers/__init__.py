"""Compiled layers: forward (log-space), backward (flows) and top-down passes."""

from .input_layer import InputLayer
from .product_layer import ProductLayer
from .sum_layer import SumLayer, Tape

__all__ = ["InputLayer", "ProductLayer", "SumLayer", "Tape"]
