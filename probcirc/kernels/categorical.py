"""Categorical input layer: log-probabilities of the data, and expected counts from flows.

Leaves come in runs of k per variable (``layer.k``, ``layer.run_var``). The
counts of one run are a matrix product: flows ``(k, B)`` times the one-hot
encoding of the variable's values ``(B, C)``, computed with exact float32
``tl.dot`` and a fixed order over the batch (deterministic). A missing value
contributes the node's current probabilities times its flow.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import alloc, check_buffer, pow2


@triton.jit
def _cat_fwd_kernel(
    params_ptr,
    node_var_ptr,
    x_ptr,
    miss_ptr,
    mars_ptr,
    n,
    C,
    B,
    x_stride,
    stride,
    start,
    BLOCK_N: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    offs_n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    m = (offs_n < n)[:, None] & (offs_b < B)[None, :]
    var = tl.load(node_var_ptr + offs_n, mask=offs_n < n, other=0).to(tl.int64)
    xy = var[:, None] * x_stride + offs_b[None, :]
    x = tl.load(x_ptr + xy, mask=m, other=0.0)
    missing = tl.load(miss_ptr + xy, mask=m, other=1) != 0
    xi = tl.minimum(tl.maximum(x.to(tl.int64), 0), C - 1)
    p = tl.load(params_ptr + offs_n[:, None] * C + xi, mask=m & ~missing, other=1.0)
    out = tl.where(missing, 0.0, tl.log(p))
    tl.store(mars_ptr + (start + offs_n[:, None]) * stride + offs_b[None, :], out, mask=m)


@triton.jit
def _cat_stats_kernel(
    params_ptr,
    run_var_ptr,
    x_ptr,
    miss_ptr,
    flows_ptr,
    out_ptr,
    k,
    C,
    B,
    x_stride,
    stride,
    start,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    r = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    kmask = offs_k < k
    cmask = offs_c < C
    var = tl.load(run_var_ptr + r).to(tl.int64)
    node = r * k + offs_k
    acc = tl.zeros([BLOCK_K, BLOCK_C], dtype=tl.float32)
    msum = tl.zeros([BLOCK_K], dtype=tl.float32)
    for b0 in range(0, B, BLOCK_B):
        offs_b = b0 + tl.arange(0, BLOCK_B)
        bmask = offs_b < B
        x = tl.load(x_ptr + var * x_stride + offs_b, mask=bmask, other=0.0)
        missing = tl.load(miss_ptr + var * x_stride + offs_b, mask=bmask, other=1) != 0
        xi = tl.minimum(tl.maximum(x.to(tl.int64), 0), C - 1)
        f = tl.load(
            flows_ptr + (start + node[:, None]) * stride + offs_b[None, :],
            mask=kmask[:, None] & bmask[None, :],
            other=0.0,
        )
        hot = ((xi[:, None] == offs_c[None, :]) & ~missing[:, None] & bmask[:, None]).to(tl.float32)
        acc = tl.dot(f, hot, acc, input_precision="ieee")
        msum += tl.sum(tl.where((missing & bmask)[None, :], f, 0.0), axis=1)
    tile = node[:, None] * C + offs_c[None, :]
    m = kmask[:, None] & cmask[None, :]
    p = tl.load(params_ptr + tile, mask=m, other=0.0)
    tl.store(out_ptr + tile, acc + msum[:, None] * p, mask=m)


def _check(layer, x, missing):
    from ..inputs import Categorical

    if not isinstance(layer.dist, Categorical):
        raise TypeError(f"the Triton input kernels handle Categorical leaves, not {layer.dist!r}")
    if x.dtype != torch.float32 or layer.params.dtype != torch.float32:
        raise ValueError("the Triton input kernels need float32 values and parameters")
    # is_contiguous ignores the strides of size-1 dimensions (a batch of one), which the kernels never step along
    if x.shape != missing.shape or not (x.is_contiguous() and missing.is_contiguous()):
        raise ValueError("x and missing must be contiguous node-major (num_vars, B) buffers of the same shape")


def _launch(kernel, grid, layer, var, x, missing, outputs, count, stride, **blocks) -> None:
    """Run ``kernel`` with the arguments both kernels share around their own ``outputs`` and ``count``."""
    C, B = layer.params.shape[1], x.shape[1]
    kernel[grid](
        layer.params.contiguous(),
        var,
        x,
        missing.view(torch.int8),
        *outputs,
        count,
        C,
        B,
        x.stride(0),
        stride,
        layer.start,
        **blocks,
    )


def categorical_forward(layer, mars: torch.Tensor, x: torch.Tensor, missing: torch.Tensor) -> None:
    """``mars[start + j] = log params[j, x[var_j]]``, 0 where the variable is missing (in place)."""
    check_buffer("mars", mars)
    _check(layer, x, missing)
    n, B = layer.params.shape[0], x.shape[1]
    if n == 0 or B == 0:
        return
    bn, bb = 16, pow2(B, 16, 128)
    grid = (triton.cdiv(n, bn), triton.cdiv(B, bb))
    _launch(
        _cat_fwd_kernel, grid, layer, layer.node_var, x, missing, (mars,), n, mars.stride(0), BLOCK_N=bn, BLOCK_B=bb
    )


def categorical_stats(layer, flows: torch.Tensor, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Expected counts ``(n, C)`` from the leaves' flows (as :meth:`InputLayer.em_stats`)."""
    check_buffer("flows", flows)
    _check(layer, x, missing)
    n, C = layer.params.shape
    out = alloc((n, C), flows)
    if n == 0:
        return out
    k = layer.k
    bk, bc, bb = pow2(k), pow2(C), pow2(x.shape[1], 16, 64)
    grid = (n // k, triton.cdiv(k, bk), triton.cdiv(C, bc))
    blocks = dict(BLOCK_K=bk, BLOCK_C=bc, BLOCK_B=bb)
    _launch(_cat_stats_kernel, grid, layer, layer.run_var, x, missing, (flows, out), k, flows.stride(0), **blocks)
    return out
