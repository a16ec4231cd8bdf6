"""HCLT on MNIST: train on the 60,000 training images, report on the 10,000 test images.

Prints a table side by side with SPFlow's HCLT trained in the same run, and ends
with the line ``bpd=<x> train_img_per_s=<y>``.

    python benchmarks/pc_mnist.py --latents 32 --epochs 4 --full-epochs 2
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import time

import numpy as np
import torch

import probcirc

sys.path.insert(0, os.path.dirname(__file__))
from probcirc.datasets import load_mnist
from probcirc.learn import em
from probcirc.structures import HCLT


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_bpd(pc, test: torch.Tensor, batch: int = 1000) -> float:
    with torch.no_grad():
        ll = torch.cat([pc.log_prob(test[s : s + batch]).double() for s in range(0, len(test), batch)])
    return float(-ll.mean() / (test.shape[1] * math.log(2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4, help="mini-batch EM epochs")
    ap.add_argument("--full-epochs", type=int, default=2, help="full-batch EM epochs after them")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--pseudocount", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--peer-budget", type=float, default=300.0, help="seconds for the SPFlow run; 0 skips it")
    ap.add_argument("--plot", default="out/pc_mnist_bpd.png", help="bits-per-dimension chart (PNG)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        train_img, _ = load_mnist("train")
        test_img, _ = load_mnist("test")
    except FileNotFoundError as err:
        sys.exit(f"pc_mnist: {err}")
    train = torch.from_numpy(train_img.reshape(len(train_img), -1)[: args.train_limit].astype(np.int64))
    test = torch.from_numpy(test_img.reshape(len(test_img), -1).astype(np.int64))

    t0 = time.perf_counter()
    root = HCLT(
        train.numpy(), args.latents, input_dist=probcirc.inputs.Categorical(256), num_bins=4, max_structure_samples=5000
    )
    pc = probcirc.compile(root)
    t_structure = time.perf_counter() - t0
    print(
        f"HCLT: {pc.num_parameters:,} parameters, {pc.num_edges:,} edges, "
        f"{len(pc.layers)} layers (structure {t_structure:.1f} s)"
    )

    t0 = time.perf_counter()
    lls = em(
        pc,
        train,
        epochs=args.epochs,
        batch_size=args.batch,
        step_size=args.step,
        pseudocount=args.pseudocount,
        full_batch_epochs=args.full_epochs,
        progress=True,
    )
    t_train = time.perf_counter() - t0
    ours = {
        "name": f"probmod HCLT (EM, {args.epochs}+{args.full_epochs} epochs)",
        "train_img_per_s": len(train) * (args.epochs + args.full_epochs) / t_train,
        "test_bpd": test_bpd(pc, test),
        "peak_rss_mb": peak_rss_mb(),
        "note": f"{len(train):,} training images, {args.threads} threads",
    }

    rows = [ours]
    if args.peer_budget > 0:
        try:
            from _spflow_peer import run_spflow_hclt
        except ImportError as err:
            rows.append({"name": "SPFlow HCLT", "error": f"adapter unavailable: {err}"})
        else:
            rows.append(
                run_spflow_hclt(
                    train.numpy().astype(np.uint8),
                    test.numpy().astype(np.uint8),
                    args.latents,
                    1,
                    args.batch,
                    args.peer_budget,
                )
            )

    print(f"\n{'model':<44} {'train img/s':>12} {'test bpd':>9} {'peak RSS MB':>12}  note")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<44} {'-':>12} {'-':>9} {'-':>12}  could not run: {r['error']}")
        else:
            print(
                f"{r['name']:<44} {r['train_img_per_s']:>12.0f} {r['test_bpd']:>9.4f} "
                f"{r['peak_rss_mb']:>12.0f}  {r.get('note', '')}"
            )
    print("(bits per dimension on the 10,000 MNIST test images; models fitted on the training split)")
    chart(lls, rows, train.shape[1], args.plot, args.epochs)
    print(f"chart -> {args.plot}")
    print(f"bpd={ours['test_bpd']:.4f} train_img_per_s={ours['train_img_per_s']:.0f}")


def chart(lls: list[float], rows: list[dict], dims: int, path: str, mini_epochs: int) -> None:
    """Training bits per dimension per EM epoch, with every model's test figure as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    epochs = np.arange(1, len(lls) + 1)
    ax.plot(epochs, [-ll / (dims * math.log(2)) for ll in lls], "o-", label="probmod HCLT, training images")
    ax.axvspan(mini_epochs + 0.5, len(lls) + 0.5, color="0.92", label="full-batch EM epochs")
    for r, style in zip(rows, ("--", ":")):
        if "test_bpd" in r:
            ax.axhline(
                r["test_bpd"],
                ls=style,
                color="k",
                lw=1,
                label=f"{r['name'].split(' (')[0]}, test images: {r['test_bpd']:.3f}",
            )
    ax.set_xticks(epochs)
    ax.set_xlabel("EM epoch")
    ax.set_ylabel("bits per dimension")
    ax.set_title("HCLT on MNIST")
    ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
