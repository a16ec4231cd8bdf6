"""probcirc's Triton kernels on one GPU: correctness checks, then timings next to PyJuice.

For HCLT and Poon-Domingos circuits on MNIST-shaped synthetic data (784
variables, 256 categories) from about 2 million to about 100 million edges:

1. checks the kernels against the torch path on the same GPU (log-values,
   flows, edge flows) and the root log-likelihoods against a float64 CPU
   reference;
2. times forward, backward and one EM update at the largest power-of-two
   batch (up to ``--max-batch``) that fits, and reports seconds per epoch of
   60,000 samples, peak GPU memory and achieved FLOP/s of the sum layers
   against the card's measured float32 matrix rate;
3. runs PyJuice (``pyjuice``, the published Triton-based PC library) on its
   own HCLT/PD of the same width, with the same batch, or says why it could not.

The last line is exactly ``speedup_vs_peer=<x> max_rel_err=<y>``: x is the
smallest ratio (PyJuice epoch seconds / ours) over the sizes both ran, y the
largest relative error (|a - b| / max(1, |b|), log space) of the exact
kernels against the float64 reference. Either is ``nan`` when not measured.

    python benchmarks/pc_gpu.py                 # every size, about 5-8 minutes on an H100
    python benchmarks/pc_gpu.py --quick         # the ~2M-edge circuits only
    python benchmarks/pc_gpu.py --no-peer       # skip PyJuice
    python benchmarks/pc_gpu.py --tune 64:4:64,128:8:64 --json out.json   # sweep launch parameters, keep figures

On a lent device machine use ``benchmarks/pc_gpu_device.sh`` (docs/gpu.md
says how to split one short device session into two legs).

Needs a CUDA device and Triton >= 3.6; without them it says so and exits 2.
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import signal
import sys
import time
import traceback

import numpy as np
import torch

import probcirc
from probcirc import backend
from probcirc.inputs import Categorical
from probcirc.layers import InputLayer
from probcirc.structures import HCLT, PD

EPOCH = 60_000
SHAPE = (28, 28)
CATS = 256
# num_latents per structure and nominal size: HCLT has about 783·k² + 1568·k edges,
# PD (split step 7) about 55,000·k² + 110,000·k.
SIZES = {
    "hclt": {"2M": 48, "13M": 128, "40M": 224, "100M": 352},
    "pd": {"2M": 5, "12M": 14, "40M": 26, "100M": 42},
}
PD_STEP = 7
APPROX = ("tf32x3", "tf32")  # approximate matmul modes timed next to the exact one (see probcirc.backend.approximate)


def log(*a):
    print(*a, flush=True)


def final(speedup: float, err: float, code: int = 0):
    print(f"speedup_vs_peer={speedup:.3g} max_rel_err={err:.3g}", flush=True)
    sys.exit(code)


# ------------------------------------------------------------------ helpers
DEV = "cuda"  # "cpu" only for --smoke (the Triton interpreter, tiny circuits: checks this script, not speed)


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEV == "cuda" else math.nan


def empty_cache():
    if DEV == "cuda":
        torch.cuda.empty_cache()


def timed(fn, reps: int = 3, budget: float = 0.5, max_reps: int = 25) -> float:
    """Median wall seconds of fn() on the device after one warm-up call: at least ``reps`` runs, more
    (up to ``max_reps``) while they take under ``budget`` seconds in all."""
    fn()
    sync()
    out: list = []
    while (
        len(out) < (1 if DEV == "cpu" else max_reps)
        and (len(out) < reps or sum(out) < budget)
        and not (DEV == "cpu" and out)
    ):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return float(np.median(out))


def matmul_rate(tf32: bool) -> float:
    """Measured FLOP/s of an 8192² float32 matrix product (tf32 tensor cores or exact)."""
    if DEV == "cpu":
        return math.nan
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(8192, 8192, device=DEV)
        t = timed(lambda: a @ a, reps=5, budget=0.2)
        return 2 * 8192**3 / t
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max(1, |ref|) over finite ref; inf if the -inf patterns differ or got has NaN."""
    got, ref = got.double().cpu(), ref.double().cpu()
    if torch.isnan(got).any() or not torch.equal(torch.isinf(got), torch.isinf(ref)):
        return math.inf
    fin = torch.isfinite(ref)
    if not fin.any():
        return 0.0
    return float(((got[fin] - ref[fin]).abs() / ref[fin].abs().clamp_min(1.0)).max())


