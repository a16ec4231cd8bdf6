"""Query latency of HCLT on MNIST test images, with and without the leaves' kept log table.

The categorical leaves keep ``log θ`` (and, for max-product, the log-probability of
each leaf's mode) until their parameters change; before, every pass recomputed 6.4
million logarithms for HCLT(32). This script times three queries at a few batch
sizes, one thread, in one run: the engine as it is, and the same circuit with
nothing kept (every pass derives the table again, the path before), call by call
in turn. The
parameters come from one epoch of mini-batch EM on 10,000 training images; the
timings do not depend on them, only the answers do, and both paths must give the
same answers.

    python benchmarks/pc_queries.py
    python benchmarks/pc_queries.py --latents 64 --repeats 20
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import numpy as np
import torch

import probcirc
from probcirc.datasets import load_mnist
from probcirc.layers import InputLayer
from probcirc.learn import em
from probcirc.queries import log_prob, mpe
from probcirc.structures import HCLT


@contextlib.contextmanager
def nothing_kept():
    """Every pass derives the leaves' tables from the parameters again."""
    kept = InputLayer._derived
    InputLayer._derived = lambda self, name, compute: compute(self.params)  # type: ignore[method-assign]
    try:
        yield
    finally:
        InputLayer._derived = kept  # type: ignore[method-assign]


def paired_ms(query, x: torch.Tensor, mask: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median ms of ``query`` as the engine runs it and with nothing kept, the two alternating call by call
    (the machine's speed drifts within a minute)."""
    query(x, mask)  # the first call derives what is kept
    kept, naive = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        query(x, mask)
        kept.append(time.perf_counter() - start)
        with nothing_kept():
            start = time.perf_counter()
            query(x, mask)
            naive.append(time.perf_counter() - start)
    return 1000 * statistics.median(kept), 1000 * statistics.median(naive)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", type=int, default=32, help="HCLT latent states per variable")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 256], help="batch sizes to time")
    ap.add_argument("--repeats", type=int, default=15, help="timed calls per query and batch size")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train, _ = load_mnist("train")
    test, _ = load_mnist("test")
    train = torch.from_numpy(np.array(train.reshape(len(train), -1)[:10_000]))
    test = torch.from_numpy(np.array(test.reshape(len(test), -1)))
    root = HCLT(train.numpy(), args.latents, input_dist=probcirc.inputs.Categorical(256), num_bins=4)
    pc = probcirc.compile(root, seed=0)
    em(pc, train, epochs=1, batch_size=512)
    half = torch.zeros(test.shape, dtype=torch.bool)
    half[:, test.shape[1] // 2 :] = True  # the bottom half of each digit missing
    queries = {
        "log p(x)": lambda x, m: log_prob(pc, x),
        "log p(top half)": lambda x, m: log_prob(pc, x, m),
        "MPE of the bottom half": lambda x, m: mpe(pc, x, m),
    }
    params = f"{pc.num_parameters:,} parameters"
    print(f"HCLT({args.latents}) on MNIST, {params}, one thread, median of {args.repeats} calls")
    print(f"  {'query':<24} {'batch':>6} {'kept, ms':>10} {'nothing kept, ms':>17} {'speed-up':>9}")
    for name, query in queries.items():
        for b in args.batches:
            x, m = test[:b], half[:b]
            ours, naive = paired_ms(query, x, m, args.repeats)
            answer = query(x, m)
            with nothing_kept():
                if not torch.equal(query(x, m), answer):
                    raise SystemExit(f"pc_queries: {name} differs with nothing kept")
            print(f"  {name:<24} {b:>6} {ours:>10.2f} {naive:>17.2f} {naive / ours:>8.2f}x")


if __name__ == "__main__":
    main()
