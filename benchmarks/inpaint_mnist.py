"""MNIST inpainting: circuit alone, RePaint, and RePaint steered by the circuit, on every mask kind (issue #19).

Needs a circuit over MNIST from ``probcirc train`` (``--circuit``) and a
diffusion model folder (``--diffusion``, default: the DDPM shipped with
probcirc.inpaint). A fixed digit classifier (a small CNN) is trained here on
the training split and must reach 98% on the clean test images; its accuracy
on the completed images against the true labels, the mean squared error on
the missing pixels (pixels in [0, 1]) and the Fréchet distance between its
penultimate features of completed and true images are reported per mask kind
and method, with wall time per image.

    python benchmarks/inpaint_mnist.py --circuit out/inpaint/mnist_hclt.h5 [--images 1000] [--threads 2]

Steering settings are chosen with ``--split valid``: training images from
50,000 on, which the benchmark's circuit (trained on the first 20,000) never
saw; the test images the benchmark reports are never used for tuning.

The last line is ``steered_acc=<a> repaint_acc=<b> pc_acc=<c> overhead=<t>``,
averaged over the mask kinds: ``pc_acc`` is the better circuit-only method
(conditional sample or MPE) per kind, and ``overhead`` the steered sampler's
time over RePaint's.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from probcirc.datasets import load_mnist
from probcirc.density.model import DensityModel
from probcirc.inpaint import MASK_KINDS, Steering, inpaint, make_mask
from probcirc.inpaint.diffusion import load_diffusion
from probcirc.inpaint.plot import method_grid
from probmod import io
from probmod.cli import set_threads

METHODS = {
    "pc_sample": "circuit: sample",
    "pc_mpe": "circuit: MPE",
    "repaint": "RePaint",
    "steered": "RePaint + circuit",
}
#: the validation split starts here in MNIST's training images; the benchmark's circuit saw only the first 20,000
VALID_START = 50_000


class Classifier(torch.nn.Module):
    """Two conv layers and a 64-unit feature layer: ~99% on MNIST after two epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(32 * 49, 64), torch.nn.ReLU(),
        )  # fmt: skip
        self.head = torch.nn.Linear(64, 10)

    def features(self, images: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            x = torch.from_numpy(images.astype(np.float32) / 255).unsqueeze(1)
            return torch.cat([self.body(x[s : s + 500]) for s in range(0, len(x), 500)])

    def predict(self, images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.head(self.features(images)).argmax(1).numpy()


def train_classifier(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Classifier:
    torch.manual_seed(seed)
    net = Classifier()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    xt = torch.from_numpy(x.astype(np.float32) / 255).unsqueeze(1)
    yt = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            loss = torch.nn.functional.cross_entropy(net.head(net.body(xt[idx])), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def classifier(path: Path | None, x, y, epochs: int, seed: int) -> Classifier:
    """The classifier from ``path`` (safetensors) if it exists, else trained and saved there."""
    from safetensors.torch import load_file, save_file

    if path is not None and path.is_file():
        net = Classifier()
        net.load_state_dict(load_file(path))
        return net.eval()
    net = train_classifier(x, y, epochs, seed)
    if path is not None:
        with io.atomic_path(path, overwrite=True) as tmp:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp)
    return net


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets."""
    from scipy import linalg

    a, b = a.double().numpy(), b.double().numpy()
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(ca @ cb)
    return float(((ma - mb) ** 2).sum() + np.trace(ca + cb - 2 * np.real(root)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--circuit", default="out/inpaint/mnist_hclt.h5", help="circuit over MNIST from probcirc train")
    p.add_argument("--diffusion", default=None, help="diffusion model folder (default: the shipped MNIST DDPM)")
    p.add_argument("--images", type=int, default=1000, help="MNIST test images per mask kind")
    p.add_argument("--kinds", default=",".join(MASK_KINDS), help="mask kinds, comma separated")
    p.add_argument("--methods", default=",".join(METHODS), help="methods to run, comma separated")
    p.add_argument(
        "--split", choices=("test", "valid"), default="test", help=f"test images, or training images {VALID_START:,}+"
    )
    p.add_argument("--steps", type=int, default=20, help="denoising steps")
    p.add_argument("--jump-length", type=int, default=5, help="RePaint steps per resampling jump")
    p.add_argument("--jump-n-sample", type=int, default=2, help="RePaint passes per jump")
    p.add_argument("--eta", type=float, default=1.0, help="noise share of RePaint steps (1 = ancestral, as RePaint)")
    p.add_argument("--weight", type=float, default=Steering().weight, help="steering weight")
    p.add_argument("--fraction", type=float, default=Steering().fraction, help="share of the schedule steered")
    p.add_argument(
        "--fraction-for",
        default="",
        help="per-kind shares of the schedule steered, e.g. left=0.85,top=0.85 (others: --fraction)",
    )
    p.add_argument("--width", type=float, default=Steering().width, help="soft-evidence width in pixel levels")
    p.add_argument("--classifier", default="out/inpaint/classifier.safetensors", help="classifier cache ('' = retrain)")
    p.add_argument("--classifier-epochs", type=int, default=2, help="classifier training epochs")
    p.add_argument("--figure", default=None, help="figure path ('' = none; default: docs/img for the test split)")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--seed", type=int, default=0, help="seed of masks and samplers")
    args = p.parse_args(argv)
    set_threads(args.threads)
    circuit_path = Path(args.circuit)
    if not circuit_path.is_file():
        sys.exit(f"{circuit_path}: no circuit; train one with: probcirc train MNIST.npy --latents 16 -o {circuit_path}")
    xtr, ytr = load_mnist("train")
    xte, yte = load_mnist("test")
    start = time.perf_counter()
    net = classifier(Path(args.classifier) if args.classifier else None, xtr, ytr, args.classifier_epochs, args.seed)
    clean = float((net.predict(xte) == yte).mean())
    print(f"classifier: {clean:.4f} on the 10,000 clean test images ({time.perf_counter() - start:.0f} s)", flush=True)
    if clean < 0.98:
        print("warning: the classifier is below 98% on clean images; raise --classifier-epochs", flush=True)
    model = io.load(circuit_path, kind=DensityModel)
    diffusion = load_diffusion(args.diffusion)
    steering = Steering(args.weight, args.fraction, args.width)
    methods = {m: METHODS[m] for m in args.methods.split(",") if m}
    if args.split == "valid":
        x, y = xtr[VALID_START : VALID_START + args.images], ytr[VALID_START : VALID_START + args.images]
    else:
        x, y = xte[: args.images], yte[: args.images]
    figure = args.figure if args.figure is not None else ("docs/img/inpaint_mnist.png" if args.split == "test" else "")
    fraction_for = {k: float(f) for k, f in (item.split("=") for item in args.fraction_for.split(",") if item)}
    print(f"split={args.split} images={len(x)} steering={steering} fraction_for={fraction_for}", flush=True)
    true_feats = net.features(x)
    kinds = [k for k in args.kinds.split(",") if k]
    results: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    examples: dict[str, list[np.ndarray]] = {"true": [], "masked": []} | {m: [] for m in methods.values()}
    run = dict(
        steps=args.steps, jump_length=args.jump_length, jump_n_sample=args.jump_n_sample, eta=args.eta, seed=args.seed
    )
    for kind in kinds:
        known = np.stack([make_mask(kind, (28, 28), seed=args.seed + i) for i in range(len(x))])
        examples["true"].append(x[0])
        examples["masked"].append(np.where(known[0], x[0], 128))
        results[kind] = {}
        for name, label in methods.items():
            method = name.removeprefix("pc_")
            diff = diffusion if method in ("repaint", "steered") else None
            t0 = time.perf_counter()
            steer = replace(steering, fraction=fraction_for.get(kind, steering.fraction))
            done = inpaint(x, known, model, diff, method=method, steering=steer, batch_size=args.batch_size, **run)
            seconds = (time.perf_counter() - t0) / len(x)
            acc = float((net.predict(done) == y).mean())
            mse = float(((done.astype(np.float64) - x) / 255)[~known].__pow__(2).mean())
            fd = frechet(net.features(done), true_feats)
            results[kind][name] = (acc, mse, fd, seconds)
            examples[label].append(done[0])
            print(
                f"{kind:>11} {label:>18}: acc {acc:.3f}  mse {mse:.4f}  fd {fd:8.3f}  {1000 * seconds:8.1f} ms/img",
                flush=True,
            )
    if figure:
        method_grid(examples, kinds, Path(figure))
        print(f"figure: {figure}")

    def column(name: str, i: int = 0) -> np.ndarray:  # nan where the method was not run
        return np.array([r.get(name, (np.nan,) * 4)[i] for r in results.values()])

    pc = np.fmax(column("pc_sample"), column("pc_mpe"))
    steered, repaint = column("steered"), column("repaint")
    wins = int(np.sum(steered > np.maximum(repaint, pc)))
    overhead = column("steered", 3).mean() / column("repaint", 3).mean()
    print(f"images={len(x)} kinds={len(kinds)} steered beats both baselines on {wins}/{len(kinds)} kinds")
    accs = f"steered_acc={np.mean(steered):.4f} repaint_acc={np.mean(repaint):.4f} pc_acc={np.mean(pc):.4f}"
    print(f"{accs} overhead={overhead:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
