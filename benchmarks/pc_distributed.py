"""Data-parallel EM: one epoch of mini-batch EM on 1 rank and on 2 ranks (torchrun, gloo), one thread per rank.

HCLT with 32 latents on MNIST's 60,000 training images. The circuit is built
once and saved; each run starts from that file, trains one epoch and saves
its parameters, and the two results are compared entry by entry. Ends with
the line ``img_per_s_1rank=<x> img_per_s_2ranks=<y> scaling_efficiency_2ranks=<z> max_param_diff=<d>``.

    python benchmarks/pc_distributed.py                      # the full run
    python benchmarks/pc_distributed.py --train-limit 4096   # a quick one

Efficiency is img/s on 2 ranks over twice img/s on 1 rank; it needs two idle
cores to mean anything. On the 2-core test VM the same script's speed drifts by
up to a quarter from one run to the next (nothing else running), so one pair
has ranged from 0.57 to 0.97 for the same code: the runs alternate, ``--repeats``
pairs (5) in ABBA order, and the line reports the median rates and the median of
the pairs' efficiencies.

First it measures what two cores give on this machine at all, in the same run:
a loop that copies between two 200 MB buffers (memory-bound) and a small
matrix product that stays in cache (compute-bound), each timed in one process
alone and then in two at once. Their efficiencies bound the EM's: its chunks
stream buffers of hundreds of MB, so where the two cores share the memory
bandwidth, 2 ranks cannot reach twice the img/s of one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import probcirc
from probcirc.datasets import load_mnist
from probcirc.learn import distributed, em
from probcirc.structures import HCLT


def mnist(limit: int | None) -> torch.Tensor:
    images, _ = load_mnist("train")
    # uint8, as `probcirc train` keeps its data: every rank holds the whole set, a byte a value
    return torch.from_numpy(np.array(images.reshape(len(images), -1)[:limit]))  # a writable copy


def worker(args: argparse.Namespace) -> None:
    """One rank (or the only process): load the circuit, time one epoch of EM, save the parameters."""
    torch.set_num_threads(1)
    distributed.init_from_env()
    pc = probcirc.io.load(args.circuit)
    x = mnist(args.train_limit)
    barrier = torch.distributed.barrier if distributed.world_size() > 1 else (lambda: None)
    barrier()
    start = time.perf_counter()
    em(pc, x, epochs=1, batch_size=args.batch, step_size=0.1, pseudocount=0.1, chunk_size=args.chunk, seed=1)
    barrier()
    seconds = time.perf_counter() - start
    if distributed.is_main():
        probcirc.io.save(pc, args.result, overwrite=True)
        print(f"seconds={seconds:.3f} images={len(x)}", flush=True)
    distributed.shutdown()


def probe(kind: str, seconds: float) -> float:
    """One thread's rate for ``seconds``: GB/s copied between two 200 MB buffers, or GFLOP/s of a 128 x 128 product."""
    torch.set_num_threads(1)
    if kind == "copy":
        a = torch.ones(50_000_000)
        b = torch.empty_like(a)
        step, work = (lambda: b.copy_(a)), 2 * a.numel() * a.element_size() / 1e9  # read + write
    else:
        a = torch.randn(128, 128)
        b = torch.empty_like(a)
        step, work = (lambda: torch.mm(a, a, out=b)), 2 * 128**3 / 1e9
    step()  # pages in the buffers before the clock starts
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        step()
        n += 1
    return n * work / elapsed


