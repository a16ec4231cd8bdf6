"""The engine's two public views for applications: a node-level graph, and leaf passes.

Applications (the codec, COLEP's reasoning, soft evidence) need the circuit's
structure or want to supply their own leaf values. They get both here, in
terms of nodes and leaf groups, never of the engine's internal buffer layout,
which may change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..inputs import InputDist

__all__ = ["INPUT", "PRODUCT", "SUM", "CircuitGraph", "LeafGroup", "LeafPass"]

#: node kinds in :attr:`CircuitGraph.kind`
INPUT, PRODUCT, SUM = 1, 2, 3


@dataclass(frozen=True)
class LeafGroup:
    """The input nodes of one leaf family, in a fixed order shared by every view.

    Attributes:
        dist: the leaf family (e.g. ``Bernoulli()``), shared by all of them.
        nodes: ``(n,)`` long: their ids in :class:`CircuitGraph` (ascending).
        var: ``(n,)`` long: the variable each one reads.
        params: ``(n, P)``: their parameters in the family's linear-space layout
            (a view of the circuit's own tensor; do not modify it).
    """

    dist: InputDist
    nodes: torch.Tensor
    var: torch.Tensor
    params: torch.Tensor


@dataclass(frozen=True)
class CircuitGraph:
    """A circuit as plain nodes and edges, independent of how the engine lays it out.

    Nodes are numbered ``0..N-1`` so that every child comes before its parents;
    the root is node ``N-1``. Edges are stored in CSR form: the children of node
    ``n`` are ``child[child_ptr[n] : child_ptr[n + 1]]``, in the order the circuit
    was built with, and ``weight`` holds the matching sum weights (1 on a
    product's edges). Input nodes have no children. Every tensor is on the
    circuit's device; float tensors have its dtype.

    Attributes:
        kind: ``(N,)`` int8: :data:`INPUT`, :data:`PRODUCT` or :data:`SUM`.
        child_ptr: ``(N + 1,)`` long.
        child: ``(E,)`` long.
        weight: ``(E,)`` float.
        var: ``(N,)`` long: an input node's variable, -1 for inner nodes.
        leaves: the input nodes grouped by family, as :class:`LeafGroup`.
        num_vars: number of variables D.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Bernoulli
        >>> pc = probcirc.compile(summate(multiply(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli())), num_nodes=1))
        >>> g = pc.graph()
        >>> g.kind.tolist()                       # 4 leaves, 2 products, the root sum
        [1, 1, 1, 1, 2, 2, 3]
        >>> g.children(4).tolist(), g.children(6).tolist()
        ([0, 2], [4, 5])
    """

    kind: torch.Tensor
    child_ptr: torch.Tensor
    child: torch.Tensor
    weight: torch.Tensor
    var: torch.Tensor
    leaves: tuple[LeafGroup, ...]
    num_vars: int

    @property
    def num_nodes(self) -> int:
        return int(self.kind.numel())

    def children(self, node: int) -> torch.Tensor:
        """The children of ``node``, in order."""
        return self.child[self.child_ptr[node] : self.child_ptr[node + 1]]


@dataclass(frozen=True)
class LeafPass:
    """What :meth:`~probcirc.compile.CompiledCircuit.forward_with_leaves` returns.

    Attributes:
        log_value: ``(B,)``: the root's log-value with the supplied leaf values.
        leaf_flows: one ``(n, B)`` tensor per :class:`LeafGroup` (``None`` unless
            asked for): each leaf's flow, ``L_n · ∂root/∂L_n / root``. For a smooth,
            decomposable circuit the flows of one variable's leaves sum to 1.
    """

    log_value: torch.Tensor
    leaf_flows: tuple[torch.Tensor, ...] | None = None
