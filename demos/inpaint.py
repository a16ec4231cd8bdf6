"""Inpainting: a circuit alone, RePaint, and RePaint steered by the circuit, on every mask kind.

scikit-learn's 8x8 digits are drawn as MNIST draws its digits (a 20x20 box centred in 28x28)
so that the DDPM shipped with probcirc (trained on MNIST) applies; a small HCLT is fitted to
them here. Writes out/inpaint/methods.png: one column per mask kind, one row per method.
"""

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.datasets import load_digits

import probcirc
from probcirc.inpaint import MASK_KINDS, Steering, inpaint, make_mask
from probcirc.inpaint.diffusion import load_diffusion
from probcirc.inpaint.plot import method_grid
from probcirc.inputs import Categorical
from probcirc.learn import em
from probcirc.structures import HCLT

LEVELS = 17  # the digits' own grey levels


def mnist_like(images: np.ndarray) -> np.ndarray:
    """(N, 8, 8) levels 0..16 -> (N, 28, 28) uint8, the digit in the centred 20x20 box."""
    out = np.zeros((len(images), 28, 28), np.uint8)
    for i, img in enumerate(images):
        big = Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((20, 20), Image.BILINEAR)
        out[i, 4:24, 4:24] = np.asarray(big)
    return out


out = Path(sys.argv[1] if len(sys.argv) > 1 else "out/inpaint")
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
digits = mnist_like(load_digits().images)
order = np.random.default_rng(0).permutation(len(digits))
train, test = digits[order[:1600]], digits[order[1600:]]
levels = torch.from_numpy(np.rint(train.reshape(len(train), -1) * (LEVELS - 1) / 255).astype(np.int64))
pc = probcirc.compile(HCLT(levels.numpy(), num_latents=8, input_dist=Categorical(LEVELS)))
em(pc, levels, epochs=4, batch_size=100, step_size=0.2, pseudocount=0.1, full_batch_epochs=1)

diffusion = load_diffusion()  # the shipped MNIST DDPM: never downloaded
# the benchmark's settings, chosen on a validation split (docs/inpaint.md): the half masks steered longer
steering = Steering(weight=1.0, fraction=0.7, width=float("inf"))
fraction_for = {"left": 0.85, "top": 0.85}
rows: dict[str, list[np.ndarray]] = {"true": [], "masked": [], "circuit MPE": [], "RePaint": [], "steered": []}
seconds = {"RePaint": 0.0, "steered": 0.0}
for col, kind in enumerate(MASK_KINDS):
    x = test[col : col + 1]
    known = make_mask(kind, (28, 28), seed=col)
    rows["true"].append(x[0])
    rows["masked"].append(np.where(known, x[0], 128).astype(np.uint8))
    rows["circuit MPE"].append(inpaint(x, known, pc, method="mpe")[0])
    for label, method in (("RePaint", "repaint"), ("steered", "steered")):
        t0 = time.perf_counter()
        steer = replace(steering, fraction=fraction_for.get(kind, steering.fraction))
        rows[label].append(inpaint(x, known, pc, diffusion, method=method, steering=steer, seed=col)[0])
        seconds[label] += time.perf_counter() - t0
method_grid(rows, list(MASK_KINDS), out / "methods.png")
print(f"RePaint {seconds['RePaint']:.1f}s, steered {seconds['steered']:.1f}s over {len(MASK_KINDS)} mask kinds")
print(f"figure: {out / 'methods.png'}")
