"""From a symbolic circuit to layers: depth assignment and slot allocation.

Every node owns one slot (a row) of a flat buffer of log-values; slot 0 is
reserved and holds log 1. Inputs sit at level 0. A
product sits at the first odd level above all its children and a sum at the
first even level above them, so products and sums alternate and a sum of
sums still follows its children.
"""

from __future__ import annotations

from collections import defaultdict
from typing import cast

import torch

from ..layers import InputLayer, ProductLayer, SumLayer
from ..nodes import InputNodes, NodeGroup, ProdNodes, SumNodes


def levels(order: list[NodeGroup]) -> dict[int, int]:
    level: dict[int, int] = {}
    for node in order:
        if isinstance(node, InputNodes):
            level[node.id] = 0
            continue
        top = max(level[c.id] for c in node.children)
        parity = 1 if isinstance(node, ProdNodes) else 0
        level[node.id] = top + 1 if (top + 1) % 2 == parity else top + 2
    return level


def build_layers(root: NodeGroup, generator: torch.Generator, dtype: torch.dtype) -> tuple[list, dict[int, int], int]:
    """Return (layers in execution order, first slot of every group, number of slots).

    Everything is built on the CPU, where ``generator`` draws, so a seed gives the same circuit
    whatever the target device; the compiled circuit moves with ``.to(device)``.
    """
    order = root.topological()
    level = levels(order)
    first: dict[int, int] = {}
    next_slot = 1
    layers: list = []

    by_family: dict[tuple, list[InputNodes]] = defaultdict(list)
    for node in order:
        if isinstance(node, InputNodes):
            by_family[node.dist.key()].append(node)
    for leaves in by_family.values():
        start = next_slot
        node_var, params = [], []
        for leaf in leaves:
            first[leaf.id] = next_slot
            next_slot += leaf.num_nodes
            node_var.append(torch.full((leaf.num_nodes,), leaf.var, device="cpu"))
            params.append(_input_params(leaf, generator))
        layers.append(InputLayer(leaves[0].dist, torch.cat(node_var), torch.cat(params).to(dtype), start))

    by_level: dict[int, list[NodeGroup]] = defaultdict(list)
    for node in order:
        if not isinstance(node, InputNodes):
            by_level[level[node.id]].append(node)
    for lvl in sorted(by_level):
        groups = by_level[lvl]
        if lvl % 2 == 1:
            start = next_slot
            parents, kids = [], []
            for g in groups:
                first[g.id] = next_slot
                local = next_slot - start + torch.arange(g.num_nodes, device="cpu")
                next_slot += g.num_nodes
                for c in g.children:
                    parents.append(local)
                    kids.append(first[c.id] + torch.arange(g.num_nodes, device="cpu"))
            layers.append(ProductLayer(torch.cat(parents), torch.cat(kids), next_slot - start, start))
        else:
            buckets: dict[tuple, list[SumNodes]] = defaultdict(list)
            for g in cast(list[SumNodes], groups):  # even levels above 0 hold only sums
                buckets[(g.num_nodes, g.num_inputs, g.edges is not None)].append(g)
            for (n_out, _n_in, sparse), members in buckets.items():
                start = next_slot
                child_idx, weights, masks = [], [], []
                for g in members:
                    first[g.id] = next_slot
                    next_slot += n_out
                    kid_slots = [first[c.id] + torch.arange(c.num_nodes, device="cpu") for c in g.children]
                    child_idx.append(torch.cat(kid_slots))
                    w, m = _sum_params(g, generator)
                    weights.append(w)
                    masks.append(m)
                mask = torch.stack(masks) if sparse else None
                layers.append(SumLayer(torch.stack(child_idx), torch.stack(weights).to(dtype), mask, start))
    return layers, first, next_slot


def _input_params(g: InputNodes, generator) -> torch.Tensor:
    if g.params is None:
        return g.dist.init_params(g.num_nodes, generator)
    params = torch.as_tensor(g.params, dtype=torch.float64, device="cpu")
    if params.shape != (g.num_nodes, g.dist.num_params):
        raise ValueError(
            f"params of {g.name} must have shape {(g.num_nodes, g.dist.num_params)}, got {tuple(params.shape)}"
        )
    g.dist.check_params(params)
    return params


def _sum_params(g: SumNodes, generator) -> tuple[torch.Tensor, torch.Tensor]:
    mask = g.edges if g.edges is not None else torch.ones(g.num_nodes, g.num_inputs, dtype=torch.bool, device="cpu")
    if g.params is None:
        w = (torch.rand(g.num_nodes, g.num_inputs, generator=generator, dtype=torch.float64, device="cpu") + 0.5) * mask
        return w / w.sum(-1, keepdim=True), mask
    w = torch.as_tensor(g.params, dtype=torch.float64, device="cpu")
    if w.shape != mask.shape:
        raise ValueError(f"params of {g.name} must have shape {tuple(mask.shape)}, got {tuple(w.shape)}")
    if bool((w < 0).any()) or bool((w * ~mask).any()):
        raise ValueError(f"params of {g.name} must be non-negative and zero off the edges")
    if not torch.allclose(w.sum(-1), torch.ones(g.num_nodes, dtype=torch.float64, device="cpu"), atol=1e-6):
        raise ValueError(f"params of {g.name} must sum to 1 per node")
    return w, mask