def scaled_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """max |got - ref| / max |ref| (flows and edge flows, which are >= 0)."""
    got, ref = got.double().cpu(), ref.double().cpu()
    if torch.isnan(got).any():
        return math.inf
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def build(structure: str, k: int, data_np: np.ndarray):
    if structure == "hclt":
        root = HCLT(data_np[:5000], k, input_dist=Categorical(CATS), num_bins=4, init="random")
    else:
        root = PD(SHAPE, k, input_dist=Categorical(CATS), split_step=PD_STEP)
    return probcirc.compile(root, dtype=torch.float32)


def sum_edges(pc) -> int:
    return sum(int(l.edge_mask.sum()) if l.edge_mask is not None else l.weight.numel() for l in pc._sum_layers)


# ------------------------------------------------------- our passes on the GPU
def forward(pc, x, missing):
    """Forward pass; every layer (categorical leaves included) picks the kernels when the backend is Triton."""
    mars = torch.empty(pc._num_slots, x.shape[1], dtype=torch.float32, device=x.device)
    mars[0] = 0.0
    for layer in pc.layers:
        if isinstance(layer, InputLayer):
            layer(mars, x, missing)
        else:
            layer(mars)
    return mars


def em_step(pc, mars, flows, grads, x, missing, step=0.1, alpha=0.1):
    for layer, g in zip(pc._sum_layers, grads):
        layer.em_update(layer.weight * g, step, alpha)
    for layer in pc._input_layers:
        new = layer.m_step(layer.em_stats(flows, x, missing), alpha)
        layer.params.mul_(1 - step).add_(step * new)


def check(pc_cpu, pc, data, n_check: int) -> dict:
    """Kernels vs the torch path on the GPU, and root log-likelihoods vs float64 on the CPU."""
    out = {}
    sub = data[:n_check]
    x, missing = pc._prepare(sub, None)
    probcirc.set_backend("torch")
    m_ref = forward(pc, x, missing)
    f_ref, g_ref = pc._backward_pass(m_ref, torch.ones(x.shape[1], device=DEV))
    probcirc.set_backend("triton")
    m_got = forward(pc, x, missing)
    f_got, g_got = pc._backward_pass(m_ref, torch.ones(x.shape[1], device=DEV))
    out["mars_vs_torch"] = rel_err(m_got, m_ref)
    out["flows_vs_torch"] = scaled_err(f_got, f_ref)
    out["edge_flows_vs_torch"] = max(
        scaled_err(l.weight * a, l.weight * b) for l, a, b in zip(pc._sum_layers, g_got, g_ref)
    )
    pc64 = copy.deepcopy(pc_cpu).to(torch.float64)
    probcirc.set_backend("torch")
    with torch.no_grad():
        ll64 = pc64.log_prob(sub.cpu())
    del pc64
    out["ll_vs_f64"] = rel_err(m_got[-1], ll64)
    out["torch_ll_vs_f64"] = rel_err(m_ref[-1], ll64)
    probcirc.set_backend("triton")
    for mode in APPROX:
        with backend.approximate(mode):
            out[f"{mode}_ll_vs_f64"] = rel_err(forward(pc, x, missing)[-1], ll64)
    probcirc.set_backend("auto")
    return out


def largest_batch(try_batch, cap: int) -> tuple[int, object]:
    """The largest power of two <= cap for which try_batch(B) runs without running out of memory."""
    b = cap
    while b >= 1:
        try:
            res = try_batch(b)
            return b, res
        except torch.cuda.OutOfMemoryError:
            gc.collect()
            empty_cache()
            b //= 2
    raise RuntimeError("out of memory even at batch 1")


