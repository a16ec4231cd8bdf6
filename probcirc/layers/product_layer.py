"""Product layer: sums of children's log-values, as a segment sum over an edge list."""

from __future__ import annotations

import torch
from torch import nn

from .. import backend


class ProductLayer(nn.Module):
    """Products of one depth, given as edges ``(parent_idx[e], child_idx[e])``.

    An edge list rather than a padded table keeps one wide product (a tree
    node with a hundred children) from padding every other. Nothing is stored
    for the backward pass: a product's flow passes unchanged to each child,
    so the index tensors are all it needs.
    """

    # Buffers, declared so type checkers do not read them as Module.__getattr__'s ``Tensor | Module``.
    parent_idx: torch.Tensor
    child_idx: torch.Tensor

    def __init__(self, parent_idx: torch.Tensor, child_idx: torch.Tensor, num_nodes: int, start: int):
        super().__init__()
        self.start = start
        self.num_nodes = num_nodes
        self.register_buffer("parent_idx", parent_idx.long())
        self.register_buffer("child_idx", child_idx.long())

    @property
    def stop(self) -> int:
        return self.start + self.num_nodes

    def forward(self, mars: torch.Tensor, max_mode: bool = False) -> None:
        if backend.use_triton(mars):
            from ..kernels import product_forward

            return product_forward(self, mars)
        out = mars.new_zeros(self.num_nodes, mars.shape[1])
        out.index_add_(0, self.parent_idx, mars.index_select(0, self.child_idx))
        mars[self.start : self.stop] = out

    def backward(self, mars: torch.Tensor, flows: torch.Tensor) -> None:
        if backend.use_triton(flows):
            from ..kernels import product_backward

            return product_backward(self, mars, flows)
        flows.index_add_(0, self.child_idx, flows[self.start : self.stop].index_select(0, self.parent_idx))

    def down(self, active: torch.Tensor, mars: torch.Tensor, choose: str, generator) -> None:
        on = active[self.start : self.stop].index_select(0, self.parent_idx)  # (E, B)
        e, b = on.nonzero(as_tuple=True)
        active[self.child_idx[e], b] = True