def ceiling(seconds: float) -> None:
    """Print the efficiency of a memory-bound and a compute-bound loop: one process, then two at once."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    print("Two cores on this machine, one thread per process (each loop alone, then two copies at once):")
    print(f"  {'loop':<40} {'1 process':>10} {'2 at once, each':>18} {'efficiency':>11}")
    loops = (("copy", "copy 200 MB buffers, GB/s (memory)"), ("mm", "128x128 matmul, GFLOP/s (in cache)"))
    for kind, label in loops:
        rates = []
        for copies in (1, 2):
            argv = [sys.executable, __file__, "--probe", kind, "--probe-seconds", str(seconds)]
            procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) for _ in range(copies)]
            rates.append([float(p.communicate()[0].split("=")[1]) for p in procs])
        (alone,), pair = rates
        each = ", ".join(f"{r:.1f}" for r in pair)
        print(f"  {label:<40} {alone:>10.1f} {each:>18} {sum(pair) / (2 * alone):>11.2f}")


def run(ranks: int, args: argparse.Namespace, circuit: Path, result: Path) -> float:
    """img/s of one epoch on ``ranks`` ranks (torchrun for more than one)."""
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    argv = [*launch, __file__, "--worker", "--circuit", str(circuit), "--result", str(result)]
    argv += ["--batch", str(args.batch), "--chunk", str(args.chunk)]
    if args.train_limit:
        argv += ["--train-limit", str(args.train_limit)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    line = [l for l in done.stdout.splitlines() if l.startswith("seconds=")]
    if done.returncode or not line:
        sys.exit(f"pc_distributed: the {ranks}-rank run failed:\n{done.stderr[-2000:]}")
    seconds, images = (float(f.split("=")[1]) for f in line[-1].split())
    print(f"{ranks} rank(s): {images:.0f} images in {seconds:.1f} s, {images / seconds:.0f} img/s", flush=True)
    return images / seconds


def max_param_diff(a: Path, b: Path) -> float:
    pa, pb = probcirc.io.load(a), probcirc.io.load(b)
    return max(
        float((x.double() - y.double()).abs().max()) for x, y in zip(pa.state_dict().values(), pb.state_dict().values())
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", type=int, default=32, help="HCLT latent states per variable")
    ap.add_argument("--batch", type=int, default=1024, help="mini-batch size: two chunks, one per rank")
    ap.add_argument("--chunk", type=int, default=distributed.CHUNK_SIZE, help="rows per chunk (unit of a rank's work)")
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--repeats", type=int, default=5, help="pairs of 1-rank and 2-rank runs, alternating")
    ap.add_argument(
        "--ceiling-seconds", type=float, default=3.0, help="seconds per loop of the machine check, 0 skips it"
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe", choices=("copy", "mm"), help=argparse.SUPPRESS)
    ap.add_argument("--probe-seconds", type=float, default=3.0, help=argparse.SUPPRESS)
    ap.add_argument("--circuit", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if args.probe:
        print(f"rate={probe(args.probe, args.probe_seconds)}")
        return
    try:
        x = mnist(args.train_limit)
    except FileNotFoundError as err:
        sys.exit(f"pc_distributed: {err}")
    root = HCLT(
        x.numpy(), args.latents, input_dist=probcirc.inputs.Categorical(256), num_bins=4, max_structure_samples=5000
    )
    pc = probcirc.compile(root, seed=0)
    print(f"HCLT({args.latents}) on {len(x):,} images: {pc.num_parameters:,} parameters, {pc.num_edges:,} edges")
    if args.ceiling_seconds > 0:
        ceiling(args.ceiling_seconds)
    with tempfile.TemporaryDirectory() as tmp:
        circuit, one, two = Path(tmp, "init.h5"), Path(tmp, "one.h5"), Path(tmp, "two.h5")
        probcirc.io.save(pc, circuit)
        pairs = []
        for i in range(max(1, args.repeats)):
            # ABBA order: a drift in the machine's speed during a pair tilts odd and even pairs
            # opposite ways, and the median cancels it.
            if i % 2:
                r2 = run(2, args, circuit, two)
                pairs.append((run(1, args, circuit, one), r2))
            else:
                pairs.append((run(1, args, circuit, one), run(2, args, circuit, two)))
        diff = max_param_diff(one, two)
    rate1, rate2 = (float(np.median([p[i] for p in pairs])) for i in (0, 1))
    efficiency = float(np.median([r2 / (2 * r1) for r1, r2 in pairs]))
    print("pairs' efficiencies: " + ", ".join(f"{r2 / (2 * r1):.3f}" for r1, r2 in pairs))
    print(
        f"img_per_s_1rank={rate1:.1f} img_per_s_2ranks={rate2:.1f} "
        f"scaling_efficiency_2ranks={efficiency:.3f} max_param_diff={diff:g}"
    )


if __name__ == "__main__":
    main()