def parse_tune(spec: str | None) -> dict:
    """``"64:4:64,128:8:64,pd=64:4:32"`` -> {structure or "*": [(block_b, num_warps, max_block), ...]}.

    Raises ValueError naming the bad entry (checked before any GPU work starts).
    """
    from probcirc.kernels._common import _checked

    out: dict = {}
    for item in filter(None, (p.strip() for p in (spec or "").split(","))):
        key, _, combo = item.rpartition("=")
        parts = combo.split(":")
        if key not in ("", "hclt", "pd") or len(parts) != 3 or not all(v.isdigit() for v in parts):
            raise ValueError(f"--tune entry {item!r}: expected [hclt=|pd=]block_b:num_warps:max_block, e.g. 64:4:64")
        for name, v in zip(("block_b", "num_warps", "max_block"), parts):
            _checked(name, v)
        out.setdefault(key or "*", []).append(tuple(int(v) for v in parts))
    return out


def set_launch(combo) -> None:
    from probcirc.kernels import _common

    _common.set_tuning(block_b=combo[0], num_warps=combo[1], max_block=combo[2])


def run_ours(pc, data, cap: int, combos: list) -> dict:
    from probcirc.kernels import _common

    default = (_common.TUNE["block_b"], _common.TUNE["num_warps"], _common.TUNE["max_block"])
    probcirc.set_backend("triton")
    try:
        return _run_ours(pc, data, cap, combos or [default])
    finally:
        probcirc.set_backend("auto")
        set_launch(default)


def _run_ours(pc, data, cap: int, combos: list) -> dict:
    def attempt(B):
        x, missing = pc._prepare(data[:B], None)
        reset_peak()
        mars = forward(pc, x, missing)
        flows, grads = pc._backward_pass(mars, torch.ones(B, device=DEV))
        em_step(pc, mars, flows, grads, x, missing)
        sync()
        return x, missing

    B, (x, missing) = largest_batch(attempt, cap)  # with the built-in launch parameters, which fit every card
    peak = peak_gib()
    state: dict = {}

    def fwd():
        state["mars"] = forward(pc, x, missing)

    def bwd():
        state["flows"], state["grads"] = pc._backward_pass(state["mars"], torch.ones(B, device=DEV))

    def em():
        em_step(pc, state["mars"], state["flows"], state["grads"], x, missing)

    sweep = {}
    if len(combos) > 1:  # launch parameters (block_b:num_warps:max_block), exact mode, fwd + bwd
        for combo in combos:
            try:
                set_launch(combo)
                sweep[combo] = timed(fwd, budget=0.3) + timed(bwd, budget=0.3)
            except Exception as exc:  # e.g. out of shared memory for a large tile on this card
                log(f"  launch {combo}: failed ({type(exc).__name__}: {str(exc)[:120]})")
        log(
            "  launch sweep (block_b:num_warps:max_block -> fwd+bwd ms): "
            + ", ".join(
                f"{':'.join(map(str, c))} {1e3 * t:.2f}" for c, t in sorted(sweep.items(), key=lambda kv: kv[1])
            )
        )
    best = min(sweep, key=sweep.get) if sweep else combos[0]
    set_launch(best)  # one given setting: used as is; a failure there fails the row, as it should

    t_f = timed(fwd)
    t_b = timed(bwd)
    t_e = timed(em)
    modes = {}
    for mode in APPROX:
        with backend.approximate(mode):
            modes[mode] = {"batch": B, "fwd": timed(fwd), "bwd": timed(bwd), "em": t_e}
    state.clear()
    return {
        "batch": B,
        "fwd": t_f,
        "bwd": t_b,
        "em": t_e,
        "modes": modes,
        "peak_gib": peak,
        "launch": ":".join(map(str, best)),
        "sweep": {":".join(map(str, c)): t for c, t in sweep.items()},
    }


def run_torch_path(pc, data, B: int) -> dict:
    """The torch path on the same GPU and batch (halving on out-of-memory)."""
    probcirc.set_backend("torch")
    try:

        def attempt(b):
            x, missing = pc._prepare(data[:b], None)
            reset_peak()
            mars = forward(pc, x, missing)
            pc._backward_pass(mars, torch.ones(b, device=DEV))
            sync()
            return x, missing

        b, (x, missing) = largest_batch(attempt, B)
        peak = peak_gib()
        st = {}
        t_f = timed(lambda: st.__setitem__("m", forward(pc, x, missing)))
        t_b = timed(lambda: pc._backward_pass(st["m"], torch.ones(b, device=DEV)))
        st.clear()
        return {"batch": b, "fwd": t_f, "bwd": t_b, "peak_gib": peak}
    finally:
        probcirc.set_backend("auto")


