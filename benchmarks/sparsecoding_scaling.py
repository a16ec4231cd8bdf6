"""Sparse coding timings: BSC seconds per EM iteration and MPI strong scaling.

1. BSC on the bars test (N=1000, H=10, H'=8, gamma=5), one rank, in process.
2. BSC on whitened 12x12 natural-image patches (H=100, H'=10, gamma=4,
   N=50,000) through ``mpiexec -n 1`` and ``-n 2``, ``--repeats`` times each,
   interleaved (1 then 2 ranks, then 2 then 1, ...) so that a change in the
   machine's load falls on both alike; strong-scaling efficiency ``t1 / (2 t2)``
   of each adjacent pair, and the median over the pairs.

3. With ``--large``: BSC with H=256 on 16x16 patches (H'=10, gamma=4,
   ``--large-N`` points) in process on one rank: seconds per EM step and the
   process's peak resident memory (ProSper's users run this size).

Per-iteration times are medians of the per-step wall times recorded in the
results (start-up, data loading and the first step, which warms caches, excluded;
a step's time runs from the end of the previous step, so it includes rank 0's
saving of results, which the other ranks wait for). Every rank runs one thread
(``--threads 1``; BLAS, OpenMP and numba limited through the environment too).
On a shared machine, other processes stall a 2-rank run more than a 1-rank one
(its ranks use both cores and the slower one sets the pace), so measure idle.
The last line is exactly
``bars_s_per_iter=<x> patches_s_per_iter_1rank=<y> scaling_efficiency_2ranks=<z>``.

Usage:  python benchmarks/sparsecoding_scaling.py [--steps 8] [--repeats 3] [--N 50000] [--bars-steps 40] [--large]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def bars_timing(steps: int) -> tuple[float, float]:
    from sparsecoding import BSC, bars_data

    d = bars_data(N=1000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two steps do not converge
        BSC(H=10, Hprime=8, gamma=5, steps=2).fit(d["Y"])  # first-call costs (imports, caches) out of the timing
    m = BSC(H=10, Hprime=8, gamma=5, steps=steps, anneal="2:1@0.6")
    c0 = time.process_time()
    m.fit(d["Y"])
    cpu = (time.process_time() - c0) / steps
    return float(np.median(m.history_["wall_time"])), cpu


def patches_timing(path: Path, ranks: int, steps: int, out: Path) -> float:
    from sparsecoding.io import load_results

    exe = Path(sys.executable).parent / "mpiexec"
    cmd = [
        str(exe) if exe.exists() else "mpiexec",
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "sparsecoding",
        "train",
        "--model",
        "bsc",
        "--data",
        str(path),
        "--H",
        "100",
        "--Hprime",
        "10",
        "--gamma",
        "4",
        "--steps",
        str(steps),
        "--anneal",
        "1",
        "--out",
        str(out),
        "--force",
        "--quiet",
        "--no-plot",
        "--checkpoint-every",
        str(steps),
        "--threads",
        "1",
    ]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"patches run with {ranks} ranks failed:\n{r.stderr[-2000:]}")
    t = load_results(out)["wall_time"]
    return float(np.median(t[1:] if len(t) > 1 else t))  # the first step also warms caches


def large_timing(N: int, steps: int) -> tuple[float, float]:
    """BSC H=256 on 16x16 whitened patches: median seconds per EM step and peak resident memory in GiB."""
    import resource

    from sparsecoding import BSC
    from sparsecoding.data import image_patches

    Y = image_patches(N, 16, seed=0, keep=0.5)
    m = BSC(H=256, Hprime=10, gamma=4, steps=steps, anneal="1", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few steps do not converge
        m.fit(Y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    wall = m.history_["wall_time"]
    return float(np.median(wall[1:] if len(wall) > 1 else wall)), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars-steps", type=int, default=40)
    ap.add_argument("--steps", type=int, default=8, help="EM steps per patches run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved 1-rank and 2-rank runs of each")
    ap.add_argument("--N", type=int, default=50000, help="number of patches")
    ap.add_argument("--large", action="store_true", help="also time BSC with H=256 on 16x16 patches")
    ap.add_argument("--large-N", type=int, default=50000, help="patches for --large")
    ap.add_argument("--large-steps", type=int, default=3, help="EM steps for --large")
    args = ap.parse_args()

    if args.large:
        t, peak = large_timing(args.large_N, args.large_steps)
        print(
            f"BSC large (N={args.large_N}, 16x16 patches, H=256, H'=10, gamma=4), 1 rank: {t:.3f} s/iter, "
            f"peak resident memory {peak:.2f} GiB"
        )

    bars_wall, bars_cpu = bars_timing(args.bars_steps)
    print(
        f"BSC bars (N=1000, H=10, H'=8, gamma=5), 1 rank: {bars_wall * 1e3:.2f} ms/iter wall "
        f"(median), {bars_cpu * 1e3:.2f} ms/iter CPU; reference Python library about 150 ms"
    )

    from sparsecoding.data import image_patches
    from sparsecoding.io import write_data

    with tempfile.TemporaryDirectory(prefix="sc_bench_") as tmp:
        tmp = Path(tmp)
        data = tmp / "patches.h5"
        t0 = time.perf_counter()
        write_data(data, image_patches(args.N, 12, seed=0), attrs={"patch_shape": (12, 12)})
        print(f"patches: {args.N} whitened 12x12 patches from scikit-image images in {time.perf_counter() - t0:.1f} s")
        t1s, t2s = [], []
        for r in range(args.repeats):
            for ranks in (1, 2) if r % 2 == 0 else (2, 1):  # alternate the order: drift in load hits both
                t = patches_timing(data, ranks, args.steps, tmp / f"r{ranks}")
                (t1s if ranks == 1 else t2s).append(t)
                print(f"  run {r + 1}, {ranks} rank(s): {t:.3f} s/iter", flush=True)
    t1, t2 = float(np.median(t1s)), float(np.median(t2s))
    eff = float(np.median([a / (2 * b) for a, b in zip(t1s, t2s)]))
    print(
        f"BSC patches (N={args.N}, H=100, H'=10, gamma=4, {args.steps} steps, {args.repeats} interleaved repeats): "
        f"1 rank {t1:.3f} s/iter, 2 ranks {t2:.3f} s/iter (medians); strong-scaling efficiency {eff:.2f} "
        f"(median over pairs; from the medians {t1 / (2 * t2):.2f}; cpus on this machine: {os.cpu_count()})"
    )
    print(f"bars_s_per_iter={bars_wall:.5f} patches_s_per_iter_1rank={t1:.4f} scaling_efficiency_2ranks={eff:.3f}")


if __name__ == "__main__":
    main()
