"""``probcirc inpaint`` and ``python -m probcirc.inpaint train-diffusion | inpaint``.

Exit codes follow :data:`probmod.errors.EXIT_CODES`: 2 usage (a bad mask
included), 3 an input cannot be read, 4 a corrupt model, 5 a circuit that does
not match the images, 6 an output exists (pass ``--force``), 9 an output
cannot be written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from probmod.cli import add_common, int_at_least, make_parser, run, set_threads, subparser
from probmod.io import check_output


def cmd_train_diffusion(args: argparse.Namespace) -> int:
    """Train the small MNIST DDPM and save it as safetensors plus JSON configs."""
    from ..datasets import load_mnist
    from .diffusion import WEIGHTS, save_diffusion, train_ddpm

    set_threads(args.threads)
    out = Path(args.output)
    check_output(out / WEIGHTS, args.force)
    images, _ = load_mnist("train")
    channels = tuple(int(c) for c in args.channels.split(","))
    start = time.monotonic()

    def log(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    model = train_ddpm(
        images,
        seconds=args.minutes * 60,
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        channels=channels,
        seed=args.seed,
        log=log,
    )
    meta = {
        "data": "MNIST train (60,000 images), pixels scaled to [-1, 1]",
        "seconds": round(time.monotonic() - start, 1),
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }
    save_diffusion(model, out, overwrite=args.force, meta=meta)
    print(f"saved {out} ({meta['seconds']:.0f} s of training)")
    return 0


def register_train(sub) -> None:
    """Add ``train-diffusion`` to a subparsers object."""
    from .diffusion import SHIPPED

    p = subparser(sub, "train-diffusion", "train the small MNIST DDPM (diffusers UNet2DModel) on CPU")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget")
    p.add_argument("--steps", type=int_at_least(1), default=100_000, help="stop after this many steps at the latest")
    p.add_argument("--batch-size", type=int_at_least(1), default=32, help="images per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine decay over the budget)")
    p.add_argument("--channels", default="8,16,16", help="UNet channels per level, comma separated")
    add_common(p, f"model folder to write (the shipped model lives in {SHIPPED})")
    p.set_defaults(func=cmd_train_diffusion)


def register(sub) -> None:
    """Add ``inpaint`` to the ``probcirc`` subparsers."""
    from .command import register_inpaint

    register_inpaint(sub)


def main(argv: list[str] | None = None) -> int:
    """``python -m probcirc.inpaint``: train-diffusion and inpaint."""
    parser = make_parser("probcirc.inpaint", "Inpainting with circuits and diffusion models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_train(sub)
    register(sub)

    def dispatch(args: argparse.Namespace) -> int:
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return 2
        return int(args.func(args) or 0)

    return run("probcirc.inpaint", dispatch, parser, argv)
