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
    _first_child: torch.Tensor
    _rest_parent: torch.Tensor
    _rest_child: torch.Tensor

    def __init__(self, parent_idx: torch.Tensor, child_idx: torch.Tensor, num_nodes: int, start: int):
        super().__init__()
        self.start = start
        self.num_nodes = num_nodes
        self.register_buffer("parent_idx", parent_idx.long())
        self.register_buffer("child_idx", child_idx.long())
        # The forward pass copies each product's first child into place and adds the others in edge
        # order: the same sums as adding every edge to zeros, without the zeros or a temporary.
        first, rest_parent, rest_child = _split_first_child(self.parent_idx, self.child_idx, num_nodes)
        self.register_buffer("_first_child", first, persistent=False)
        self.register_buffer("_rest_parent", rest_parent, persistent=False)
        self.register_buffer("_rest_child", rest_child, persistent=False)

    @property
    def stop(self) -> int:
        return self.start + self.num_nodes

    def forward(self, mars: torch.Tensor, max_mode: bool = False) -> None:
        if backend.use_triton(mars):
            from ..kernels import product_forward

            return product_forward(self, mars)
        below = mars[: self.start]  # children come before their parents
        out = torch.index_select(below, 0, self._first_child, out=mars[self.start : self.stop])
        if self._rest_child.numel():
            out.index_add_(0, self._rest_parent, below.index_select(0, self._rest_child))

    def backward(self, mars: torch.Tensor, flows: torch.Tensor, write: bool = False) -> None:
        """Pass each product's flow to its children: set (``write``: this is their only parent) or added."""
        if backend.use_triton(flows):
            from ..kernels import product_backward

            return product_backward(self, mars, flows)
        down = flows[self.start : self.stop].index_select(0, self.parent_idx)
        flows.index_copy_(0, self.child_idx, down) if write else flows.index_add_(0, self.child_idx, down)

    def down(self, active: torch.Tensor, mars: torch.Tensor, choose: str, generator) -> None:
        on = active[self.start : self.stop].index_select(0, self.parent_idx)  # (E, B)
        e, b = on.nonzero(as_tuple=True)
        active[self.child_idx[e], b] = True


def _split_first_child(
    parent_idx: torch.Tensor, child_idx: torch.Tensor, num_nodes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each product's first child (by edge order, one per product in product order), and the other edges in order."""
    e = torch.arange(parent_idx.numel(), device=parent_idx.device)
    first_edge = torch.full((num_nodes,), parent_idx.numel(), dtype=torch.long, device=parent_idx.device)
    first_edge.scatter_reduce_(0, parent_idx, e, "amin")
    if bool((first_edge == parent_idx.numel()).any()):
        raise ValueError("every product node needs at least one child")
    rest = torch.ones_like(parent_idx, dtype=torch.bool)
    rest[first_edge] = False
    return child_idx[first_edge], parent_idx[rest], child_idx[rest]
