"""HCLT on MNIST: train on the 60,000 training images, report on the 10,000 test images.

The default is the recommended recipe (see docs/circuits_scale.md): HCLT with
256 latent states, 2 mini-batch EM epochs, then 1 full-batch epoch, pseudocount
0.1 for the leaves and none for the sum layers (runs at 64 and 128 latents there,
the epoch count checked on held-out training images, chose them). ``--prune-grow`` adds prune-and-grow
steps (prune the sum edges with the least flow, copy every node with noise).
Prints a table side by side with SPFlow's HCLT (--peer-budget > 0) and ends
with the line ``bpd=<x> train_img_per_s=<y>`` (images per second over all EM
epochs, counting any pruning pass as training time).

    python benchmarks/pc_mnist.py                                   # the recipe
    python benchmarks/pc_mnist.py --latents 32 --epochs 3 --full-epochs 1   # the speed check
    python benchmarks/pc_mnist.py --prune-grow 2:0.75:2 --epochs 10          # with prune and grow
    python benchmarks/pc_mnist.py --profile --latents 64            # where one EM step's time goes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch

import probcirc

sys.path.insert(0, os.path.dirname(__file__))
from probcirc import backend
from probcirc.datasets import load_mnist
from probcirc.density.model import parse_prune_grow
from probcirc.layers import InputLayer, ProductLayer, SumLayer
from probcirc.learn import em, grow, prune
from probcirc.structures import HCLT

#: The recipe (docs/circuits_scale.md): the best test bpd of the full-size runs there, in minutes.
RECIPE = dict(latents=256, epochs=2, full_epochs=1, sum_pseudocount=0.0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_bpd(pc, test: torch.Tensor, batch: int = 1000) -> float:
    with torch.no_grad():
        ll = torch.cat([pc.log_prob(test[s : s + batch]).double() for s in range(0, len(test), batch)])
    return float(-ll.mean() / (test.shape[1] * math.log(2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", type=int, default=RECIPE["latents"], help="latent states per variable at the start")
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="mini-batch EM epochs")
    ap.add_argument("--full-epochs", type=int, default=RECIPE["full_epochs"], help="full-batch EM epochs after them")
    ap.add_argument(
        "--prune-grow",
        default="",
        help="AT:FRACTION:FACTOR[:NOISE],... as in probcirc train: before epoch AT+1 prune, then grow ('' for none)",
    )
    ap.add_argument("--batch", type=int, default=512, help="mini-batch size")
    ap.add_argument("--step", type=float, default=0.1, help="mini-batch EM step size")
    ap.add_argument("--pseudocount", type=float, default=0.1, help="EM pseudocount")
    ap.add_argument(
        "--sum-pseudocount",
        type=float,
        default=RECIPE["sum_pseudocount"],
        help="the sum layers' EM pseudocount (--pseudocount is the leaves')",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument(
        "--precision",
        default="ieee",
        choices=backend.PRECISIONS,
        help="matrix products during EM (bf16: bfloat16 factors on CPU/GPU; evaluation is always exact)",
    )
    ap.add_argument("--train-limit", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--test-limit", type=int, default=None, help="use only the first N test images")
    ap.add_argument("--peer-budget", type=float, default=300.0, help="seconds for the SPFlow run; 0 skips it")
    ap.add_argument("--plot", default="out/pc_mnist_bpd.png", help="bits-per-dimension chart (PNG)")
    ap.add_argument("--history", default=None, help="write (seconds, test bpd) after every epoch to this JSON")
    ap.add_argument("--profile", action="store_true", help="time one EM step per layer kind and phase, then exit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        train_img, _ = load_mnist("train")
        test_img, _ = load_mnist("test")
    except FileNotFoundError as err:
        sys.exit(f"pc_mnist: {err}")
    train = torch.from_numpy(train_img.reshape(len(train_img), -1)[: args.train_limit].astype(np.int64))
    test = torch.from_numpy(test_img.reshape(len(test_img), -1)[: args.test_limit].astype(np.int64))
    steps = {st.at: st for st in parse_prune_grow(args.prune_grow)}
    print(
        f"prune and grow: {args.prune_grow or 'none'}; pseudocount {args.pseudocount} "
        f"(sum layers {args.sum_pseudocount})"
    )

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
    if args.profile:
        profile(pc, train[: args.batch], args.latents)
        return

    total = args.epochs + args.full_epochs
    lls, history, t_train = [], [], 0.0
    for epoch in range(total):
        t0 = time.perf_counter()
        if epoch in steps:
            st = steps[epoch]
            pc = grow(prune(pc, train, st.fraction, check=False), st.factor, st.noise, check=False,
                      generator=torch.Generator().manual_seed(epoch))  # fmt: skip
            print(f"prune {st.fraction:.0%} and grow x{st.factor}: {pc.num_edges:,} edges, {pc.num_nodes:,} nodes")
        full = epoch >= args.epochs
        with backend.approximate(args.precision):
            lls += em(
                pc, train, epochs=0 if full else 1, full_batch_epochs=int(full), batch_size=args.batch,
                step_size=args.step, pseudocount=args.pseudocount, sum_pseudocount=args.sum_pseudocount,
                seed=epoch, progress=True,
            )  # fmt: skip
        t_train += time.perf_counter() - t0
        if args.history:
            history.append({"epoch": epoch + 1, "seconds": t_train, "test_bpd": test_bpd(pc, test), "full": full})
            print(f"  after epoch {epoch + 1}: {t_train:.0f} s of training, test {history[-1]['test_bpd']:.4f} bpd")
            with open(args.history, "w") as f:
                json.dump({"args": vars(args), "epochs": history}, f, indent=1)
    ours = {
        "name": f"probmod HCLT (EM, {args.epochs}+{args.full_epochs} epochs)",
        "train_img_per_s": len(train) * total / t_train,
        "test_bpd": test_bpd(pc, test),
        "peak_rss_mb": peak_rss_mb(),
        "note": f"{len(train):,} training images, {args.threads} threads, {pc.num_edges:,} edges at the end",
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
    print(f"(bits per dimension on the {len(test):,} MNIST test images; models fitted on the training split)")
    chart(lls, rows, train.shape[1], args.plot, args.epochs)
    print(f"chart -> {args.plot}")
    print(f"bpd={ours['test_bpd']:.4f} train_img_per_s={ours['train_img_per_s']:.0f}")


def profile(pc, batch: torch.Tensor, latents: int, repeats: int = 3) -> None:
    """Seconds and working memory of one EM step on ``batch``, by phase and layer kind (best of ``repeats``)."""
    times: dict[str, float] = {}

    def timed(key: str, fn, *a):
        t0 = time.perf_counter()
        out = fn(*a)
        times[key] = times.get(key, 0.0) + time.perf_counter() - t0
        return out

    best: dict[str, float] = {}
    with torch.no_grad():
        for _ in range(repeats):
            times.clear()
            x, missing = timed("prepare", pc._prepare, batch, None)
            mars = torch.empty(pc._num_slots, x.shape[1], dtype=pc.dtype)
            mars[0] = 0.0
            for layer in pc.layers:
                if isinstance(layer, InputLayer):
                    timed("forward input", layer, mars, x, missing)
                else:
                    timed(f"forward {_kind(layer)}", layer, mars)
            flows = torch.zeros_like(mars)
            flows[-1] = 1.0
            grads = []
            for layer in reversed(pc.layers):
                if isinstance(layer, SumLayer):
                    grads.append(timed("backward sum", layer.backward, mars, flows))
                elif isinstance(layer, ProductLayer):
                    timed("backward product", layer.backward, mars, flows)
            grads.reverse()
            stats = [timed("statistics input", l.em_stats, flows, x, missing) for l in pc._input_layers]
            for layer, g in zip(pc._sum_layers, grads):
                timed("update sum", layer.em_update, layer.weight * g, 0.1, 0.1)
            for layer, s in zip(pc._input_layers, stats):
                timed("update input", layer.m_step, s, 0.1)
            best = {k: min(v, best.get(k, math.inf)) for k, v in times.items()}
    b, f32 = len(batch), 4
    sums = pc._sum_layers
    memory = {
        "node values (slots x batch)": pc._num_slots * b * f32,
        "flows (slots x batch)": pc._num_slots * b * f32,
        "sum weights": sum(l.weight.numel() for l in sums) * f32,
        "input parameters (+ statistics)": 2 * sum(l.params.numel() for l in pc._input_layers) * f32,
        "largest sum-layer temporary (exp'd children)": max(l.child_idx.numel() for l in sums) * b * f32,
    }
    step = sum(best.values())
    print(f"one EM step, {latents} latents, batch {b}: {step:.3f} s ({b / step:.0f} img/s), layers {len(pc.layers)}")
    for k, v in sorted(best.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<22} {v:8.3f} s  {100 * v / step:5.1f} %")
    for k, v in memory.items():
        print(f"  {k:<46} {v / 2**20:9.1f} MiB")
    print(f"  peak RSS {peak_rss_mb():.0f} MiB")


def _kind(layer) -> str:
    return "sum" if isinstance(layer, SumLayer) else "product"


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
