"""Does random-affine augmentation make COLEP's sensors lean less on the training writers? MNIST, no test images.

Sensors as in ``colep_digits.py`` (MLP(256), sigma 1.0 noise) are trained on training images 0-44,999 with
and without :func:`probcirc.colep.random_affine`, and scored on 5,000 of those training images and on the
held-out images 45,000-49,999: top-1 accuracy of the class sensors, clean and under the smoothing noise.
The train - held-out gap measures how much the sensors memorise what they saw; a smaller gap is what
augmentation is for. The test file is never read, so nothing here can tune on it. Needs ../shared/data/mnist.

    python benchmarks/colep_augment.py [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _mnist import mnist_rows

from probcirc.colep import digits_knowledge, predict_proba, random_affine, train_sensors

SIGMA = 1.0


def accuracy(sensors, X: np.ndarray, y: np.ndarray, sigma: float) -> float:
    x = torch.from_numpy(X)
    if sigma:
        x = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    return float((predict_proba(sensors, x)[:, :10].argmax(1).numpy() == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        X, y = mnist_rows()  # only training rows below are used
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return
    tr, seen, held = np.arange(45000), np.arange(5000), np.arange(45000, 50000)
    kb = digits_knowledge(3.0, 3.0)
    print(
        f"{'sensors':<22} {'epochs':>6} "
        + " ".join(f"{f'{w} sigma={s}':>20}" for s in (0.0, SIGMA) for w in ("seen", "held-out", "gap"))
        + f" {'train s':>8}"
    )
    for epochs in (10, 30):
        for name, augment in (("noise", None), ("noise + random_affine", random_affine((28, 28)))):
            t = time.time()
            s = train_sensors(
                X[tr],
                y[tr],
                kb,
                hidden=(256,),
                epochs=epochs,
                lr=1e-3,
                batch_size=128,
                noise_sigma=SIGMA,
                augment=augment,
            )
            dt = time.time() - t
            cells = []
            for sigma in (0.0, SIGMA):
                a_seen, a_held = accuracy(s, X[seen], y[seen], sigma), accuracy(s, X[held], y[held], sigma)
                cells += [f"{a_seen:20.4f}", f"{a_held:20.4f}", f"{a_seen - a_held:+20.4f}"]
            print(f"{name:<22} {epochs:>6} " + " ".join(cells) + f" {dt:8.0f}", flush=True)


if __name__ == "__main__":
    main()
