"""Symbolic circuits: vectorised groups of input, product and sum nodes.

A node group holds ``num_nodes`` nodes of one kind over one scope. Products
are element-wise: node i of a product group multiplies node i of every child
group. A sum group's nodes each mix all nodes of all its child groups (dense)
or a chosen subset of them (block-sparse ``edges``).

Structure is checked as it is built: a product must be decomposable (its
children's scopes are disjoint) and a sum smooth (its children share one
scope). A violation raises ValueError naming the offending node.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch

from ..inputs import InputDist

__all__ = ["NodeGroup", "InputNodes", "ProdNodes", "SumNodes", "inputs", "multiply", "summate"]

_ids = itertools.count()


class NodeGroup:
    """Base of the three node-group kinds; ``scope`` is a frozenset of variable indices."""

    kind: str = ""

    def __init__(self, children: Sequence[NodeGroup], num_nodes: int, scope: frozenset, name: str | None):
        if not isinstance(num_nodes, int) or num_nodes < 1:
            raise ValueError(f"num_nodes must be a positive integer, got {num_nodes!r}")
        self.children = tuple(children)
        self.num_nodes = num_nodes
        self.scope = scope
        self.id = next(_ids)
        self.name = name or f"{self.kind}#{self.id}"

    def __repr__(self) -> str:
        more = "..." if len(self.scope) > 8 else ""
        return f"{self.name}(num_nodes={self.num_nodes}, scope={sorted(self.scope)[:8]}{more})"

    def topological(self) -> list[NodeGroup]:
        """Every group under this one (itself included), children before parents."""
        order, seen = [], set()
        stack: list[tuple[NodeGroup, Iterator]] = [(self, iter(self.children))]
        seen.add(self.id)
        while stack:
            node, it = stack[-1]
            child = next(it, None)
            if child is None:
                order.append(node)
                stack.pop()
            elif child.id not in seen:
                seen.add(child.id)
                stack.append((child, iter(child.children)))
        return order


class InputNodes(NodeGroup):
    """``num_nodes`` leaves over one variable, each with its own parameters of family ``dist``."""

    kind = "input"

    def __init__(
        self, var: int, num_nodes: int, dist: InputDist, params: torch.Tensor | None = None, name: str | None = None
    ):
        if not isinstance(dist, InputDist):
            raise TypeError(f"dist must be an InputDist such as Categorical(256), got {type(dist).__name__}")
        if int(var) != var or var < 0:
            raise ValueError(f"var must be a non-negative integer, got {var!r}")
        super().__init__((), num_nodes, frozenset([int(var)]), name)
        self.var = int(var)
        self.dist = dist
        self.params = params


class ProdNodes(NodeGroup):
    """Element-wise products: node i multiplies node i of every child group."""

    kind = "product"

    def __init__(self, children: Sequence[NodeGroup], name: str | None = None):
        if len(children) < 1:
            raise ValueError("multiply() needs at least one child group")
        sizes = {c.num_nodes for c in children}
        if len(sizes) != 1:
            raise ValueError(
                f"multiply(): children have different numbers of nodes {[c.num_nodes for c in children]}; "
                "element-wise products need equal sizes"
            )
        scope: frozenset = frozenset()
        for child in children:
            overlap = scope & child.scope
            if overlap:
                raise ValueError(
                    f"product {name or '(new)'} is not decomposable: child {child.name} shares variables "
                    f"{sorted(overlap)[:5]} with an earlier child"
                )
            scope = scope | child.scope
        super().__init__(children, sizes.pop(), scope, name)


class SumNodes(NodeGroup):
    """Mixtures: each node mixes the nodes of all child groups, concatenated in order.

    ``edges``, if given, is a boolean ``(num_nodes, total_child_nodes)`` mask of
    the edges that exist (block-sparse sums); every node needs at least one.
    ``params`` are the mixture weights, same shape, rows summing to 1.
    """

    kind = "sum"

    def __init__(
        self,
        children: Sequence[NodeGroup],
        num_nodes: int,
        edges: torch.Tensor | None = None,
        params: torch.Tensor | None = None,
        name: str | None = None,
    ):
        if len(children) < 1:
            raise ValueError("summate() needs at least one child group")
        scope = children[0].scope
        for child in children[1:]:
            if child.scope != scope:
                raise ValueError(
                    f"sum {name or '(new)'} is not smooth: child {child.name} has scope {sorted(child.scope)[:8]} "
                    f"but {children[0].name} has {sorted(scope)[:8]}"
                )
        super().__init__(children, num_nodes, scope, name)
        self.num_inputs = sum(c.num_nodes for c in children)
        if edges is not None:
            edges = torch.as_tensor(edges, dtype=torch.bool)
            if edges.shape != (num_nodes, self.num_inputs):
                raise ValueError(
                    f"edges of {self.name} must have shape {(num_nodes, self.num_inputs)}, got {tuple(edges.shape)}"
                )
            if not bool(edges.any(1).all()):
                raise ValueError(f"edges of {self.name} leave node {int((~edges.any(1)).nonzero()[0])} with no child")
        self.edges = edges
        self.params = params


def inputs(
    var: int, num_nodes: int, dist: InputDist, params: torch.Tensor | None = None, name: str | None = None
) -> InputNodes:
    """A group of ``num_nodes`` leaves over variable ``var``.

    Example:
        >>> from probcirc.inputs import Categorical
        >>> inputs(0, num_nodes=4, dist=Categorical(3)).scope
        frozenset({0})
    """
    return InputNodes(var, num_nodes, dist, params, name)


def multiply(*children: NodeGroup, name: str | None = None) -> ProdNodes:
    """Element-wise products of groups with disjoint scopes and equal sizes.

    Example:
        >>> from probcirc.inputs import Bernoulli
        >>> p = multiply(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli()))
        >>> sorted(p.scope), p.num_nodes
        ([0, 1], 2)
    """
    return ProdNodes(children, name)


def summate(
    *children: NodeGroup,
    num_nodes: int,
    edges: torch.Tensor | None = None,
    params: torch.Tensor | None = None,
    name: str | None = None,
) -> SumNodes:
    """``num_nodes`` mixtures over all nodes of ``children`` (which share one scope).

    Example:
        >>> from probcirc.inputs import Bernoulli
        >>> s = summate(inputs(0, 3, Bernoulli()), num_nodes=1)
        >>> s.num_inputs
        3
    """
    return SumNodes(children, num_nodes, edges, params, name)
