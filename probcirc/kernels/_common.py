"""Shared helpers: block sizes, per-layer caches of index metadata, argument checks."""

from __future__ import annotations

import os
import weakref

import torch
import triton
import triton.language as tl

_DEFAULT_TUNE = {"block_b": 64, "max_block": 64, "num_warps": 4, "seg_block_b": 128, "seg_block_n": 8}


def _checked(key: str, value) -> int:
    ok = key in _DEFAULT_TUNE and str(value).isdigit()
    ok = (
        ok
        and int(value) & (int(value) - 1) == 0
        and int(value) >= (16 if key.startswith(("block", "max", "seg_block_b")) else 1)
    )
    if not ok:
        raise ValueError(
            f"bad launch parameter {key}={value!r}: keys {sorted(_DEFAULT_TUNE)}, values powers of two (blocks >= 16)"
        )
    return int(value)


def _tuning() -> dict:
    """Launch parameters, overridable for tuning on a new card without code changes:
    ``PROBCIRC_TRITON_TUNE="block_b=128,max_block=64,num_warps=8,seg_block_b=256,seg_block_n=4"``."""
    tune = dict(_DEFAULT_TUNE)
    spec = os.environ.get("PROBCIRC_TRITON_TUNE", "").strip()
    for item in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = item.partition("=")
        try:
            tune[key] = _checked(key, value)
        except ValueError as exc:
            raise ValueError(f"PROBCIRC_TRITON_TUNE: {exc}") from None
    return tune


def set_tuning(**values: int) -> dict:
    """Change launch parameters in this process (as ``PROBCIRC_TRITON_TUNE`` does at import); returns the old ones.

    Layers pick up a new ``max_block`` on their next call (their cached block
    tables are keyed on it).
    """
    checked = {key: _checked(key, value) for key, value in values.items()}
    old = {key: TUNE[key] for key in checked}
    TUNE.update(checked)
    return old


TUNE = _tuning()

#: Tests set this so every buffer a kernel should fill starts as NaN (catches unwritten elements).
POISON = False

PRECISION_CODES = {"ieee": 0, "tf32": 1, "bf16": 2, "tf32x3": 4}


def alloc(shape, like: torch.Tensor) -> torch.Tensor:
    """An output buffer: uninitialised, or NaN-filled when :data:`POISON` is set."""
    if POISON:
        return torch.full(shape, float("nan"), dtype=torch.float32, device=like.device)
    return torch.empty(shape, dtype=torch.float32, device=like.device)


def precision_code(precision: str) -> int:
    if precision not in PRECISION_CODES:
        raise ValueError(f"precision must be one of {tuple(PRECISION_CODES)}, got {precision!r}")
    from ..backend import interpreting

    if precision == "bf16" and interpreting():
        return 3  # the interpreter's bf16 tl.dot is wrong (Triton 3.9): round to bf16, multiply in float32
    return PRECISION_CODES[precision]


@triton.jit
def mm(a, b, acc, PRECISION: tl.constexpr):
    """acc + a @ b with float32 accumulation: exact float32 products (0), tf32 (1), bf16 inputs (2),
    three-pass tf32 (4), or bf16-rounded inputs multiplied in float32 (3, for the interpreter)."""
    if PRECISION == 4:
        out = tl.dot(a, b, acc, input_precision="tf32x3")
    elif PRECISION == 3:
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), acc, input_precision="ieee")
    elif PRECISION == 2:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PRECISION == 1:
        out = tl.dot(a, b, acc, input_precision="tf32")
    else:
        out = tl.dot(a, b, acc, input_precision="ieee")
    return out


def pow2(n: int, low: int = 16, high: int = 64) -> int:
    """The next power of two of n, clamped to [low, high] (``tl.dot`` needs blocks of at least 16)."""
    return max(low, min(high, triton.next_power_of_2(max(int(n), 1))))


class _Cache(dict):
    """Per-layer kernel metadata; never pickled or deep-copied (it is rebuilt on demand)."""

    def __reduce__(self):
        return (_Cache, ())

    def __deepcopy__(self, memo):
        return _Cache()


