"""Product layer: forward (sum of children's log-values) and backward (flows to children).

Both are segment sums over the layer's edge list, sorted once per layer: by
parent for the forward pass (CSR), by child for the backward pass (CSC), so a
child shared by several parents receives one deterministic sum instead of
racing atomic adds.
"""

from __future__ import annotations

import torch

from ._common import cached, check_buffer, csr, segment_sum


def _by_parent(layer):
    def build():
        rows, ptr = csr(layer.parent_idx, layer.child_idx, layer.num_nodes)
        dst = torch.arange(layer.start, layer.stop, dtype=torch.int64, device=layer.parent_idx.device)
        return rows, ptr, dst

    return cached(layer, "by_parent", (layer.parent_idx, layer.child_idx), build)


def _by_child(layer):
    def build():
        uniq, inverse = torch.unique(layer.child_idx, return_inverse=True)
        rows, ptr = csr(inverse, layer.parent_idx + layer.start, uniq.numel())
        return rows, ptr, uniq.contiguous()

    return cached(layer, "by_child", (layer.parent_idx, layer.child_idx), build)


def product_forward(layer, mars: torch.Tensor) -> None:
    """``mars[start + p] = Σ_{edges (p, c)} mars[c]`` for the layer's products (in place)."""
    check_buffer("mars", mars)
    rows, ptr, dst = _by_parent(layer)
    segment_sum(mars, rows, ptr, mars, dst, accumulate=False)


def product_backward(layer, mars: torch.Tensor, flows: torch.Tensor) -> None:
    """``flows[c] += Σ_{edges (p, c)} flows[start + p]`` (in place)."""
    check_buffer("flows", flows)
    rows, ptr, dst = _by_child(layer)
    segment_sum(flows, rows, ptr, flows, dst, accumulate=True)