# ------------------------------------------------------------------ the peer
def peer_import():
    try:
        import pyjuice  # noqa: F401

        return pyjuice, None
    except Exception as exc:
        return None, (
            f"pyjuice does not import ({type(exc).__name__}: {exc}); install its wheel on this machine "
            "(pip install --no-deps pyjuice-*.whl) to compare"
        )


def run_peer(juice, structure: str, k: int, data: torch.Tensor, B: int) -> dict:
    if structure == "hclt":
        ns = juice.structures.HCLT(data[:5000].float(), num_latents=k)
    else:
        ns = juice.structures.PD(data_shape=SHAPE, num_latents=k, split_intervals=PD_STEP)
    t0 = time.perf_counter()
    pc = juice.compile(ns).to(DEV)
    compile_s = time.perf_counter() - t0

    def attempt(b):
        xb = data[:b]
        reset_peak()
        pc(xb)
        pc.backward(xb, flows_memory=0.0)
        pc.mini_batch_em(step_size=0.1, pseudocount=0.1)
        sync()
        return xb

    b, xb = largest_batch(attempt, B)
    peak = peak_gib()
    graphs = "yes"
    try:  # PyJuice's own fast path: its layers replayed as CUDA graphs (recorded once per batch size)
        pc(xb, record_cudagraph=True)
        pc.backward(xb, flows_memory=0.0, record_cudagraph=True)
        sync()
    except Exception as exc:
        graphs = f"no ({type(exc).__name__})"
    with torch.no_grad():
        t_f = timed(lambda: pc(xb))
    t_fb = timed(lambda: (pc(xb), pc.backward(xb, flows_memory=0.0)))
    t_e = timed(lambda: pc.mini_batch_em(step_size=0.1, pseudocount=0.1))
    edges = getattr(pc, "num_edges", None)  # pc (and its GPU memory) goes with this frame and its closures
    return {
        "batch": b,
        "fwd": t_f,
        "bwd": max(t_fb - t_f, 0.0),
        "em": t_e,
        "peak_gib": peak,
        "compile_s": compile_s,
        "edges": edges,
        "cuda_graphs": graphs,
    }


def epoch_seconds(r: dict) -> float:
    return math.ceil(EPOCH / r["batch"]) * (r["fwd"] + r["bwd"] + r.get("em", 0.0))