def cached(layer, name: str, tensors: tuple, build):
    """``build()`` once per layer while ``tensors`` (the layer's index buffers) stay the same objects.

    Entries hold weak references, so a circuit moved with ``.to(device)``
    (new buffer objects) rebuilds its metadata there and frees the old copy.
    """
    cache = layer.__dict__.get("_kernel_cache")
    if cache is None:
        cache = layer.__dict__["_kernel_cache"] = _Cache()
    entry = cache.get(name)
    if entry is not None:
        refs, value = entry
        if len(refs) == len(tensors) and all(
            (r is None and t is None) or (r is not None and r() is t) for r, t in zip(refs, tensors)
        ):
            return value
    value = build()
    cache[name] = (tuple(None if t is None else weakref.ref(t) for t in tensors), value)
    return value


def check_buffer(name: str, t: torch.Tensor) -> None:
    if t.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 for the Triton kernels, got {t.dtype}")
    if t.dim() != 2 or t.stride(1) != 1:
        raise ValueError(f"{name} must be a row-major (num_slots, B) buffer with unit stride along the batch")


def csr(keys: torch.Tensor, values: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """values grouped by key (stable, so sums keep edge order) and the segment offsets (num_segments + 1)."""
    order = torch.argsort(keys, stable=True)
    ptr = torch.zeros(num_segments + 1, dtype=torch.int64, device=keys.device)
    ptr[1:] = torch.cumsum(torch.bincount(keys, minlength=num_segments), 0)
    return values[order].contiguous(), ptr


@triton.jit
def segment_sum_kernel(
    src_ptr,
    src_rows_ptr,
    seg_ptr,
    dst_ptr,
    dst_rows_ptr,
    N,
    B,
    src_stride,
    dst_stride,
    ACCUMULATE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """dst[dst_rows[n], b] (+)= sum over e in segment n of src[src_rows[e], b], in edge order.

    Each program owns BLOCK_N destination rows and one block of the batch, so
    no two programs write the same element: deterministic, no atomics. Rows
    with shorter segments are masked while the longest one finishes.
    """
    offs_n = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    offs_b = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    bmask = offs_b < B
    lo = tl.load(seg_ptr + offs_n, mask=nmask, other=0)
    count = tl.load(seg_ptr + offs_n + 1, mask=nmask, other=0) - lo
    drow = tl.load(dst_rows_ptr + offs_n, mask=nmask, other=0).to(tl.int64)
    m = nmask[:, None] & bmask[None, :]
    dptrs = dst_ptr + drow[:, None] * dst_stride + offs_b[None, :]
    if ACCUMULATE:
        acc = tl.load(dptrs, mask=m, other=0.0)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_B], dtype=tl.float32)
    for j in range(0, tl.max(count, axis=0)):
        emask = nmask & (j < count)
        row = tl.load(src_rows_ptr + lo + j, mask=emask, other=0).to(tl.int64)
        acc += tl.load(
            src_ptr + row[:, None] * src_stride + offs_b[None, :], mask=emask[:, None] & bmask[None, :], other=0.0
        )
    tl.store(dptrs, acc, mask=m)


def segment_sum(src, src_rows, seg, dst, dst_rows, accumulate: bool) -> None:
    n = dst_rows.numel()
    if n == 0 or dst.shape[1] == 0:
        return
    B = dst.shape[1]
    bb = pow2(B, 16, TUNE["seg_block_b"])
    bn = TUNE["seg_block_n"]
    segment_sum_kernel[(triton.cdiv(n, bn), triton.cdiv(B, bb))](
        src,
        src_rows,
        seg,
        dst,
        dst_rows,
        n,
        B,
        src.stride(0),
        dst.stride(0),
        ACCUMULATE=accumulate,
        BLOCK_N=bn,
        BLOCK_B=bb,
        num_warps=TUNE["num_warps"],
    )
