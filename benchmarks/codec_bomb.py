"""Decoding time of the worst `.pcz` under 64 KB that the default work limit lets through.

For each model, builds the file under 64 KB of MNIST test digits that declares the most values
while it still passes the default ``--max-work`` check (the cheapest digits whose mean stream
reaches the limit's bytes per digit), decodes it with the codec's threads and reports wall and CPU
time beside the 5 s that docs/security.md promises for any crafted input under 64 KB.
Without ``--model``, trains HCLT codecs at 8 and 16 latents on 2,000 MNIST training digits: the work
per value depends on the circuit's size, not on how well it is trained. The last line is exactly
``worst_decode_s=<wall seconds, the slowest model> cpu_s=<its CPU seconds> threads=<n>``.

    python benchmarks/codec_bomb.py                      # 8 and 16 latents, 2 threads
    python benchmarks/codec_bomb.py --model model.h5 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probcirc  # noqa: E402
from probcirc.compress import Codec, container, train_codec  # noqa: E402
from probcirc.datasets import load_mnist  # noqa: E402

LIMIT = 64 * 1024


def crafted(codec: Codec, digits: np.ndarray) -> tuple[bytes, int]:
    """The file under 64 KB of test digits that declares the most values and still passes the default check.

    Real digits, not random words: a stream the decoder rejects stops it early, so only valid
    streams make it do all the work a header declares. The check bounds work per stream byte, so
    the worst accepted file is about 64 KB of the cheapest digits whose mean stream still reaches
    the bytes the limit asks per digit: a window of the digits sorted by stream length.
    """
    header, _ = container.unpack(codec.encode(list(digits), raw_fallback=False))
    order = np.argsort([e.stream_len for e in header.entries], kind="stable")
    lens = np.array([header.entries[i].stream_len for i in order])
    per = digits[0].size * codec.program.work_per_value / (container.MAX_RATIO * container.WORK_UNIT)
    sums = np.concatenate([[0], np.cumsum(lens)])
    for n in range(min(len(lens), int(LIMIT / min(per, lens.max()))), 0, -1):
        window = sums[n:] - sums[:-n]  # bytes of the n digits starting at each rank
        fits = np.flatnonzero((window >= n * per) & (window + 4 * n + 256 < LIMIT))
        if not len(fits):
            continue
        pick = digits[np.sort(order[fits[0] : fits[0] + n])]
        blob = codec.encode(list(pick), raw_fallback=False)
        container.check_work(container.unpack(blob)[0], codec.program.work_per_value)
        return blob, n
    raise SystemExit("codec_bomb: no file of these digits fits")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="codec model file (repeatable); default: train 8 and 16 latents")
    ap.add_argument("--threads", type=int, default=2, help="decoding threads (the command line's default here)")
    args = ap.parse_args()
    if args.model:
        models = {p: probcirc.io.load(p) for p in args.model}
    else:
        digits = load_mnist("train")[0][:2000].reshape(-1, 28, 28).astype(np.uint8)
        models = {f"{k} latents": train_codec(list(digits), latents=k, epochs=1, seed=0) for k in (8, 16)}
    test = load_mnist("test")[0][:4000].reshape(-1, 28, 28).astype(np.uint8)
    print(f"{'model':>14} {'work/value':>10} {'file B':>7} {'images':>6} {'wall s':>7} {'CPU s':>6}  (target 5 s)")
    worst = (0.0, 0.0)
    for name, model in models.items():
        codec = Codec(model, threads=args.threads)
        blob, n = crafted(codec, test)
        codec.decode(codec.encode([np.zeros((28, 28), np.uint8)], raw_fallback=False))  # compiled code loaded
        wall, cpu = time.perf_counter(), time.process_time()
        codec.decode(blob)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{name:>14} {codec.program.work_per_value:>10} {len(blob):>7} {n:>6} {wall:>7.2f} {cpu:>6.2f}")
        worst = max(worst, (wall, cpu))
    print(f"worst_decode_s={worst[0]:.2f} cpu_s={worst[1]:.2f} threads={args.threads}")


if __name__ == "__main__":
    main()
