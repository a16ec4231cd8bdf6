"""The EM parameter update, θ ← (1 - s)·θ + s·(F + α/|ch|) / (ΣF + α), one row per node.

Rows that received no flow and no pseudocount (ΣF + α = 0) keep their
parameters, as in the torch path. With an edge mask, |ch| counts the node's
edges and absent edges stay exactly 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import alloc, cached, pow2


@triton.jit
def _smoothed_flows(flow_ptr, mask_ptr, offs_r, rmask, k0, K, share, MASKED: tl.constexpr, BLOCK_K: tl.constexpr):
    """One (BLOCK_R, BLOCK_K) tile of F + α/|ch| (0 off the edge mask and outside the layer), and its offsets."""
    offs_k = k0 + tl.arange(0, BLOCK_K)
    m = rmask[:, None] & (offs_k < K)[None, :]
    idx = offs_r[:, None] * K + offs_k[None, :]
    s = tl.load(flow_ptr + idx, mask=m, other=0.0) + share[:, None]
    if MASKED:
        s = tl.where(tl.load(mask_ptr + idx, mask=m, other=0) != 0, s, 0.0)
    return tl.where(m, s, 0.0), idx, m


@triton.jit
def _em_kernel(
    theta_ptr,
    flow_ptr,
    mask_ptr,
    nch_ptr,
    out_ptr,
    R,
    K,
    step,
    alpha,
    MASKED: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    offs_r = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = offs_r < R
    nch = tl.load(nch_ptr + offs_r, mask=rmask, other=1.0)
    share = alpha / tl.where(nch > 0, nch, 1.0)
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):  # pass 1: the normaliser ΣF + α
        s, idx, m = _smoothed_flows(flow_ptr, mask_ptr, offs_r, rmask, k0, K, share, MASKED, BLOCK_K)
        total += tl.sum(s, axis=1)
    keep = (total > 0) & (nch > 0)
    safe = tl.where(keep, total, 1.0)
    for k0 in range(0, K, BLOCK_K):  # pass 2: the update
        s, idx, m = _smoothed_flows(flow_ptr, mask_ptr, offs_r, rmask, k0, K, share, MASKED, BLOCK_K)
        theta = tl.load(theta_ptr + idx, mask=m, other=0.0)
        new = tl.where(keep[:, None], s / safe[:, None], theta)
        tl.store(out_ptr + idx, theta * (1.0 - step) + step * new, mask=m)


def _launch(theta, flows, mask, nch, out, step, alpha):
    R, K = theta.shape
    if R == 0 or K == 0:
        return
    br, bk = 16, pow2(K, 16, 128)
    _em_kernel[(triton.cdiv(R, br),)](
        theta,
        flows,
        theta if mask is None else mask,
        nch,
        out,
        R,
        K,
        float(step),
        float(alpha),
        MASKED=mask is not None,
        BLOCK_R=br,
        BLOCK_K=bk,
    )


def em_update(layer, edge_flows: torch.Tensor, step_size: float, pseudocount: float) -> None:
    """In-place EM update of a sum layer's weights from its edge flows ``(G, n_out, n_in)``
    (same contract as :meth:`probcirc.layers.SumLayer.em_update`)."""
    w = layer.weight
    if w.dtype != torch.float32 or not w.is_contiguous():
        raise ValueError("the Triton EM update needs contiguous float32 weights")
    g, n_out, n_in = w.shape

    def build():
        if layer.edge_mask is None:
            return None, torch.full((g * n_out,), float(n_in), dtype=torch.float32, device=w.device)
        mask = layer.edge_mask.to(torch.bool)
        return mask.to(torch.int8).reshape(g * n_out, n_in).contiguous(), mask.sum(-1).reshape(-1).to(torch.float32)

    mask, nch = cached(layer, "em", (layer.edge_mask, layer.child_idx), build)
    theta = w.view(g * n_out, n_in)
    _launch(
        theta,
        edge_flows.to(torch.float32).reshape(g * n_out, n_in).contiguous(),
        mask,
        nch,
        theta,
        step_size,
        pseudocount,
    )


def categorical_m_step(stats: torch.Tensor, params: torch.Tensor, pseudocount: float) -> torch.Tensor:
    """New categorical probabilities ``(n, C)`` from expected counts (as ``Categorical.m_step``)."""
    n, c = params.shape
    params = params.contiguous()
    out = alloc((n, c), params)
    nch = torch.full((n,), float(c), dtype=torch.float32, device=params.device)
    _launch(params, stats.to(torch.float32).contiguous(), None, nch, out, 1.0, pseudocount)
    return out