# -------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="only the ~2M-edge circuits")
    ap.add_argument("--structures", default="hclt,pd", help="comma list of structures: hclt, pd")
    ap.add_argument("--sizes", default=None, help="comma list of size labels (2M, 13M/12M, 40M, 100M); default all")
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--check-batch", type=int, default=64, help="samples in the correctness checks")
    ap.add_argument("--no-peer", action="store_true", help="do not run PyJuice")
    ap.add_argument(
        "--dry-run", action="store_true", help="check the arguments, print the plan and exit (no GPU needed)"
    )
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; no new size (or peer run) starts after this")
    ap.add_argument(
        "--deadline", type=float, default=560.0, help="seconds; stop whatever runs, print the summary and the last line"
    )
    ap.add_argument(
        "--final-mode",
        default="ieee",
        choices=("ieee", *APPROX),
        help="our matmul mode behind speedup_vs_peer (PyJuice itself uses tf32 products)",
    )
    ap.add_argument(
        "--tune",
        default=None,
        help="launch parameters block_b:num_warps:max_block, comma-separated; several are swept per circuit and the "
        "fastest used; entries prefixed 'hclt=' or 'pd=' form that structure's own list, which replaces the "
        "unprefixed one (default: PROBCIRC_TRITON_TUNE or built-in)",
    )
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="run this script's logic on the CPU (Triton interpreter, 4x4 images); no timings worth reading",
    )
    args = ap.parse_args()
    t_start = time.perf_counter()
    global DEV, SHAPE, CATS, SIZES
    if args.smoke:
        import os

        os.environ["TRITON_INTERPRET"] = "1"
        DEV, SHAPE, CATS = "cpu", (4, 4), 4
        SIZES = {"hclt": {"tiny": 3}, "pd": {"tiny": 2}}
        args.max_batch, args.check_batch = 16, 8
    plan = make_plan(args, ap)
    if args.dry_run:
        for structure, label in plan:
            k = SIZES[structure][label]
            log(f"plan: {structure} {label} (k={k}, about {nominal_edges(structure, k) / 1e6:.1f}M edges)")
        log(f"budget {args.budget:.0f} s, deadline {args.deadline:.0f} s, peer {'off' if args.no_peer else 'on'}")
        sys.exit(0)
    if not args.smoke and not torch.cuda.is_available():
        log("pc_gpu: no CUDA device is visible (torch.cuda.is_available() is False); this benchmark needs one GPU.")
        log("        The kernels themselves are tested on the CPU: TRITON_INTERPRET=1 pytest -m triton")
        final(math.nan, math.nan, 2)
    from probcirc import kernels

    try:  # after --smoke has switched the interpreter on: this imports the kernels' module
        parse_tune(args.tune)
    except ValueError as exc:
        ap.error(str(exc))
    if not kernels.available():
        log(f"pc_gpu: {kernels._probe()}")
        final(math.nan, math.nan, 2)
    import triton

    dev = torch.cuda.get_device_name() if DEV == "cuda" else "cpu (Triton interpreter, --smoke)"
    log(f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}; CUDA {torch.version.cuda}")
    fp32_rate, tf32_rate = matmul_rate(False), matmul_rate(True)
    log(f"measured matmul rate: {fp32_rate / 1e12:.1f} TFLOP/s float32 (exact), {tf32_rate / 1e12:.1f} TFLOP/s tf32")

    gen = torch.Generator().manual_seed(0)
    data_cpu = torch.randint(
        0, CATS, (max(args.max_batch, 500 if args.smoke else 5000), SHAPE[0] * SHAPE[1]), generator=gen
    )
    # Some structure for the Chow-Liu tree: each pixel copies its left neighbour a third of the time.
    copy_mask = torch.rand(data_cpu.shape, generator=gen) < 1 / 3
    data_cpu[:, 1:] = torch.where(copy_mask[:, 1:], data_cpu[:, :-1], data_cpu[:, 1:])
    data = data_cpu.to(DEV)
    juice, peer_why = (None, "skipped (--no-peer)") if args.no_peer else peer_import()
    if peer_why:
        log(f"peer: {peer_why}")

    rows: list = []
    ratios: dict = {m: [] for m in ("ieee", *APPROX)}
    signal.signal(signal.SIGALRM, _time_up)
    signal.alarm(max(1, int(args.deadline - (time.perf_counter() - t_start))))
    try:
        _run_plan(plan, args, t_start, data_cpu, data, juice, fp32_rate, rows, ratios)
    except TimeUp:
        probcirc.set_backend("auto")
        log(f"deadline of {args.deadline:.0f} s reached: stopped; the summary covers what finished")
    signal.alarm(0)
    max_err = max([r["check"]["ll_vs_f64"] for r in rows if "check" in r], default=math.nan)
    _summary(rows, dev, fp32_rate, juice, peer_why, args)
    if args.json:
        import json

        with open(args.json, "w") as fh:

            def plain(v):  # strict JSON: NaN/inf become null
                if isinstance(v, float) and not math.isfinite(v):
                    return None
                if isinstance(v, dict):
                    return {str(k): plain(u) for k, u in v.items()}
                if isinstance(v, (list, tuple)):
                    return [plain(u) for u in v]
                return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)

            json.dump(
                plain(
                    {
                        "device": dev,
                        "torch": torch.__version__,
                        "fp32_rate": fp32_rate,
                        "tf32_rate": tf32_rate,
                        "rows": rows,
                    }
                ),
                fh,
                indent=1,
                allow_nan=False,
            )
    picked = ratios[args.final_mode]
    final(min(picked) if picked else math.nan, max_err)


