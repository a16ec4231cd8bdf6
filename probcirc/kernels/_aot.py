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


def variants():
    from . import _common, categorical, em, sum_layer

    f, i64, i32, i8 = "*fp32", "*i64", "*i32", "*i8"
    for sparse, bwd, prec, (bo, bk) in itertools.product(
        (False, True), (False, True), (0, 1, 2, 4), ((16, 16), (64, 64), (16, 64))
    ):
        if prec and (bo, bk) != (64, 64):
            continue
        sig = dict(
            mars_ptr=f,
            child_ptr=i64,
            w_ptr=f,
            blk_ptr=i32 if sparse else f,
            flows_ptr=f,
            ratio_ptr=f,
            top_ptr=f,
            B="i32",
            stride="i32",
            n_in="i32",
            n_out="i32",
            start="i32",
            nob="i32",
            nkb="i32",
        )
        for top in (False, True):
            yield (
                sum_layer._sum_fwd_kernel,
                sig,
                dict(SPARSE=sparse, BACKWARD=bwd, TOP_GIVEN=top, PRECISION=prec, BLOCK_O=bo, BLOCK_K=bk, BLOCK_B=64),
            )
    sig = dict(mars_ptr=f, child_ptr=i64, top_ptr=f, B="i32", stride="i32", n_in="i32")
    yield sum_layer._group_max_kernel, sig, dict(BLOCK_K=64, BLOCK_B=64)
    for sparse, direct, prec in itertools.product((False, True), (False, True), (0, 1, 2, 4)):
        sig = dict(
            mars_ptr=f,
            child_ptr=i64,
            w_ptr=f,
            blk_ptr=i32 if sparse else f,
            ratio_ptr=f,
            top_ptr=f,
            dst_ptr=f,
            B="i32",
            stride="i32",
            dst_stride="i32",
            n_in="i32",
            n_out="i32",
            nob="i32",
            nkb="i32",
        )
        yield (
            sum_layer._sum_bwd_in_kernel,
            sig,
            dict(SPARSE=sparse, DIRECT=direct, PRECISION=prec, BLOCK_O=64, BLOCK_K=32, BLOCK_B=64),
        )
    for sparse, prec in itertools.product((False, True), (0, 1, 2, 4)):
        sig = dict(
            mars_ptr=f,
            child_ptr=i64,
            blk_ptr=i32 if sparse else f,
            mask_ptr=i8 if sparse else f,
            ratio_ptr=f,
            top_ptr=f,
            grad_ptr=f,
            B="i32",
            stride="i32",
            n_in="i32",
            n_out="i32",
            nob="i32",
            nkb="i32",
        )
        yield sum_layer._sum_grad_kernel, sig, dict(SPARSE=sparse, PRECISION=prec, BLOCK_O=32, BLOCK_K=64, BLOCK_B=64)
    for acc in (False, True):
        sig = dict(
            src_ptr=f,
            src_rows_ptr=i64,
            seg_ptr=i64,
            dst_ptr=f,
            dst_rows_ptr=i64,
            N="i32",
            B="i32",
            src_stride="i32",
            dst_stride="i32",
        )
        yield _common.segment_sum_kernel, sig, dict(ACCUMULATE=acc, BLOCK_N=8, BLOCK_B=128)
    sig = dict(
        params_ptr=f,
        node_var_ptr=i64,
        x_ptr=f,
        miss_ptr=i8,
        mars_ptr=f,
        n="i32",
        C="i32",
        B="i32",
        x_stride="i32",
        stride="i32",
        start="i32",
    )
    yield categorical._cat_fwd_kernel, sig, dict(BLOCK_N=16, BLOCK_B=128)
    sig = dict(
        params_ptr=f,
        run_var_ptr=i64,
        x_ptr=f,
        miss_ptr=i8,
        flows_ptr=f,
        out_ptr=f,
        k="i32",
        C="i32",
        B="i32",
        x_stride="i32",
        stride="i32",
        start="i32",
    )
    yield categorical._cat_stats_kernel, sig, dict(BLOCK_K=64, BLOCK_C=64, BLOCK_B=64)
    for masked in (False, True):
        sig = dict(
            theta_ptr=f,
            flow_ptr=f,
            mask_ptr=i8 if masked else f,
            nch_ptr=f,
            out_ptr=f,
            R="i32",
            K="i32",
            step="fp32",
            alpha="fp32",
        )
        yield em._em_kernel, sig, dict(MASKED=masked, BLOCK_R=16, BLOCK_K=128)


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
        sig = {**sig, **{k: "constexpr" for k in const}}
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
