"""Sparse coding on natural images: do BSC and MCA learn Gabor-like dictionaries? Judged with no human.

Runs the shipped recipe end to end through the command line, on 2 MPI ranks:

1. ``sparsecoding data patches`` (defaults: mean removed, the most variable half
   kept, ZCA-whitened, unit variance) cuts 12x12 patches from scikit-image's
   photographs; MCA gets the same patches as ON/OFF channels (``--channels onoff``),
   because its causes are non-negative;
2. ``mpiexec -n 2 sparsecoding train`` with H=64 and the training defaults
   (W from small noise, T annealed 2 -> 1; BSC with H'=8, gamma=5, MCA with H'=6, gamma=3);
3. ``sparsecoding plot`` fits a 2-D Gabor to every field and stores the numbers
   in ``results.h5`` under ``quality/``.

The last line is exactly ``bsc_gabor_share=<x> mca_gabor_share=<y> bsc_s_per_iter=<t>``:
the shares of fields that a Gabor explains with R² >= 0.7 and BSC's median wall
seconds per EM step. ``--docs`` copies the two dictionary pictures to
``docs/img/sparsecoding_{bsc,mca}_dictionary.png``.

Usage:  python benchmarks/sparsecoding_images.py [--N 10000] [--steps 40] [--ranks 2] [--docs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _cli(*args: str, ranks: int = 1) -> None:
    cmd = [sys.executable, "-m", "sparsecoding", *args]
    if ranks > 1:
        exe = Path(sys.executable).parent / "mpiexec"
        cmd = [str(exe) if exe.exists() else "mpiexec", "-n", str(ranks), *cmd]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    for line in (r.stdout + r.stderr).splitlines():
        if line.startswith(("done:", "Gabor share", "sparsecoding train: warning")):
            print("  " + line)


def run_model(model: str, tmp: Path, N: int, steps: int, ranks: int, seed: int) -> tuple[dict, float]:
    from sparsecoding.io import load_quality, load_results

    data, run = tmp / f"{model}.h5", tmp / f"{model}_run"
    channels = "onoff" if model == "mca" else "signed"
    _cli("data", "patches", "--N", str(N), "--size", "12", "--channels", channels, "-o", str(data), "-q", "--force")
    # MCA pays a power per state and pixel in its M-step: fewer candidates keep it affordable, and with
    # about one cause active per patch, gamma = 3 still holds over 95% of the prior mass
    truncation = ["--Hprime", "6", "--gamma", "3"] if model == "mca" else []
    _cli(
        "train", "--model", model, "--data", str(data), "--H", "64", "--steps", str(steps), *truncation,
        "--seed", str(seed), "-o", str(run), "--force", "-q", ranks=ranks,
    )  # fmt: skip
    quality = load_quality(run)
    if quality is None:
        raise SystemExit(f"{run}/results.h5 holds no quality/ numbers")
    wall = load_results(run)["wall_time"]
    return quality, float(np.median(wall[1:] if len(wall) > 1 else wall))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=10000, help="patches per model")
    ap.add_argument("--steps", type=int, default=40, help="EM steps per model")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--docs", action="store_true", help="copy the dictionary pictures to docs/img/")
    args = ap.parse_args()

    shares, times = {}, {}
    with tempfile.TemporaryDirectory(prefix="sc_images_") as tmp:
        for model in ("bsc", "mca"):
            print(f"{model.upper()}: H=64 on {args.N} whitened 12x12 patches, {args.steps} steps, {args.ranks} ranks")
            q, t = run_model(model, Path(tmp), args.N, args.steps, args.ranks, args.seed)
            shares[model], times[model] = q["gabor_share"], t
            print(
                f"  Gabor share {q['gabor_share']:.3f}, orientation coverage {q['orientation_coverage']:.2f}, "
                f"frequency coverage {q['frequency_coverage']:.2f}, median {t:.3f} s per EM step"
            )
            if args.docs:
                dest = REPO / "docs" / "img" / f"sparsecoding_{model}_dictionary.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(tmp) / f"{model}_run" / "dictionary.png", dest)
                print(f"  picture: {dest.relative_to(REPO)}")
    print(f"bsc_gabor_share={shares['bsc']:.3f} mca_gabor_share={shares['mca']:.3f} bsc_s_per_iter={times['bsc']:.4f}")


if __name__ == "__main__":
    main()