def make_plan(args, ap) -> list[tuple[str, str]]:
    """(structure, size label) pairs to run, smallest sizes of every structure first, so a short budget still
    covers both; unknown names are a usage error (exit 2), not a silently empty run."""
    structures = [s.strip() for s in args.structures.split(",") if s.strip()]
    unknown = sorted(set(structures) - set(SIZES))
    if unknown or not structures:
        ap.error(f"--structures: unknown {unknown or structures}; choose from {sorted(SIZES)}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()] if args.sizes else None
    known = {label for s in structures for label in SIZES[s]}
    if sizes is not None and (not sizes or set(sizes) - known):
        ap.error(f"--sizes: unknown {sorted(set(sizes) - known) or sizes}; choose from {sorted(known)}")
    plan = []
    for i in range(max(len(SIZES[s]) for s in structures)):
        for structure in structures:
            labels = list(SIZES[structure])
            if i < len(labels) and not (args.quick and i > 0) and (sizes is None or labels[i] in sizes):
                plan.append((structure, labels[i]))
    return plan


def nominal_edges(structure: str, k: int) -> int:
    """The edge counts the SIZES labels come from (HCLT over 784 pixels; PD with split step 7 on 28x28)."""
    return 783 * k * k + 1568 * k if structure == "hclt" else 55_000 * k * k + 110_000 * k


class TimeUp(BaseException):
    """Raised by the --deadline alarm; a BaseException so that no per-size handler swallows it."""


def _time_up(signum, frame):
    raise TimeUp()


def _run_plan(plan, args, t_start, data_cpu, data, juice, fp32_rate, rows, ratios) -> None:
    tune = parse_tune(args.tune)  # checked in main() already
    for structure, label in plan:
        if time.perf_counter() - t_start > args.budget:
            log(f"{structure} {label}: skipped, past the --budget of {args.budget:.0f} s")
            continue
        k = SIZES[structure][label]
        row = {"structure": structure, "label": label, "k": k}
        try:
            t0 = time.perf_counter()
            pc_cpu = build(structure, k, data_cpu.numpy())
            row["edges"] = pc_cpu.num_edges
            row["compile_s"] = time.perf_counter() - t0
            pc = copy.deepcopy(pc_cpu).to(DEV)
            row["check"] = check(pc_cpu, pc, data, args.check_batch)
            del pc_cpu
            gc.collect()
            row["ours"] = run_ours(pc, data, args.max_batch, tune.get(structure, tune.get("*", [])))
            flops = 2 * sum_edges(pc) * row["ours"]["batch"]
            row["ours"]["fwd_tflops"] = flops / row["ours"]["fwd"] / 1e12
            row["ours"]["bwd_tflops"] = 3 * flops / row["ours"]["bwd"] / 1e12
            row["torch"] = run_torch_path(pc, data, row["ours"]["batch"])
            del pc
        except Exception as exc:
            probcirc.set_backend("auto")
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        gc.collect()
        empty_cache()
        if juice is not None and "ours" in row and time.perf_counter() - t_start > args.budget:
            row["peer_error"] = f"skipped, past the --budget of {args.budget:.0f} s"
        elif juice is not None and "ours" in row:
            try:
                row["peer"] = run_peer(juice, structure, k, data, row["ours"]["batch"])
                ratios["ieee"].append(epoch_seconds(row["peer"]) / epoch_seconds(row["ours"]))
                for m in APPROX:
                    ratios[m].append(epoch_seconds(row["peer"]) / epoch_seconds(row["ours"]["modes"][m]))
            except Exception as exc:
                row["peer_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            gc.collect()
            empty_cache()
        rows.append(row)
        report_row(row, fp32_rate)


def _summary(rows, dev, fp32_rate, juice, peer_why, args) -> None:
    log("")
    log(f"summary on {dev} (epoch = {EPOCH} samples; time = fwd + bwd + EM per batch x batches)")
    log(
        f"{'circuit':<12}{'edges':>12}{'batch':>7}{'ours s/ep':>11}{'torch s/ep':>11}{'peer s/ep':>11}{'ratio':>7}"
        f"{'ours GiB':>9}{'peer GiB':>9}{'fwd TF/s':>9}{'% fp32':>7}"
        + "".join(f"{m + ' s/ep':>13}{'ratio':>7}" for m in APPROX)
    )
    for r in rows:
        if "ours" not in r:
            log(f"{r['structure'] + ' ' + r['label']:<12} failed: {r.get('error')}")
            continue
        o, t, p = r["ours"], r.get("torch"), r.get("peer")
        t_ep = math.ceil(EPOCH / t["batch"]) * (t["fwd"] + t["bwd"]) if t else math.nan
        p_ep = epoch_seconds(p) if p else math.nan
        log(
            f"{r['structure'] + ' ' + r['label']:<12}{r['edges']:>12,}{o['batch']:>7}"
            f"{epoch_seconds(o):>11.2f}{t_ep:>11.2f}{p_ep:>11.2f}"
            f"{p_ep / epoch_seconds(o):>7.2f}{o['peak_gib']:>9.2f}{(p['peak_gib'] if p else math.nan):>9.2f}"
            f"{o['fwd_tflops']:>9.2f}{100 * o['fwd_tflops'] * 1e12 / fp32_rate:>7.1f}"
            + "".join(
                f"{epoch_seconds(o['modes'][m]):>13.2f}{p_ep / epoch_seconds(o['modes'][m]):>7.2f}" for m in APPROX
            )
        )
        if "peer_error" in r:
            log(f"{'':<12} peer failed: {r['peer_error']}")
    if juice is None:
        log(f"peer not run: {peer_why}")
    log(
        "ratio = peer epoch seconds / ours (>= 1: faster than the peer). PyJuice computes its products in tf32; "
        f"the last line uses our {args.final_mode} mode, and max_rel_err our exact mode against float64"
    )


def report_row(row: dict, fp32_rate: float) -> None:
    name = f"{row['structure']} {row['label']} (k={row['k']})"
    if "error" in row and "ours" not in row:
        log(f"{name}: failed: {row['error']}")
        return
    c, o = row["check"], row["ours"]
    log(
        f"{name}: {row['edges']:,} edges, compiled in {row['compile_s']:.1f} s; "
        f"checks: mars vs torch {c['mars_vs_torch']:.1e}, "
        f"flows {c['flows_vs_torch']:.1e}, edge flows {c['edge_flows_vs_torch']:.1e}, "
        f"ll vs float64 {c['ll_vs_f64']:.1e} "
        f"(torch path {c['torch_ll_vs_f64']:.1e}; "
        + ", ".join(f"{m} mode {c[m + '_ll_vs_f64']:.1e}" for m in APPROX)
        + ")"
    )
    log(
        f"  ours  B={o['batch']}: fwd {o['fwd'] * 1e3:.1f} ms ({o['fwd_tflops']:.2f} TFLOP/s, "
        f"{100 * o['fwd_tflops'] * 1e12 / fp32_rate:.0f}% of fp32 matmul), "
        f"bwd {o['bwd'] * 1e3:.1f} ms ({o['bwd_tflops']:.2f} TFLOP/s), EM {o['em'] * 1e3:.1f} ms; "
        f"launch {o['launch']}; "
        + "".join(
            f"{m}: fwd {o['modes'][m]['fwd'] * 1e3:.1f} ms, bwd {o['modes'][m]['bwd'] * 1e3:.1f} ms; " for m in APPROX
        )
        + f"peak {o['peak_gib']:.2f} GiB; {epoch_seconds(o):.2f} s/epoch (exact)"
    )
    if "torch" in row:
        t = row["torch"]
        log(
            f"  torch B={t['batch']}: fwd {t['fwd'] * 1e3:.1f} ms, bwd {t['bwd'] * 1e3:.1f} ms, "
            f"peak {t['peak_gib']:.2f} GiB"
        )
    if "peer" in row:
        p = row["peer"]
        log(
            f"  peer  B={p['batch']}: fwd {p['fwd'] * 1e3:.1f} ms, bwd {p['bwd'] * 1e3:.1f} ms, "
            f"EM {p['em'] * 1e3:.1f} ms, peak {p['peak_gib']:.2f} GiB, compile {p['compile_s']:.1f} s, "
            f"edges {p['edges']}, CUDA graphs {p['cuda_graphs']}; "
            f"{epoch_seconds(p):.2f} s/epoch"
        )
    elif "peer_error" in row:
        log(f"  peer failed: {row['peer_error']}")


if __name__ == "__main__":
    main()
