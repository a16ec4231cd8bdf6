"""COLEP vs standard split CP (APS, LAC) and RSCP on MNIST: clean, under L2 PGD, and certified.

MNIST (../shared/data/mnist): sensors and classifier trained on training images
0-49,999, calibration on 50,000-59,999, evaluation on the 10,000 test images,
pixels scaled to [0, 1]. Falls back to sklearn's 8x8 digits (split 50/25/25)
when the shared data is absent. alpha = 0.1.

Certification uses Gaussian smoothing (``--sigma``) with ``--n-smooth`` draws per
image. By default the smoothed models are recalibrated on all calibration
images and certify all 10,000 test images (about 30 minutes on 2 cores);
``--cert-cal 2000 --cert-test 2000`` takes random subsets (about 9 minutes).
Every model is thresholded two ways, from the same scores: with the
⌈(n+1)(1-α)⌉ rule (coverage ≥ 1-α on average over calibration draws) and
with the training-conditional rule at ``--confidence`` (coverage ≥ 1-α for
the calibration set at hand with that probability; rows marked ``c=``).

The last line is
``clean_coverage=<x> attacked_coverage=<y> certified_coverage=<z>`` for the
smoothed COLEP we recommend (one marginal threshold, APS score, pipeline
certificate, training-conditional thresholds; ``--headline`` picks another
row) at the larger radius, on the certified test images: clean = its sets
at clean inputs; attacked = its robust (certified-for-that-radius) sets at
PGD-attacked inputs; certified = fraction of test labels provably kept in
the set under any L2 perturbation of that radius.

    python benchmarks/colep_digits.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _mnist import mnist_rows

from probcirc.colep import (
    COLEP,
    RSCP,
    SplitCP,
    classifier_loss,
    conformal_quantile,
    coverage,
    digits_knowledge,
    pgd_l2,
    sensor_loss,
    set_size,
    train_classifier,
    train_sensors,
)

SMOOTHED_ROWS = ("COLEP/box", "COLEP/pipe", "COLEP-m/box", "COLEP-m/pipe", "COLEP-m-aps/pipe", "RSCP", "RSCP-aps")


def load(quick: bool):
    try:
        X, y = mnist_rows()
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


def population_mix(X: np.ndarray, tr: np.ndarray, ca: np.ndarray, te: np.ndarray) -> str:
    """Do the calibration images mix MNIST's two writer populations as the training images and test file do?

    A logistic regression learns to tell the test file's halves apart from pixels alone (no digit labels).
    Its mean score on a set rises with the set's share of the second population (it is not that share:
    the penalty pulls scores towards 0.5), so equal means say the sets mix the populations alike.
    The test file's mean is taken on the half of it the regression did not see.
    """
    from sklearn.linear_model import LogisticRegression

    half = np.r_[np.zeros(len(te) // 2), np.ones(len(te) - len(te) // 2)]
    perm = np.random.default_rng(4).permutation(len(te))
    fit, held = perm[: len(te) // 2], perm[len(te) // 2 :]
    clf = LogisticRegression(C=0.1, max_iter=300).fit(X[te[fit]], half[fit])
    acc = clf.score(X[te[held]], half[held])
    share = {
        name: clf.predict_proba(X[idx])[:, 1].mean()
        for name, idx in (("training", tr), ("calibration", ca), ("held-out test", te[held]))
    }
    return (
        f"a pixel classifier tells the test file's halves apart {acc:.0%} of the time (held out); its mean score on "
        + ", ".join(f"{k} images {v:.3f}" for k, v in share.items())
        + " (equal means: the same mix)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--sigma", type=float, default=1.0, help="smoothing / noise-augmentation std")
    ap.add_argument("--n-smooth", type=int, default=1000)
    ap.add_argument("--cert-cal", type=int, default=0, help="calibration images for the smoothed models (0: all)")
    ap.add_argument("--cert-test", type=int, default=0, help="test images to certify (0: all)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--weight", type=float, default=3.0, help="rule weight")
    ap.add_argument(
        "--negative-weight", type=float, default=3.0, help="weight of class => not concept rules (<0: none)"
    )
    ap.add_argument("--radii", type=float, nargs=2, default=[0.5, 1.0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--confidence",
        type=float,
        default=0.9,
        help="confidence of the training-conditional thresholds (0: only the marginal rule)",
    )
    ap.add_argument(
        "--headline", default="COLEP-m-aps/pipe c=", help="smoothed row behind the last line ('c=': conditional rule)"
    )
    ap.add_argument("--quick", action="store_true", help="subsets and fewer draws, for a smoke run")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    if not 0 <= a.confidence < 1:
        ap.error(f"--confidence must be in [0, 1), got {a.confidence}")
    rules = {"": None} | ({f" c={a.confidence:g}": a.confidence} if a.confidence else {})
    if a.headline.endswith(" c="):  # the default: the conditional rule at --confidence, or the marginal one without it
        a.headline = a.headline + f"{a.confidence:g}" if a.confidence else a.headline[:-3]
    headline, _, rule = a.headline.partition(" ")
    if headline not in SMOOTHED_ROWS or (rule and " " + rule not in rules):
        ap.error(
            f"--headline must be one of {SMOOTHED_ROWS}, "
            f"optionally followed by ' c={a.confidence:g}'; got {a.headline!r}"
        )
    if a.quick:
        a.n_smooth, a.cert_cal, a.cert_test, a.epochs = 100, 500, 300, 2
    t0 = time.time()
    name, X, y, tr, ca, te = load(a.quick)
    kb = digits_knowledge(weight=a.weight, negative_weight=a.negative_weight if a.negative_weight >= 0 else None)
    print(
        f"{name}: train {len(tr)}, calibrate {len(ca)}, test {len(te)}; alpha={a.alpha}; concepts {kb.concepts}; "
        f"exclusive classes, rules weight {a.weight} / {a.negative_weight}"
    )

    fit = dict(hidden=(a.hidden,), epochs=a.epochs, lr=1e-3, batch_size=128, progress=True)
    sensors = train_sensors(X[tr], y[tr], kb, noise_sigma=a.sigma, **fit)
    clf_noise = train_classifier(X[tr], y[tr], kb.num_classes, noise_sigma=a.sigma, **fit)
    clf = train_classifier(X[tr], y[tr], kb.num_classes, **fit)
    print(
        f"trained sensors + RSCP classifier (noise sigma {a.sigma}) "
        f"and a standard classifier in {time.time() - t0:.0f}s"
    )

    models = {
        "COLEP": COLEP(sensors, kb).calibrate(X[ca], y[ca], a.alpha),
        "COLEP-marg": COLEP(sensors, kb, mode="marginal").calibrate(X[ca], y[ca], a.alpha),
        "COLEP-aps": COLEP(sensors, kb, score="aps").calibrate(X[ca], y[ca], a.alpha),
        "COLEP-m-aps": COLEP(sensors, kb, mode="marginal", score="aps").calibrate(X[ca], y[ca], a.alpha),
        "CP-APS": SplitCP(clf, "aps").calibrate(X[ca], y[ca], a.alpha),
        "CP-LAC": SplitCP(clf, "lac").calibrate(X[ca], y[ca], a.alpha),
        "CP-APS-n": SplitCP(clf_noise, "aps").calibrate(X[ca], y[ca], a.alpha),
    }
    attack = {"COLEP": sensor_loss(sensors, kb), "CP": classifier_loss(clf), "CP-n": classifier_loss(clf_noise)}
    target = {
        "COLEP": "COLEP",
        "COLEP-marg": "COLEP",
        "COLEP-aps": "COLEP",
        "COLEP-m-aps": "COLEP",
        "CP-APS": "CP",
        "CP-LAC": "CP",
        "CP-APS-n": "CP-n",
    }
    print(
        "beta (sensor, " + ", ".join(c.name for c in kb.compiled_clusters) + ") =",
        np.round(models["COLEP"].reasoner.beta.numpy(), 3),
    )

    yt = y[te]
    print(
        f"\nbase models, all {len(te)} test images "
        "(CP-*: standard classifier; CP-APS-n: the noise-trained one RSCP smooths)"
    )
    print(
        f"{'':18} {'clean':>15} "
        + " ".join(f"{'PGD r=' + str(r):>15}" for r in a.radii)
        + "   (coverage / mean set size)"
    )
    adv = {(k, r): pgd_l2(loss, X[te], yt, r, steps=20) for k, loss in attack.items() for r in a.radii}
    for k, base in models.items():
        for rule, conf in rules.items():
            m = base.recalibrated(a.alpha, conf)
            cells = [m.predict_set(X[te])] + [m.predict_set(adv[(target[k], r)]) for r in a.radii]
            print(f"{k + rule:18} " + " ".join(f"{coverage(s, yt):7.3f} / {set_size(s):5.2f}" for s in cells))
    if len(te) == 10000:  # MNIST: its test file holds two writer populations, 5,000 images each
        perm = np.random.default_rng(3).permutation(ca)
        a_, b_ = perm[: len(ca) // 2], perm[len(ca) // 2 :]
        for k, score in (("COLEP-marg", "lac"), ("COLEP-m-aps", "aps")):
            m = models[k]
            halves = [coverage(m.predict_set(X[te[h]]), yt[h]) for h in (slice(0, 5000), slice(5000, None))]
            control = COLEP(sensors, kb, mode="marginal", score=score).calibrate(X[a_], y[a_], a.alpha)
            within = []
            for seed in range(10):  # calibration and test both drawn from the test file: exchangeable
                p_ = np.random.default_rng(10 + seed).permutation(te)
                c_, t_ = p_[: len(te) // 2], p_[len(te) // 2 :]
                within.append(
                    coverage(
                        COLEP(sensors, kb, mode="marginal", score=score)
                        .calibrate(X[c_], y[c_], a.alpha)
                        .predict_set(X[t_]),
                        y[t_],
                    )
                )
            print(
                f"split check, {k}: test images 0-4,999 {halves[0]:.3f}, 5,000-9,999 {halves[1]:.3f}; "
                "calibrated on half the calibration images, "
                f"on the other half {coverage(control.predict_set(X[b_]), y[b_]):.3f}; "
                f"on a random half of the test images, on the other half {np.mean(within):.3f} (mean of 10 splits)"
            )
        print("population check: " + population_mix(X, tr, ca, te))
    print(f"[{time.time() - t0:.0f}s]")

    # ---------------------------------------------------------- smoothed / certified
    sub = (
        te
        if a.cert_test == 0
        else te[np.sort(np.random.default_rng(1).choice(len(te), min(a.cert_test, len(te)), replace=False))]
    )
    pos = np.searchsorted(te, sub)
    ys = y[sub]
    cal_sub = (
        ca
        if a.cert_cal == 0
        else ca[np.sort(np.random.default_rng(2).choice(len(ca), min(a.cert_cal, len(ca)), replace=False))]
    )
    rscp = {
        score: RSCP(clf_noise, sigma=a.sigma, n_samples=a.n_smooth, score=score).calibrate(
            X[cal_sub], y[cal_sub], a.alpha
        )
        for score in ("lac", "aps")
    }
    n_cal = None if a.cert_cal == 0 else a.cert_cal
    deltas = [0.0] + list(a.radii)
    smoothed = {  # row: (model, certification method), in SMOOTHED_ROWS's order
        "COLEP/box": (models["COLEP"], "sensors"),
        "COLEP/pipe": (models["COLEP"], "pipeline"),
        "COLEP-m/box": (models["COLEP-marg"], "sensors"),
        "COLEP-m/pipe": (models["COLEP-marg"], "pipeline"),
        "COLEP-m-aps/pipe": (models["COLEP-m-aps"], "pipeline"),
    }

    def certify(k, x, d):
        if k.startswith("RSCP"):
            return rscp["aps" if k.endswith("aps") else "lac"].certify(x, d)
        m, method = smoothed[k]
        return m.certify(x, d, sigma=a.sigma, n_samples=a.n_smooth, n_calibration=n_cal, method=method)

    def thresholds(k, conf):
        """Smoothed thresholds under one rule, from the calibration scores certify() already drew."""
        if k.startswith("RSCP"):
            return rscp["aps" if k.endswith("aps") else "lac"].recalibrated(a.alpha, conf).q
        m, method = smoothed[k]
        return m.recalibrated(a.alpha, conf).smoothed_thresholds(
            a.sigma, a.n_smooth, n_calibration=n_cal, method=method
        )

    n_colep = len(models["COLEP"]._y_conf) if n_cal is None else min(n_cal, len(models["COLEP"]._y_conf))
    print(
        f"\nsmoothed models (sigma={a.sigma}, {a.n_smooth} draws, MC failure 0.001), "
        f"{len(sub)} test images; thresholds "
        f"recalibrated on {n_colep} calibration images for COLEP (those not used for beta), {len(cal_sub)} for RSCP:"
    )
    print(
        "(box: per-sensor intervals pushed through the circuits; "
        "pipe: the class scores of the corrected probabilities smoothed;"
    )
    print(" -m: one marginal threshold; -aps: APS score, else LAC; c=: training-conditional thresholds)")
    print(
        f"{'':23} {'clean':>15} "
        + " ".join(f"{'robust@PGD ' + str(r):>17}" for r in a.radii)
        + " "
        + " ".join(f"{'certified d=' + str(r):>15}" for r in a.radii)
    )
    out, scores = {}, {}
    for k in SMOOTHED_ROWS:
        res = certify(k, X[sub], deltas)
        robust = {r: certify(k, adv[("COLEP" if k.startswith("COLEP") else "CP-n", r)][pos], r) for r in a.radii}
        scores[k] = res[0].scores
        for rule, conf in rules.items():
            q = thresholds(k, conf)
            clean = res[0].with_threshold(q).sets
            cells = [f"{coverage(clean, ys):7.3f} / {set_size(clean):5.2f}"]
            row = out[k + rule] = {"clean": coverage(clean, ys)}
            for r in a.radii:
                rob = robust[r].with_threshold(q).certified
                row[("attacked", r)] = coverage(rob, ys)
                cells.append(f"{coverage(rob, ys):7.3f} / {set_size(rob):7.2f}")
            for i, r in enumerate(a.radii, 1):
                row[("certified", r)] = res[i].with_threshold(q).certified_coverage(ys)
                cells.append(f"{row[('certified', r)]:15.3f}")
            print(f"{k + rule:23} " + " ".join(cells), flush=True)
    print(
        "(robust = the smoothed model's set certified for radius r, at PGD inputs (PGD on the base sensors/classifier);"
    )
    print(" it covers whenever the clean smoothed set covers, so the set size is its price)")
    print("(certified = fraction of labels provably kept in the standard set under every L2 perturbation <= d)")
    for (
        rule,
        conf,
    ) in rules.items():  # the headline's smoothed scores, calibrated and tested within the certified test images
        within = []
        for seed in range(200):
            p_ = np.random.default_rng(100 + seed).permutation(len(sub))
            c_, t_ = p_[: len(sub) // 2], p_[len(sub) // 2 :]
            q = conformal_quantile(scores[headline][c_, ys[c_]].numpy(), a.alpha, conf)
            within.append(float((scores[headline][t_, ys[t_]] <= q).double().mean()))
        print(
            f"exchangeable check, {headline + rule}: "
            f"thresholds from a random half of the {len(sub)} certified test images cover "
            f"the other half at {np.mean(within):.3f} (mean of 200 splits; 5-95%: {np.percentile(within, 5):.3f}-"
            f"{np.percentile(within, 95):.3f}; "
            f"at least {1 - a.alpha:g} in {np.mean(np.array(within) >= 1 - a.alpha):.0%})"
        )
    print(f"[{time.time() - t0:.0f}s]")
    r = a.radii[-1]
    best = out[a.headline]
    print(
        f"clean_coverage={best['clean']:.4f} attacked_coverage={best[('attacked', r)]:.4f} "
        f"certified_coverage={best[('certified', r)]:.4f}"
    )


if __name__ == "__main__":
    main()
