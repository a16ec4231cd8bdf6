"""Test bits per dimension against training time: plain EM and prune-and-grow, from pc_mnist.py histories.

Each history is the JSON that ``benchmarks/pc_mnist.py --history FILE`` writes (the
test bpd after every epoch, with the training seconds so far). For example:

    python benchmarks/pc_mnist.py --prune-grow '' --history out/plain.json
    python benchmarks/pc_mnist.py --history out/prune_grow.json
    python benchmarks/pc_prune_grow_plot.py out/plain.json out/prune_grow.json -o docs/img/pc_prune_grow.png
"""

from __future__ import annotations

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def label(args: dict) -> str:
    kind = f"prune and grow {args['prune_grow']}" if args.get("prune_grow") else "plain EM"
    return f"{kind}, {args['latents']} latents, pseudocount {args['pseudocount']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("histories", nargs="+", help="JSON files written by pc_mnist.py --history")
    ap.add_argument("-o", "--output", default="docs/img/pc_prune_grow.png", help="the figure (PNG)")
    ap.add_argument("--title", default="HCLT on MNIST", help="figure title")
    args = ap.parse_args()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for path, marker in zip(args.histories, "osd^v"):
        with open(path) as f:
            run = json.load(f)
        epochs = run["epochs"]
        (line,) = ax.plot(
            [e["seconds"] / 60 for e in epochs],
            [e["test_bpd"] for e in epochs],
            marker + "-",
            label=label(run["args"]),
        )
        full = [e for e in epochs if e["full"]]  # full-batch epochs: open markers
        ax.plot([e["seconds"] / 60 for e in full], [e["test_bpd"] for e in full], marker, mfc="white",
                color=line.get_color())  # fmt: skip
    ax.plot([], [], "o", mfc="white", color="0.4", label="after a full-batch EM epoch")
    ax.set_xlabel("training time (minutes)")
    ax.set_ylabel("test bits per dimension")
    ax.set_title(args.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
