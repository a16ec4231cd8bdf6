"""Speed of the codec's PMF engine: naive (whole circuit per pixel) vs cached paths.

All three engine modes produce bit-identical PMFs (checked here too); they
differ only in how much of the circuit they re-evaluate per pixel:

- ``naive``: inside and outside passes over the whole circuit for every pixel;
- ``ancestors``: inside refreshed / derivatives recomputed on every ancestor of
  the pixel's leaves (the root path of an HCLT, O(depth) per pixel);
- ``incremental`` (the codec's default): lazy, derivatives reused while the
  pixels coded since lie in the node's scope, O(1) tree nodes amortised.

Also times the engine's own torch ``conditional()`` per pixel (float32, not
deterministic, for reference only). Uses MNIST when present, else synthetic
blobs. Single thread, CPU time and wall time.

    python benchmarks/codec_speed.py [--latents 16] [--images 8] [--naive-images 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probcirc  # noqa: E402
from probcirc.compress import PmfEngine  # noqa: E402
from probcirc.compress.program import build_program  # noqa: E402
from probcirc.inputs import Categorical  # noqa: E402
from probcirc.structures import HCLT  # noqa: E402


def data(n: int) -> np.ndarray:
    try:
        from probcirc.datasets import load_mnist

        return load_mnist("train")[0][:n].reshape(n, -1).astype(np.int64)
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:28, :28]
        imgs = [
            200 * np.exp(-((yy - rng.uniform(5, 23)) ** 2 + (xx - rng.uniform(5, 23)) ** 2) / 30)
            + rng.normal(0, 10, (28, 28))
            for _ in range(n)
        ]
        return np.clip(np.stack(imgs), 0, 255).astype(np.int64).reshape(n, -1)


def run(prog, x, mode):
    eng = PmfEngine(prog, len(x), mode)
    act = np.ones(len(x), bool)
    out = []
    t, c = time.time(), time.process_time()
    for i in prog.order:
        out.append(eng.pmfs(i, act).copy())
        eng.observe(i, x[:, i], act)
    return time.time() - t, time.process_time() - c, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latents", type=int, default=16)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--naive-images", type=int, default=1)
    ap.add_argument("--torch-pixels", type=int, default=64, help="pixels timed for torch conditional() (extrapolated)")
    args = ap.parse_args(argv)
    import numba

    numba.set_num_threads(1)
    torch.set_num_threads(1)
    x = data(2000)
    pc = probcirc.compile(HCLT(x, args.latents, input_dist=Categorical(256), num_bins=4), dtype=torch.float32)
    probcirc.learn.em(pc, torch.from_numpy(x), epochs=1, progress=False)
    prog = build_program(pc)
    test = x[: args.images]
    run(prog, test[:1], "incremental")  # compile
    print(
        f"HCLT, {args.latents} latents, {prog.num_slots} nodes, {len(prog.ch_idx)} edges, "
        f"{np.diff(prog.anc_ptr).mean():.0f} ancestors per pixel on average; 1 thread"
    )
    print(f"{'mode':28s} {'images':>6s} {'wall s/img':>11s} {'cpu s/img':>10s} {'speed-up (cpu)':>15s}")
    results = {}
    for mode, n in (("naive", args.naive_images), ("ancestors", args.images), ("incremental", args.images)):
        wall, cpu, out = run(prog, test[:n], mode)
        results[mode] = (wall / n, cpu / n, out, n)
    base = results["naive"][1]
    for mode, (w, c, _out, n) in results.items():
        print(f"{mode:28s} {n:6d} {w:11.3f} {c:10.3f} {base / c:15.1f}")
    same = all(
        np.array_equal(a[: results["naive"][3]], b[: results["naive"][3]])
        for m in ("ancestors", "incremental")
        for a, b in zip(results[m][2], results["naive"][2])
    )
    # torch reference: one conditional() (forward + backward over the whole circuit) per pixel
    xt = torch.from_numpy(test[:1])
    t, c = time.time(), time.process_time()
    for k, i in enumerate(prog.order[: args.torch_pixels]):
        mask = torch.zeros_like(xt, dtype=torch.bool)
        mask[:, prog.order[k:]] = True
        pc.conditional(xt, mask, [int(i)])
    scale = len(prog.order) / args.torch_pixels
    tw, tc = (time.time() - t) * scale, (time.process_time() - c) * scale
    print(
        f"{'torch conditional() per px':28s} {1:6d} {tw:11.3f} {tc:10.3f} "
        f"{base / tc:15.1f}   (float32, not deterministic; extrapolated)"
    )
    print(f"PMFs bit-identical across modes: {same}")
    print(
        f"speedup_incremental_vs_naive={base / results['incremental'][1]:.1f} "
        f"incremental_img_per_s_1thread={1 / results['incremental'][1]:.2f}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
