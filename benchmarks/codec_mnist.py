"""MNIST lossless compression: the PC codec against PNG, WebP and JPEG-XL on the same images.

Trains an HCLT codec on the MNIST training images (or loads ``--model``), codes
the test images into one ``.pcz`` file (``Codec.encode``: 16 digits per range-coded
stream), decodes them all again (checking bit-exactness), and prints a table.
The PC codec's rows are the same for every image: the streams' bits per
dimension, and the whole file's, the figure of the last line. Never run by ``make test``.

The default model (16 latents; 2 mini-batch and 12 full-batch EM epochs, pseudocount 1.0)
is the recommended one: 32 latents code MNIST in fewer bits but cost about twice the work
per value, and their files exceed the default decoding-work budget (``--max-work``,
docs/security.md); see docs/codec.md, Speed. The epochs and the pseudocount were chosen
on the last 10,000 training images held out (``--validate 10000``), never on the test set.

    python benchmarks/codec_mnist.py                        # full: 60k train, 10k test
    python benchmarks/codec_mnist.py --train-n 5000 --test-n 500 --latents 8   # quick
    python benchmarks/codec_mnist.py --validate 10000 --full-epochs 12         # choose the epochs

The last line is ``bpd=<x> encode_img_per_s=<y> decode_img_per_s=<z>``, bpd over the whole ``.pcz`` file.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probcirc  # noqa: E402
from probcirc.compress import Codec, train_codec  # noqa: E402
from probcirc.compress.plot import bits_chart  # noqa: E402
from probcirc.datasets import load_mnist  # noqa: E402


def baselines(images: np.ndarray) -> dict[str, np.ndarray]:
    """Bytes per image for PNG (Pillow, optimize), WebP lossless and JPEG-XL lossless."""
    from PIL import Image

    out: dict[str, list[int]] = {"PNG (Pillow, optimize)": []}
    try:
        import imagecodecs
    except ImportError:  # pragma: no cover
        imagecodecs = None
    if imagecodecs is not None and imagecodecs.WEBP.available:
        out["WebP lossless (m6, q100)"] = []
    if imagecodecs is not None and imagecodecs.JPEGXL.available:
        out["JPEG-XL lossless (e9)"] = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", optimize=True)
        out["PNG (Pillow, optimize)"].append(buf.tell())
        if "WebP lossless (m6, q100)" in out:  # WebP has no grey mode: grey replicated to RGB
            out["WebP lossless (m6, q100)"].append(
                len(imagecodecs.webp_encode(np.repeat(img[..., None], 3, -1), lossless=True, level=100, method=6))
            )
        if "JPEG-XL lossless (e9)" in out:
            out["JPEG-XL lossless (e9)"].append(len(imagecodecs.jpegxl_encode(img, lossless=True, effort=9)))
    return {k: np.array(v) for k, v in out.items()}


def validate(train: np.ndarray, args) -> int:
    """Choose the EM epochs without the test set: fit on all but the last ``--validate`` training images and
    print the held-out images' bits per dimension after the mini-batch epochs and after every full-batch one."""
    import math

    import torch

    from probcirc.learn import em

    fit, held = train[: -args.validate], train[-args.validate :]
    t0 = time.time()
    model = train_codec(
        list(fit),
        patch=(28, 28),
        latents=args.latents,
        epochs=args.epochs,
        full_batch_epochs=0,
        pseudocount=args.pseudocount,
    )
    assert model.predictor == "none", "MNIST is coded as pixels: the patches are the flattened images"
    x, v = (torch.from_numpy(a.reshape(len(a), -1).astype(np.int64)) for a in (fit, held))
    for full in range(args.full_epochs + 1):
        if full:
            em(model.circuit, x, epochs=0, full_batch_epochs=1, pseudocount=args.pseudocount)
        with torch.no_grad():
            ll = torch.cat([model.circuit.log_prob(v[s : s + 1000]).double() for s in range(0, len(v), 1000)])
        bpd = float(-ll.mean()) / (v.shape[1] * math.log(2))
        print(
            f"epochs={args.epochs} full_epochs={full} validation_bpd={bpd:.4f} ({time.time() - t0:.0f} s)", flush=True
        )
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a codec model from an earlier run (skips training)")
    ap.add_argument("--save-model", default="out/codec_mnist_model.h5", help="where to save the trained model")
    ap.add_argument("--train-n", type=int, default=60000)
    ap.add_argument("--test-n", type=int, default=10000)
    ap.add_argument("--latents", type=int, default=16, help="HCLT latent states (16: see docs/codec.md)")
    ap.add_argument("--epochs", type=int, default=2, help="mini-batch EM epochs")
    ap.add_argument("--full-epochs", type=int, default=12, help="full-batch EM epochs after them")
    ap.add_argument("--pseudocount", type=float, default=1.0, help="EM's Laplace smoothing")
    ap.add_argument(
        "--validate",
        type=int,
        default=0,
        metavar="N",
        help="only choose the epochs: fit on all but the last N training images, print their bpd per full epoch",
    )
    ap.add_argument("--batch-size", type=int, default=64, help="images coded together")
    ap.add_argument("--threads", type=int, default=2, help="numba threads (2: both cores of the test machine)")
    ap.add_argument("--plot", default="out/codec_mnist_bpd.png", help="bits-per-dimension chart (PNG)")
    args = ap.parse_args(argv)
    try:
        train, _ = load_mnist("train")
        test, _ = load_mnist("test")
    except FileNotFoundError as e:
        print(f"skipped: {e}")
        return 0
    if args.validate:
        return validate(train[: args.train_n], args)
    test = test[: args.test_n]
    t0 = time.time()
    if args.model:
        model = probcirc.io.load(args.model)
        train_s = 0.0
    else:
        model = train_codec(
            list(train[: args.train_n]),
            patch=(28, 28),
            latents=args.latents,
            epochs=args.epochs,
            full_batch_epochs=args.full_epochs,
            pseudocount=args.pseudocount,
            progress=True,
        )
        train_s = time.time() - t0
        if args.save_model:
            Path(args.save_model).parent.mkdir(parents=True, exist_ok=True)
            probcirc.io.save(model, args.save_model, overwrite=True)
    codec = Codec(model, batch_size=args.batch_size, threads=args.threads)
    codec.encode([test[0]])  # compile the kernels outside the timings
    n, dims = len(test), test[0].size
    t = time.time()
    blob = codec.encode(list(test))  # the whole file: packs of 16 digits per stream, sizes, checks
    enc_s = time.time() - t
    header, _ = probcirc.compress.container.unpack(blob)
    t = time.time()
    back = codec.decode(blob)
    dec_s = time.time() - t
    exact = all(np.array_equal(a, b) for a, b in zip(test, back))
    model_bits = codec.model_bits(list(test))
    rows = [
        ("PC codec (HCLT, streams)", np.full(n, 8 * header.payload_len / (n * dims))),
        ("PC codec, whole .pcz file", np.full(n, 8 * len(blob) / (n * dims))),
        ("model -log2 p (theory)", model_bits / dims),
    ]
    rows += [(k, 8 * v / dims) for k, v in baselines(test).items()]
    print(
        f"\nMNIST test images: {n} (28x28); "
        f"model: {'loaded ' + args.model if args.model else f'trained on {args.train_n} in {train_s:.0f} s'}, "
        f"{args.latents if not args.model else '?'} latents, fingerprint {codec.fingerprint.hex()[:12]}"
    )
    print(f"{'method':34s} {'mean bpd':>9s} {'median bpd':>11s}")
    for name, bpd in rows:
        print(f"{name:34s} {bpd.mean():9.4f} {np.median(bpd):11.4f}")
    chart = {
        stat: {
            name.split(" (")[0].split(",")[0] if name.startswith("PC codec (") else name: float(f(bpd))
            for name, bpd in rows
            if "whole" not in name
        }
        for stat, f in (("mean", np.mean), ("median", np.median))
    }
    bits_chart(chart, args.plot, f"lossless, {n} MNIST test images")
    print(f"chart -> {args.plot}")
    print(
        f"bit-exact round trip: {exact}; encode {n / enc_s:.1f} img/s, decode {n / dec_s:.1f} img/s "
        f"({args.threads} numba threads, batch {args.batch_size})"
    )
    print(f"bpd={8 * len(blob) / (n * dims):.4f} encode_img_per_s={n / enc_s:.2f} decode_img_per_s={n / dec_s:.2f}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
