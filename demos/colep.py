"""COLEP on sklearn's 8x8 digits: knowledge-corrected conformal sets vs standard CP, under attack, certified.

Run: python demos/colep.py  (about a minute on two CPU cores). Writes out/colep/colep_digits.png.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from probcirc.colep import (
    COLEP,
    RSCP,
    SplitCP,
    classifier_loss,
    coverage,
    digits_knowledge,
    pgd_l2,
    sensor_loss,
    set_size,
    train_classifier,
    train_sensors,
)

ALPHA, SIGMA, N_SMOOTH = 0.1, 0.25, 500
RADII = [0.0, 0.1, 0.25, 0.5]
CERT_RADII = [0.05, 0.1, 0.25]


def main() -> None:
    t0 = time.time()
    torch.set_num_threads(1)  # small tensors: one thread is fastest on a shared machine
    d = load_digits()
    X, y = (d.data / 16.0).astype(np.float32), d.target.astype(int)  # pixels in [0, 1]
    idx = np.random.default_rng(0).permutation(len(y))
    tr, ca, te = idx[:900], idx[900:1350], idx[1350:]

    # concepts: even, loop (0,6,8,9), ge5, straight (1,4,7); exclusive classes; class => (not) concept rules
    kb = digits_knowledge(weight=3.0, negative_weight=3.0)
    print(
        f"knowledge: {kb.num_classes} classes, concepts {kb.concepts}, "
        f"clusters {[len(c.variables) for c in kb.compiled_clusters]} variables"
    )
    sensors = train_sensors(X[tr], y[tr], kb, hidden=(64,), epochs=30, lr=5e-3, batch_size=128, noise_sigma=SIGMA)
    clf = train_classifier(
        X[tr], y[tr], kb.num_classes, hidden=(64,), epochs=30, lr=5e-3, batch_size=128, noise_sigma=SIGMA
    )
    print(f"trained sensors and classifier in {time.time() - t0:.1f}s")

    colep = COLEP(sensors, kb).calibrate(X[ca], y[ca], ALPHA)  # per-sensor (per-class) thresholds
    colep_m = COLEP(sensors, kb, mode="marginal").calibrate(X[ca], y[ca], ALPHA)  # one threshold
    aps = SplitCP(clf, "aps").calibrate(X[ca], y[ca], ALPHA)
    lac = SplitCP(clf, "lac").calibrate(X[ca], y[ca], ALPHA)
    rscp = RSCP(clf, sigma=SIGMA, n_samples=N_SMOOTH).calibrate(X[ca], y[ca], ALPHA)
    print(
        "beta (sensor, " + ", ".join(c.name for c in kb.compiled_clusters) + ") =",
        np.round(colep.reasoner.beta.numpy(), 3),
    )

    print(f"\nalpha={ALPHA}: coverage / mean set size on {len(te)} test digits under L2 PGD of radius r")
    print(
        "(COLEP attacked through its sensors, APS/LAC/RSCP through the classifier; "
        "'-RS' = smoothed model's robust set for delta=r)"
    )
    names = ["COLEP", "APS", "LAC", "COLEP-RS", "RSCP"]
    print(f"{'radius':>6} " + " ".join(f"{n:>14}" for n in names))
    curves = {n: [] for n in names}
    for r in RADII:
        xs = pgd_l2(sensor_loss(sensors, kb), X[te], y[te], r, steps=20)
        xc = pgd_l2(classifier_loss(clf), X[te], y[te], r, steps=20)
        row = {
            "COLEP": colep.predict_set(xs),
            "APS": aps.predict_set(xc),
            "LAC": lac.predict_set(xc),
            "COLEP-RS": colep_m.certify(xs, r, sigma=SIGMA, n_samples=N_SMOOTH, method="pipeline").certified,
            "RSCP": rscp.certify(xc, r).certified,
        }
        for k, s in row.items():
            curves[k].append(coverage(s, y[te]))
        print(f"{r:6.2f} " + " ".join(f"{coverage(s, y[te]):6.3f} / {set_size(s):5.2f}" for s in row.values()))

    print(
        f"\ncertified coverage (sigma={SIGMA}, {N_SMOOTH} noise draws, MC failure 0.001): "
        "fraction of test labels provably kept"
    )
    print("in the set under every L2 perturbation of size <= delta; and the mean size of the robust sets")
    res = {  # one marginal threshold each, like RSCP
        "COLEP (pipeline)": colep_m.certify(
            X[te], [0.0] + CERT_RADII, sigma=SIGMA, n_samples=N_SMOOTH, method="pipeline"
        ),
        "COLEP (sensor box)": colep_m.certify(X[te], [0.0] + CERT_RADII, sigma=SIGMA, n_samples=N_SMOOTH),
        "RSCP": rscp.certify(X[te], [0.0] + CERT_RADII),
    }
    print(
        "smoothed models, clean: "
        + " | ".join(f"{k} cov {coverage(v[0].sets, y[te]):.3f} size {set_size(v[0].sets):.2f}" for k, v in res.items())
    )
    # Thresholds whose coverage holds for this calibration set with probability 0.9, from the same draws.
    strict = {
        "COLEP (pipeline)": colep_m.recalibrated(ALPHA, confidence=0.9).smoothed_thresholds(
            SIGMA, N_SMOOTH, method="pipeline"
        ),
        "RSCP": rscp.recalibrated(ALPHA, confidence=0.9).q,
    }
    print(
        "  with confidence=0.9: "
        + " | ".join(
            f"{k} cov {coverage(s, y[te]):.3f} size {set_size(s):.2f}"
            for k, s in ((k, res[k][0].with_threshold(q).sets) for k, q in strict.items())
        )
    )
    print(f"{'delta':>6} " + " ".join(f"{k + ' cert/size':>24}" for k in res))
    cert = {k: [] for k in res}
    for i, d_ in enumerate(CERT_RADII, start=1):
        for k, v in res.items():
            cert[k].append(v[i].certified_coverage(y[te]))
        print(
            f"{d_:6.2f} "
            + " ".join(
                f"{v[i].certified_coverage(y[te]):17.3f} / {set_size(v[i].certified):4.2f}" for v in res.values()
            )
        )

    os.makedirs("out/colep", exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for k, v in curves.items():
        a.plot(RADII, v, marker="o", label=k)
    a.axhline(1 - ALPHA, color="grey", ls="--", lw=1)
    a.set(xlabel="L2 PGD radius", ylabel="coverage", title="coverage under attack (digits)")
    a.legend(fontsize=7)
    w = 0.27
    pos = np.arange(len(CERT_RADII))
    for i, (k, v) in enumerate(cert.items()):
        b.bar(pos + (i - 1) * w, v, w, label=k)
    b.set(
        xticks=pos,
        xticklabels=[str(r) for r in CERT_RADII],
        xlabel="certified radius delta",
        ylabel="certified coverage",
        ylim=(0, 1),
    )
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig("out/colep/colep_digits.png", dpi=110)
    print(f"\nwrote out/colep/colep_digits.png; total {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
