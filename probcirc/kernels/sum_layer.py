"""Sum layer: log-sum-exp forward, flows and weight gradient backward, on blocks.

Layout (as :class:`probcirc.layers.SumLayer`): ``child_idx (G, n_in)``,
``weight (G, n_out, n_in)`` in linear space, outputs in rows
``start + g·n_out + o`` of the node-major buffer ``mars (num_slots, B)``.

One program owns a tile ``(BLOCK_O outputs, BLOCK_B samples)`` of one group.
It takes each sample's maximum over the group's children (as the torch path
does, so the scaled values ``e`` are the same numbers; in a separate pass
when the group has several output blocks), then accumulates
``W[o-block, k-block] @ exp(x[k-block] - top)`` with ``tl.dot`` over the
blocks of children, and returns ``log(acc) + top``. Groups whose children are
all -inf use top = 0 and give -inf, never NaN. With an ``edge_mask`` the
layer is block-sparse: a per-layer table marks the (o-block, k-block) tiles
holding at least one edge, and the others are skipped in every kernel.

Backward: one kernel recomputes ``y = W e`` and stores ``ratio = F / y``
(0 where y = 0) and the per-sample maxima; one forms the child flows
``e ⊙ (Wᵀ ratio)`` and adds them to ``flows`` (directly when the layer's
children are distinct, else through a deterministic segment sum); one forms
the weight gradient ``Σ_b ratio e`` (times the weights: the edge flows), zero
off the edge mask.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import TUNE, alloc, cached, check_buffer, csr, mm, pow2, precision_code, segment_sum


@triton.jit
def _group_max(mars_ptr, child_ptr, g, offs_b, bmask, stride, n_in, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
    """Per-sample max over the group's children, with -inf replaced by 0."""
    top = tl.full([BLOCK_B], float("-inf"), dtype=tl.float32)
    for k0 in range(0, n_in, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        kmask = offs_k < n_in
        rows = tl.load(child_ptr + g * n_in + offs_k, mask=kmask, other=0).to(tl.int64)
        x = tl.load(
            mars_ptr + rows[:, None] * stride + offs_b[None, :],
            mask=kmask[:, None] & bmask[None, :],
            other=float("-inf"),
        )
        top = tl.maximum(top, tl.max(x, axis=0))
    return tl.where(top == float("-inf"), 0.0, top)


@triton.jit
def _scaled(mars_ptr, child_ptr, g, offs_k, kmask, offs_b, bmask, top, stride, n_in):
    """exp(x - top) for a (BLOCK_K, BLOCK_B) tile of children; 0 outside the layer."""
    rows = tl.load(child_ptr + g * n_in + offs_k, mask=kmask, other=0).to(tl.int64)
    m = kmask[:, None] & bmask[None, :]
    x = tl.load(mars_ptr + rows[:, None] * stride + offs_b[None, :], mask=m, other=float("-inf"))
    return tl.where(m, tl.exp(x - top[None, :]), 0.0)


@triton.jit
def _live(blk_ptr, g, nob, nkb, ob, kb, SPARSE: tl.constexpr):
    """Whether tile (o-block ob, k-block kb) of group g holds an edge: always, in a dense layer."""
    if SPARSE:
        return tl.load(blk_ptr + (g * nob + ob) * nkb + kb) != 0
    else:
        return True


@triton.jit
def _ratio_tile(ratio_ptr, g, n_out, offs_o, omask, offs_b, bmask, B):
    """The ratios F / y ``(BLOCK_O, BLOCK_B)`` that the backward forward pass stored, 0 outside the layer."""
    return tl.load(
        ratio_ptr + (g * n_out + offs_o[:, None]) * B + offs_b[None, :],
        mask=omask[:, None] & bmask[None, :],
        other=0.0,
    )


@triton.jit
def _group_max_kernel(mars_ptr, child_ptr, top_ptr, B, stride, n_in, BLOCK_K: tl.constexpr, BLOCK_B: tl.constexpr):
    """top[g, b]: the per-sample maxima, once per group, for layers with several output blocks."""
    g = tl.program_id(0).to(tl.int64)
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = offs_b < B
    top = _group_max(mars_ptr, child_ptr, g, offs_b, bmask, stride, n_in, BLOCK_K, BLOCK_B)
    tl.store(top_ptr + g * B + offs_b, top, mask=bmask)


@triton.jit
def _sum_fwd_kernel(
    mars_ptr,
    child_ptr,
    w_ptr,
    blk_ptr,
    flows_ptr,
    ratio_ptr,
    top_ptr,
    B,
    stride,
    n_in,
    n_out,
    start,
    nob,
    nkb,
    SPARSE: tl.constexpr,
    BACKWARD: tl.constexpr,
    TOP_GIVEN: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    po = tl.program_id(1)
    offs_b = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = offs_b < B
    offs_o = po * BLOCK_O + tl.arange(0, BLOCK_O)
    omask = offs_o < n_out
    if TOP_GIVEN:
        top = tl.load(top_ptr + g * B + offs_b, mask=bmask, other=0.0)
    else:
        top = _group_max(mars_ptr, child_ptr, g, offs_b, bmask, stride, n_in, BLOCK_K, BLOCK_B)
    acc = tl.zeros([BLOCK_O, BLOCK_B], dtype=tl.float32)
    for kb in range(0, nkb):
        if _live(blk_ptr, g, nob, nkb, po, kb, SPARSE):
            offs_k = kb * BLOCK_K + tl.arange(0, BLOCK_K)
            kmask = offs_k < n_in
            e = _scaled(mars_ptr, child_ptr, g, offs_k, kmask, offs_b, bmask, top, stride, n_in)
            w = tl.load(
                w_ptr + g * n_out * n_in + offs_o[:, None] * n_in + offs_k[None, :],
                mask=omask[:, None] & kmask[None, :],
                other=0.0,
            )
            acc = mm(w, e, acc, PRECISION)
    rows = start + g * n_out + offs_o
    m = omask[:, None] & bmask[None, :]
    if BACKWARD:
        f = tl.load(flows_ptr + rows[:, None] * stride + offs_b[None, :], mask=m, other=0.0)
        pos = acc > 0
        ratio = tl.where(pos, f / tl.where(pos, acc, 1.0), 0.0)
        tl.store(ratio_ptr + (g * n_out + offs_o[:, None]) * B + offs_b[None, :], ratio, mask=m)
        # Nested on purpose: TOP_GIVEN is a constexpr Triton drops at compile time, po a runtime value.
        if not TOP_GIVEN:  # noqa: SIM102
            if po == 0:
                tl.store(top_ptr + g * B + offs_b, top, mask=bmask)
    else:
        tl.store(mars_ptr + rows[:, None] * stride + offs_b[None, :], tl.log(acc) + top[None, :], mask=m)


@triton.jit
def _sum_bwd_in_kernel(
    mars_ptr,
    child_ptr,
    w_ptr,
    blk_ptr,
    ratio_ptr,
    top_ptr,
    dst_ptr,
    B,
    stride,
    dst_stride,
    n_in,
    n_out,
    nob,
    nkb,
    SPARSE: tl.constexpr,
    DIRECT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    pk = tl.program_id(1)
    offs_b = tl.program_id(2) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = offs_b < B
    offs_k = pk * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = offs_k < n_in
    top = tl.load(top_ptr + g * B + offs_b, mask=bmask, other=0.0)
    e = _scaled(mars_ptr, child_ptr, g, offs_k, kmask, offs_b, bmask, top, stride, n_in)
    acc = tl.zeros([BLOCK_K, BLOCK_B], dtype=tl.float32)
    for ob in range(0, nob):
        if _live(blk_ptr, g, nob, nkb, ob, pk, SPARSE):
            offs_o = ob * BLOCK_O + tl.arange(0, BLOCK_O)
            omask = offs_o < n_out
            wt = tl.load(
                w_ptr + g * n_out * n_in + offs_o[None, :] * n_in + offs_k[:, None],
                mask=kmask[:, None] & omask[None, :],
                other=0.0,
            )
            r = _ratio_tile(ratio_ptr, g, n_out, offs_o, omask, offs_b, bmask, B)
            acc = mm(wt, r, acc, PRECISION)
    f_in = e * acc
    m = kmask[:, None] & bmask[None, :]
    if DIRECT:
        rows = tl.load(child_ptr + g * n_in + offs_k, mask=kmask, other=0).to(tl.int64)
        ptrs = dst_ptr + rows[:, None] * dst_stride + offs_b[None, :]
        old = tl.load(ptrs, mask=m, other=0.0)
        tl.store(ptrs, old + f_in, mask=m)
    else:
        tl.store(dst_ptr + (g * n_in + offs_k[:, None]) * dst_stride + offs_b[None, :], f_in, mask=m)


@triton.jit
def _sum_grad_kernel(
    mars_ptr,
    child_ptr,
    blk_ptr,
    mask_ptr,
    ratio_ptr,
    top_ptr,
    grad_ptr,
    B,
    stride,
    n_in,
    n_out,
    nob,
    nkb,
    SPARSE: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    g = tl.program_id(0).to(tl.int64)
    po = tl.program_id(1)
    pk = tl.program_id(2)
    offs_o = po * BLOCK_O + tl.arange(0, BLOCK_O)
    omask = offs_o < n_out
    offs_k = pk * BLOCK_K + tl.arange(0, BLOCK_K)
    kmask = offs_k < n_in
    acc = tl.zeros([BLOCK_O, BLOCK_K], dtype=tl.float32)
    if _live(blk_ptr, g, nob, nkb, po, pk, SPARSE):
        for b0 in range(0, B, BLOCK_B):
            offs_b = b0 + tl.arange(0, BLOCK_B)
            bmask = offs_b < B
            top = tl.load(top_ptr + g * B + offs_b, mask=bmask, other=0.0)
            e = _scaled(mars_ptr, child_ptr, g, offs_k, kmask, offs_b, bmask, top, stride, n_in)
            r = _ratio_tile(ratio_ptr, g, n_out, offs_o, omask, offs_b, bmask, B)
            acc = mm(r, tl.trans(e), acc, PRECISION)
    tile = g * n_out * n_in + offs_o[:, None] * n_in + offs_k[None, :]
    m = omask[:, None] & kmask[None, :]
    if SPARSE:
        on = tl.load(mask_ptr + tile, mask=m, other=0) != 0
        acc = tl.where(on, acc, 0.0)
    tl.store(grad_ptr + tile, acc, mask=m)


class _Meta:
    """Per-layer, per-device constants: block sizes, live-tile table, child grouping."""

    def __init__(self, layer):
        g, n_out, n_in = layer.weight.shape
        self.BO, self.BK = pow2(n_out, 16, TUNE["max_block"]), pow2(n_in, 16, TUNE["max_block"])
        self.nob, self.nkb = triton.cdiv(n_out, self.BO), triton.cdiv(n_in, self.BK)
        child = layer.child_idx.reshape(-1)
        self.child_idx = layer.child_idx.contiguous()
        self.sparse = layer.edge_mask is not None
        if self.sparse:
            mask = layer.edge_mask.to(torch.bool)
            padded = torch.zeros(g, self.nob * self.BO, self.nkb * self.BK, dtype=torch.bool, device=mask.device)
            padded[:, :n_out, :n_in] = mask
            live = padded.view(g, self.nob, self.BO, self.nkb, self.BK).any(4).any(2)
            self.blk = live.to(torch.int32).contiguous()
            self.mask = mask.to(torch.int8).contiguous()
            self.live_fraction = float(live.float().mean()) if live.numel() else 0.0
        else:
            self.blk = self.mask = None
            self.live_fraction = 1.0
        uniq, inverse = torch.unique(child, return_inverse=True)
        self.direct = uniq.numel() == child.numel()
        if not self.direct:
            self.src_rows, self.seg = csr(inverse, torch.arange(child.numel(), device=child.device), uniq.numel())
            self.dst_rows = uniq.contiguous()


def _meta(layer) -> _Meta:
    return cached(layer, f"sum{TUNE['max_block']}", (layer.child_idx, layer.edge_mask), lambda: _Meta(layer))


def _maxima(meta: _Meta, mars: torch.Tensor, g: int, n_in: int, bb: int) -> torch.Tensor:
    """Per-group, per-sample maxima ``(G, B)`` in their own pass (read by every output block)."""
    B = mars.shape[1]
    top = alloc((g, B), mars)
    _group_max_kernel[(g, triton.cdiv(B, bb))](
        mars, meta.child_idx, top, B, mars.stride(0), n_in, BLOCK_K=meta.BK, BLOCK_B=bb, num_warps=TUNE["num_warps"]
    )
    return top


def _block_b(B: int) -> int:
    return pow2(B, 16, TUNE["block_b"])


def _tiles(meta: _Meta, code: int, bb: int) -> dict:
    """The launch options every sum kernel takes."""
    return dict(
        SPARSE=meta.sparse, PRECISION=code, BLOCK_O=meta.BO, BLOCK_K=meta.BK, BLOCK_B=bb, num_warps=TUNE["num_warps"]
    )


def _forward(layer, meta: _Meta, mars: torch.Tensor, top: torch.Tensor, code: int, bb: int, flows=None, ratio=None):
    """Launch the forward kernel: into ``mars``, or with ``flows`` the ratios F / y into ``ratio`` (and maxima into
    ``top`` where it computes them)."""
    g, n_out, n_in = layer.weight.shape
    B = mars.shape[1]
    w = layer.weight.contiguous()
    backward = flows is not None
    _sum_fwd_kernel[(g, meta.nob, triton.cdiv(B, bb))](
        mars,
        meta.child_idx,
        w,
        meta.blk if meta.sparse else w,
        flows if backward else mars,
        ratio if backward else w,
        top,
        B,
        mars.stride(0),
        n_in,
        n_out,
        layer.start,
        meta.nob,
        meta.nkb,
        BACKWARD=backward,
        TOP_GIVEN=meta.nob > 1,
        **_tiles(meta, code, bb),
    )


def sum_forward(layer, mars: torch.Tensor, precision: str = "ieee") -> None:
    """``mars[start:stop] = log(W exp(x - top)) + top`` for the layer's groups (in place)."""
    check_buffer("mars", mars)
    g, n_out, n_in = layer.weight.shape
    B = mars.shape[1]
    if g == 0 or B == 0:
        return
    meta, bb = _meta(layer), _block_b(B)
    top = _maxima(meta, mars, g, n_in, bb) if meta.nob > 1 else mars  # unused when the kernel finds the maxima
    _forward(layer, meta, mars, top, precision_code(precision), bb)


def sum_backward(layer, mars: torch.Tensor, flows: torch.Tensor, precision: str = "ieee") -> torch.Tensor:
    """Add the layer's flows to its children's rows of ``flows``; return the weight gradient ``(G, n_out, n_in)``.

    Same contract as :meth:`probcirc.layers.SumLayer.backward`, except that
    gradient entries off the edge mask (edges that do not exist) are 0.
    """
    check_buffer("mars", mars)
    check_buffer("flows", flows)
    g, n_out, n_in = layer.weight.shape
    B = mars.shape[1]
    grad = alloc((g, n_out, n_in), mars)
    if g == 0:
        return grad
    if B == 0:
        return grad.zero_()
    meta, w = _meta(layer), layer.weight.contiguous()
    bb = _block_b(B)
    blk = meta.blk if meta.sparse else w
    code = precision_code(precision)
    ratio = alloc((g, n_out, B), mars)
    top = _maxima(meta, mars, g, n_in, bb) if meta.nob > 1 else alloc((g, B), mars)
    _forward(layer, meta, mars, top, code, bb, flows, ratio)
    dst = flows if meta.direct else alloc((g * n_in, B), mars)
    _sum_bwd_in_kernel[(g, meta.nkb, triton.cdiv(B, bb))](
        mars,
        meta.child_idx,
        w,
        blk,
        ratio,
        top,
        dst,
        B,
        mars.stride(0),
        dst.stride(0),
        n_in,
        n_out,
        meta.nob,
        meta.nkb,
        DIRECT=meta.direct,
        **_tiles(meta, code, bb),
    )
    if not meta.direct:
        segment_sum(dst, meta.src_rows, meta.seg, flows, meta.dst_rows, accumulate=True)
    _sum_grad_kernel[(g, meta.nob, meta.nkb)](
        mars,
        meta.child_idx,
        blk,
        meta.mask if meta.sparse else blk,
        ratio,
        top,
        grad,
        B,
        mars.stride(0),
        n_in,
        n_out,
        meta.nob,
        meta.nkb,
        **_tiles(meta, code, bb),
    )
    return grad
