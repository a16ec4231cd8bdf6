"""Distribution Transformer vs per-data-set GMM-VI vs importance sampling on linear_gaussian (D=2, K=4).

Usage (from the repository root, with .venv/bin on PATH):

    python benchmarks/amortized_bench.py [--model PATH] [--problems 1000] [--threads 1]

Uses the shipped model amortized/models/linear_gaussian_d2_k4.h5 unless
--model is given (or trains a small one if neither exists). Prints one table
of KL(exact ‖ q), NLL and ms per posterior, then the lti_filter rollout
against the exact Gaussian-sum filter when an lti_filter model is shipped.
The last line is ``kl=<x> ms_per_posterior=<y> vi_ms_per_posterior=<z>``:
mean KL of the transformer, its ms per posterior at batch 1, and GMM-VI's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import amortized  # noqa: E402
from amortized.evaluate import evaluate, format_table  # noqa: E402
from amortized.tasks import make_task  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(amortized.MODELS / "linear_gaussian_d2_k4.h5"))
    ap.add_argument("--filter-model", default=str(amortized.MODELS / "lti_filter_k4.h5"))
    ap.add_argument("--problems", type=int, default=1000)
    ap.add_argument("--kl-samples", type=int, default=10_000)
    ap.add_argument("--vi-steps", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 = the latency setting)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    if os.path.exists(args.model):
        model = amortized.load(args.model)
    else:
        from amortized.train import build_model, train

        print(f"{args.model} not found; training a small model for 1500 steps", file=sys.stderr)
        task = make_task("linear_gaussian", dim=2, n_components=4)
        model = build_model(task)
        train(model, task, 1500, batch_size=256)
        path = os.path.join(tempfile.mkdtemp(), "model.h5")
        from probcirc import io

        io.save(model, path)
    task = make_task(model.task, **model.task_config)
    if task.name != "linear_gaussian" or task.dim != 2:
        sys.exit(
            f"error: {args.model} is a {task.name} model with dim {task.dim}; "
            "the benchmark needs linear_gaussian, dim 2"
        )
    report = evaluate(model, task, n_problems=args.problems, kl_samples=args.kl_samples, vi_steps=args.vi_steps)
    print(format_table(report))

    if os.path.exists(args.filter_model):
        from amortized.filtering import evaluate_filter, format_filter_table

        fmodel = amortized.load(args.filter_model)
        ftask = make_task(fmodel.task, **fmodel.task_config)
        print()
        print(format_filter_table(evaluate_filter(fmodel, ftask, 200, 30, 2000), 200, 30))

    dt, vi = report.row("transformer"), report.row("gmm-vi")
    print(f"speed-up over GMM-VI at batch 1: {vi.ms_batch1 / dt.ms_batch1:.0f}x (KL {dt.kl:.4f} vs {vi.kl:.4f})")
    print(f"kl={dt.kl:.4f} ms_per_posterior={dt.ms_batch1:.3f} vi_ms_per_posterior={vi.ms_batch1:.1f}")


if __name__ == "__main__":
    main()
