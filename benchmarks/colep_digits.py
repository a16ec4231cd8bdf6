"""COLEP vs standard split CP (APS, LAC) and RSCP on MNIST: clean, under L2 PGD, and certified.

MNIST (../shared/data/mnist): sensors and classifier trained on training images
0-49,999, calibration on 50,000-59,999, evaluation on the 10,000 test images,
pixels scaled to [0, 1]. Falls back to sklearn's 8x8 digits (split 50/25/25)
when the shared data is absent. alpha = 0.1.

Certification uses Gaussian smoothing (``--sigma``) with ``--n-smooth`` draws per
image; to fit a CPU budget it recalibrates the smoothed models on
``--cert-cal`` calibration images and certifies ``--cert-test`` test images
(use 0 for all). The last line is
``clean_coverage=<x> attacked_coverage=<y> certified_coverage=<z>`` for COLEP at
the larger radius: clean = plain COLEP on all test images; attacked = COLEP's
robust (smoothed, certified-for-that-radius) set at PGD-attacked inputs;
certified = fraction of test labels provably kept in the set under any L2
perturbation of that radius.

    python benchmarks/colep_digits.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from probcirc.colep import (
    COLEP, RSCP, SplitCP, classifier_loss, coverage, digits_knowledge, pgd_l2, sensor_loss, set_size, train_classifier,
    train_sensors,
)
from probcirc.datasets import load_mnist


def load(quick: bool):
    try:
        xtr, ytr = load_mnist("train")
        xte, yte = load_mnist("test")
        X = np.concatenate([xtr, xte]).reshape(-1, 784).astype(np.float32) / 255.0
        y = np.concatenate([ytr, yte]).astype(int)
        tr, ca, te = np.arange(50000), np.arange(50000, 60000), np.arange(60000, 70000)
        name = "MNIST"
        if quick:
            tr, ca, te = tr[:10000], ca[:2000], te[:2000]
    except FileNotFoundError:
        from sklearn.datasets import load_digits

        d = load_digits()
        X, y = (d.data / 16.0).astype(np.float32), d.target.astype(int)
        idx = np.random.default_rng(0).permutation(len(y))
        n = len(y)
        tr, ca, te = idx[: n // 2], idx[n // 2 : 3 * n // 4], idx[3 * n // 4 :]
        name = "sklearn digits (MNIST absent)"
    return name, X, y, tr, ca, te


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--sigma", type=float, default=0.5, help="smoothing / noise-augmentation std")
    ap.add_argument("--n-smooth", type=int, default=200)
    ap.add_argument("--cert-cal", type=int, default=2000)
    ap.add_argument("--cert-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--weight", type=float, default=1.5, help="rule weight")
    ap.add_argument("--radii", type=float, nargs=2, default=[0.5, 1.0])
    ap.add_argument("--quick", action="store_true", help="subsets and fewer draws, for a smoke run")
    a = ap.parse_args()
    if a.quick:
        a.n_smooth, a.cert_cal, a.cert_test, a.epochs = 100, 500, 300, 2
    t0 = time.time()
    name, X, y, tr, ca, te = load(a.quick)
    kb = digits_knowledge(weight=a.weight)
    print(f"{name}: train {len(tr)}, calibrate {len(ca)}, test {len(te)}; alpha={a.alpha}; concepts {kb.concepts}")

    sensors = train_sensors(X[tr], y[tr], kb, hidden=(a.hidden,), epochs=a.epochs, lr=1e-3, batch_size=128, noise_sigma=a.sigma)
    clf = train_classifier(X[tr], y[tr], kb.num_classes, hidden=(a.hidden,), epochs=a.epochs, lr=1e-3, batch_size=128, noise_sigma=a.sigma)
    print(f"trained sensors + classifier (noise sigma {a.sigma}) in {time.time() - t0:.0f}s")

    models = {
        "COLEP": COLEP(sensors, kb).calibrate(X[ca], y[ca], a.alpha),
        "COLEP-marg": COLEP(sensors, kb, mode="marginal").calibrate(X[ca], y[ca], a.alpha),
        "CP-APS": SplitCP(clf, "aps").calibrate(X[ca], y[ca], a.alpha),
        "CP-LAC": SplitCP(clf, "lac").calibrate(X[ca], y[ca], a.alpha),
    }
    attack = {"COLEP": sensor_loss(sensors, kb), "COLEP-marg": sensor_loss(sensors, kb), "CP-APS": classifier_loss(clf), "CP-LAC": classifier_loss(clf)}
    print("beta (sensor, " + ", ".join(c.name for c in kb.compiled_clusters) + ") =", np.round(models["COLEP"].reasoner.beta.numpy(), 3))

    yt = y[te]
    print(f"\n{'':10} {'clean':>15} " + " ".join(f"{'PGD r=' + str(r):>15}" for r in a.radii) + "   (coverage / mean set size)")
    adv = {}
    results = {}
    for r in a.radii:
        adv[("sensors", r)] = pgd_l2(attack["COLEP"], X[te], yt, r, steps=20)
        adv[("clf", r)] = pgd_l2(attack["CP-APS"], X[te], yt, r, steps=20)
    for k, m in models.items():
        cells = [m.predict_set(X[te])] + [m.predict_set(adv[("sensors" if k.startswith("COLEP") else "clf", r)]) for r in a.radii]
        results[k] = [coverage(s, yt) for s in cells]
        print(f"{k:10} " + " ".join(f"{coverage(s, yt):7.3f} / {set_size(s):5.2f}" for s in cells))
    print(f"[{time.time() - t0:.0f}s]")

    # ---------------------------------------------------------- smoothed / certified
    sub = te if a.cert_test == 0 else te[np.sort(np.random.default_rng(1).choice(len(te), min(a.cert_test, len(te)), replace=False))]
    pos = np.searchsorted(te, sub)
    ys = y[sub]
    cal_sub = ca if a.cert_cal == 0 else ca[np.sort(np.random.default_rng(2).choice(len(ca), min(a.cert_cal, len(ca)), replace=False))]
    rscp = RSCP(clf, sigma=a.sigma, n_samples=a.n_smooth).calibrate(X[cal_sub], y[cal_sub], a.alpha)
    n_cal = None if a.cert_cal == 0 else a.cert_cal
    deltas = [0.0] + list(a.radii)
    cert = {
        "COLEP": models["COLEP"].certify(X[sub], deltas, sigma=a.sigma, n_samples=a.n_smooth, n_calibration=n_cal),
        "COLEP-marg": models["COLEP-marg"].certify(X[sub], deltas, sigma=a.sigma, n_samples=a.n_smooth, n_calibration=n_cal),
        "RSCP": rscp.certify(X[sub], deltas),
    }
    print(f"\nsmoothed models (sigma={a.sigma}, {a.n_smooth} draws, MC failure 0.001), {len(sub)} test images, recalibrated on {len(cal_sub)}:")
    print(f"{'':10} {'clean':>15} " + " ".join(f"{'robust@PGD ' + str(r):>17}" for r in a.radii) + " " + " ".join(f"{'certified d=' + str(r):>15}" for r in a.radii))
    attacked_robust = {}
    for k, res in cert.items():
        cells = [f"{coverage(res[0].sets, ys):7.3f} / {set_size(res[0].sets):5.2f}"]
        for r in a.radii:
            xa = adv[("clf" if k == "RSCP" else "sensors", r)][pos]
            rob = rscp.certify(xa, r) if k == "RSCP" else models[k].certify(xa, r, sigma=a.sigma, n_samples=a.n_smooth, n_calibration=n_cal)
            attacked_robust[(k, r)] = coverage(rob.certified, ys)
            cells.append(f"{attacked_robust[(k, r)]:7.3f} / {set_size(rob.certified):7.2f}")
        cells += [f"{res[i].certified_coverage(ys):15.3f}" for i in range(1, len(deltas))]
        print(f"{k:10} " + " ".join(cells))
    print("(robust = the smoothed model's set certified for radius r, evaluated at PGD inputs; PGD attacks the base sensors/classifier)")
    print("(certified = fraction of labels provably kept in the set under every L2 perturbation <= d)")
    print(f"[{time.time() - t0:.0f}s]")
    r = a.radii[-1]
    print(f"clean_coverage={results['COLEP'][0]:.4f} attacked_coverage={attacked_robust[('COLEP', r)]:.4f} certified_coverage={cert['COLEP'][-1].certified_coverage(ys):.4f}")


if __name__ == "__main__":
    main()
