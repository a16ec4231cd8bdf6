"""What the ``.pcz`` container costs on top of the image streams, on MNIST test digits (issue #17).

Trains a small codec on MNIST training images (or loads ``--model``), codes the
first ``--images`` test images into streams, packs them into a ``.pcz`` file and
prints how many bits per pixel the whole file takes beyond its streams. The streams
(and the model) are cached under ``--cache`` so that the container can be re-measured
without coding again; the container's cost depends only on the streams' lengths and
the images' sizes, never on the model. Never run by ``make test``.

    python benchmarks/codec_container.py --images 2000        # ~1 minute to train, ~1 to code

The last line is ``images=<n> stream_bpd=<x> file_bpd=<y> overhead_bpd=<z>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probcirc  # noqa: E402
from probcirc.compress import BLOCK, PRECISION, Codec, container, train_codec  # noqa: E402
from probcirc.datasets import load_mnist  # noqa: E402


def streams_for(args, test: np.ndarray) -> list[bytes]:
    """The first ``args.images`` test images' streams, coded now or read from the cache."""
    cache = Path(args.cache)
    lens_path, bytes_path = cache / f"streams_{args.images}_lens.npy", cache / f"streams_{args.images}_bytes.npy"
    if lens_path.exists() and bytes_path.exists():
        lens, flat = np.load(lens_path), np.load(bytes_path).tobytes()
        ends = np.cumsum(lens)
        return [flat[e - n : e] for e, n in zip(ends, lens)]
    model_path = Path(args.model) if args.model else cache / "model.h5"
    if model_path.exists():
        model = probcirc.io.load(model_path)
    else:
        train, _ = load_mnist("train")
        model = train_codec(list(train[: args.train_n]), patch=(28, 28), latents=args.latents, progress=True)
        cache.mkdir(parents=True, exist_ok=True)
        probcirc.io.save(model, model_path, overwrite=True)
    codec = Codec(model, threads=args.threads)
    _, streams = codec.encode_streams(list(test))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(lens_path, np.array([len(s) for s in streams]))
    np.save(bytes_path, np.frombuffer(b"".join(streams), np.uint8))
    return streams


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000, help="MNIST test images to code")
    ap.add_argument("--model", help="a codec model for 28x28 patches (default: train one and cache it)")
    ap.add_argument("--train-n", type=int, default=2000, help="training images when training a model")
    ap.add_argument("--latents", type=int, default=8, help="HCLT latents when training a model")
    ap.add_argument("--threads", type=int, default=1, help="numba threads for coding")
    ap.add_argument("--cache", default="out/codec_container", help="folder for the model and the streams")
    args = ap.parse_args(argv)
    try:
        test, _ = load_mnist("test")
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return 0
    test = test[: args.images]
    streams = streams_for(args, test)
    header = container.Header(
        b"\0" * 32, 28, 28, 256, PRECISION, BLOCK, [container.Entry(28, 28, 0) for _ in range(len(test))]
    )
    blob = container.pack(header, streams)
    pixels = test.size
    stream_bits = 8 * sum(len(s) for s in streams)
    stream_bpd, file_bpd = stream_bits / pixels, 8 * len(blob) / pixels
    print(
        f"container: {len(blob) - stream_bits // 8} bytes for {len(test)} images "
        f"({(len(blob) - stream_bits // 8) / len(test):.3f} per image)"
    )
    overhead = file_bpd - stream_bpd
    print(f"images={len(test)} stream_bpd={stream_bpd:.4f} file_bpd={file_bpd:.4f} overhead_bpd={overhead:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
