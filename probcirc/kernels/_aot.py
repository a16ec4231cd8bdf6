"""Compile every kernel variant ahead of time for a CUDA target, without a GPU.

Catches code-generation errors (types, shapes, ``tl.dot`` constraints) that
the interpreter does not see. Needs only the Triton wheel (it ships ptxas):

    python -m probcirc.kernels._aot            # sm_90 (H100/H200), every variant (about a minute)
    python -m probcirc.kernels._aot 80         # sm_80 (A100)
    python -m probcirc.kernels._aot 90 quick   # one variant of each kernel (the test suite runs this)
"""

from __future__ import annotations

import itertools
import os
import sys
import time

# Triton argument types by name; any other pointer is fp32 and any other scalar i32.
_I64_POINTERS = ("child_ptr", "seg_ptr", "src_rows_ptr", "dst_rows_ptr", "node_var_ptr", "run_var_ptr")
_FP32_SCALARS = ("step", "alpha")


def signature(fn, const: dict, *, int_blocks: bool = False) -> dict[str, str]:
    """The type of every argument of kernel ``fn`` as ``triton.compile`` wants it, constexprs (``const``) last.

    ``int_blocks``: the block tables and edge masks (``blk_ptr`` int32,
    ``mask_ptr`` int8) are real; otherwise they are unused fp32 placeholders.
    """
    types = {}
    for name in fn.arg_names:
        if name in const:
            continue
        if name in _I64_POINTERS:
            types[name] = "*i64"
        elif name == "miss_ptr" or (name == "mask_ptr" and int_blocks):
            types[name] = "*i8"
        elif name == "blk_ptr" and int_blocks:
            types[name] = "*i32"
        elif name.endswith("_ptr"):
            types[name] = "*fp32"
        else:
            types[name] = "fp32" if name in _FP32_SCALARS else "i32"
    return {**types, **{k: "constexpr" for k in const}}


def variants():
    """Every (kernel, signature, constexprs) the engine launches."""
    from . import _common, categorical, em, sum_layer

    def variant(fn, const, int_blocks=False):
        return fn, signature(fn, const, int_blocks=int_blocks), const

    for sparse, bwd, prec, (bo, bk) in itertools.product(
        (False, True), (False, True), (0, 1, 2, 4), ((16, 16), (64, 64), (16, 64))
    ):
        if prec and (bo, bk) != (64, 64):
            continue
        for top in (False, True):
            const = dict(SPARSE=sparse, BACKWARD=bwd, TOP_GIVEN=top, PRECISION=prec, BLOCK_O=bo, BLOCK_K=bk, BLOCK_B=64)
            yield variant(sum_layer._sum_fwd_kernel, const, sparse)
    yield variant(sum_layer._group_max_kernel, dict(BLOCK_K=64, BLOCK_B=64))
    for sparse, direct, prec in itertools.product((False, True), (False, True), (0, 1, 2, 4)):
        const = dict(SPARSE=sparse, DIRECT=direct, PRECISION=prec, BLOCK_O=64, BLOCK_K=32, BLOCK_B=64)
        yield variant(sum_layer._sum_bwd_in_kernel, const, sparse)
    for sparse, prec in itertools.product((False, True), (0, 1, 2, 4)):
        const = dict(SPARSE=sparse, PRECISION=prec, BLOCK_O=32, BLOCK_K=64, BLOCK_B=64)
        yield variant(sum_layer._sum_grad_kernel, const, sparse)
    for acc in (False, True):
        yield variant(_common.segment_sum_kernel, dict(ACCUMULATE=acc, BLOCK_N=8, BLOCK_B=128))
    yield variant(categorical._cat_fwd_kernel, dict(BLOCK_N=16, BLOCK_B=128))
    yield variant(categorical._cat_stats_kernel, dict(BLOCK_K=64, BLOCK_C=64, BLOCK_B=64))
    for masked in (False, True):
        yield variant(em._em_kernel, dict(MASKED=masked, BLOCK_R=16, BLOCK_K=128), masked)


def main(arch: int = 90, quick: bool = False) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: ahead-of-time compilation needs the real compiler")
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", arch, 32)
    failed, seen = 0, set()
    for fn, sig, const in variants():
        if quick and fn.__name__ in seen:
            continue  # quick: the first variant of each kernel
        seen.add(fn.__name__)
        t0 = time.perf_counter()
        try:
            triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=target)
            status = "ok"
        except Exception as exc:  # report every failure, then fail
            failed += 1
            status = f"FAILED: {type(exc).__name__}: {str(exc).strip()[:2000]}"
        print(f"sm_{arch} {fn.__name__} {const}: {status} ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"{failed} failed" if failed else "all kernels compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 90, "quick" in sys.argv[2:]))
