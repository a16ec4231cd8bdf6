"""COLEP's sensor-box certificate under different knowledge, against RSCP, on MNIST.

One set of smoothed sensor counts (sigma 1.0, 1000 draws; 2,000 calibration and 500 test images) serves
every knowledge variant, since the sensors do not depend on the rules. For each variant it fits beta on
500 calibration images, calibrates on the rest, and prints the fraction of test labels certified at
delta = 0.5 and 1.0 with per-sensor intervals pushed through the circuits (``method="sensors"``), next
to RSCP on a classifier trained the same way. Needs ../shared/data/mnist.

    python benchmarks/colep_knowledge_sweep.py [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from _mnist import mnist_rows

from probcirc.colep import Reasoner, digits_knowledge, train_classifier, train_sensors
from probcirc.colep.conformal import conformal_quantile
from probcirc.colep.smoothing import bounds_from_counts, smoothed_counts

SIGMA, N, ALPHA, DELTAS = 1.0, 1000, 0.1, (0.5, 1.0)


def thresholds(scores: np.ndarray, y: np.ndarray, marginal: bool) -> np.ndarray:
    if marginal:
        return np.full(10, conformal_quantile(scores, ALPHA))
    return np.array([conformal_quantile(scores[y == j], ALPHA) for j in range(10)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        X, y = mnist_rows()
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return
    tr, ca, te = np.arange(50000), np.arange(50000, 60000, 5), np.arange(60000, 70000, 20)
    fit = dict(hidden=(256,), epochs=10, lr=1e-3, batch_size=128, noise_sigma=SIGMA, progress=True)
    sensors = train_sensors(X[tr], y[tr], digits_knowledge(), **fit)
    clf = train_classifier(X[tr], y[tr], 10, **fit)
    kc, kt = (smoothed_counts(sensors, X[i], SIGMA, N, seed=s) for i, s in ((ca, 1), (te, 2)))
    rc, rt = (smoothed_counts(lambda x: 1 - clf(x), X[i], SIGMA, N, seed=s) for i, s in ((ca, 3), (te, 4)))
    yc, yt = y[ca], y[te]
    q = conformal_quantile(rc[np.arange(len(yc)), yc] / N, ALPHA)
    rscp = [
        float((bounds_from_counts(rt, N, 0.001, d, SIGMA)[2].numpy()[np.arange(len(yt)), yt] <= q).mean())
        for d in DELTAS
    ]
    print(f"{'knowledge':<44} {'thresholds':<10} " + " ".join(f"{'certified d=' + str(d):>15}" for d in DELTAS))
    print(f"{'RSCP (same sigma, draws, images)':<44} {'marginal':<10} " + " ".join(f"{c:15.3f}" for c in rscp))
    for exclusive in (False, True):
        for w, nw in ((1.5, None), (3.0, None), (3.0, 3.0), (5.0, 5.0)):
            r = Reasoner(digits_knowledge(w, nw, exclusive))
            p = torch.from_numpy(kc / N)
            r.fit_beta(p[:500], yc[:500])
            yy = yc[500:]
            pi = r(p[500:])[:, :10].numpy()
            scores = 1 - pi[np.arange(len(yy)), yy]
            name = f"w={w} not-concept={nw} exclusive={exclusive}"
            for marginal in (False, True):
                qq = thresholds(scores, yy, marginal)
                cells = []
                for d in DELTAS:
                    _, lo, hi = bounds_from_counts(kt, N, 0.001, d, SIGMA)
                    plo, _ = r.bounds(lo, hi, range(10))
                    cells.append(float(((1 - plo.numpy()[np.arange(len(yt)), yt]) <= qq[yt]).mean()))
                print(
                    f"{name:<44} {'marginal' if marginal else 'per-class':<10} "
                    + " ".join(f"{c:15.3f}" for c in cells),
                    flush=True,
                )


if __name__ == "__main__":
    main()
