"""``probcirc inpaint IMAGES (--mask MASK.png | --mask-kind KIND) --circuit MODEL.h5 [--diffusion DIR] -o OUT/``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from probmod import io
from probmod.cli import add_common, int_at_least, set_threads, subparser
from probmod.errors import InputError, ModelMismatchError, UsageError

from .api import METHODS, inpaint
from .masks import load_mask, make_mask
from .steer import Steering

IMAGE_EXTS = {".png", ".pgm", ".bmp", ".tif", ".tiff", ".webp"}
SHEET = "sheet.png"
GAP = 2
SHEET_COLUMNS = 16  # triplets per row of the sheet
SHEET_MAX = 64  # the sheet shows the first images only; every image is written on its own


def read_images(sources: list[str]) -> tuple[np.ndarray, list[str]]:
    """Grey images of one size (files, folders of them, ``.npy`` arrays ``(N, H, W)`` uint8) and their names."""
    from PIL import Image, UnidentifiedImageError

    paths = io.expand_inputs(sources, lambda p: p.suffix.lower() in IMAGE_EXTS | {".npy"}, "images", "image")
    arrays: list[np.ndarray] = []
    names: list[str] = []
    for path in paths:
        try:
            if path.suffix.lower() == ".npy":
                a = np.load(path, allow_pickle=False)
                if a.ndim == 2:
                    a = a[None]
                if a.ndim != 3 or a.dtype != np.uint8:
                    raise InputError(f"{path}: expected a uint8 array (N, H, W), got {a.dtype} {a.shape}")
                names += [f"{path.stem}_{i:04d}" for i in range(len(a))]
            else:
                with Image.open(path) as im:
                    a = np.asarray(im.convert("L"))[None]
                names.append(path.stem)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError(f"{path}: not a readable image ({err})") from err
        if arrays and a.shape[1:] != arrays[0].shape[1:]:
            raise InputError(
                f"{path}: {a.shape[2]}x{a.shape[1]}, but the first image is {arrays[0].shape[2]}x{arrays[0].shape[1]}"
            )
        arrays.append(a)
    if len(set(names)) != len(names):
        raise UsageError("two inputs share a name; the outputs would overwrite each other")
    return np.concatenate(arrays), names


def sheet(original: np.ndarray, known: np.ndarray, result: np.ndarray) -> np.ndarray:
    """Triplets original / masked (missing pixels mid-grey) / result for the first ``SHEET_MAX`` images,
    ``SHEET_COLUMNS`` to a row; images smaller than 28 pixels are enlarged (nearest) so a reader sees them.

    Example:
        >>> x = np.zeros((20, 8, 8), np.uint8)
        >>> sheet(x, np.ones((20, 8, 8), bool), x).shape  # 2 rows of triplets, 16 columns, 8x8 drawn 3x
        (158, 414)
    """
    n = min(len(original), SHEET_MAX)
    scale = max(1, 28 // max(original.shape[1:]))
    grow = lambda a: a[:n].repeat(scale, axis=1).repeat(scale, axis=2)  # noqa: E731
    masked = np.where(known, original, 128).astype(np.uint8)
    triplet = [grow(original), grow(masked), grow(result)]
    h, w = triplet[0].shape[1:]
    cols = min(n, SHEET_COLUMNS)
    rows = -(-n // cols)
    block = 3 * (h + GAP) + 2 * GAP  # a wider gap between rows of triplets
    out = np.full((rows * block - 3 * GAP, cols * (w + GAP) - GAP), 255, dtype=np.uint8)
    for i in range(n):
        top, left = (i // cols) * block, (i % cols) * (w + GAP)
        for r, imgs in enumerate(triplet):
            out[top + r * (h + GAP) : top + r * (h + GAP) + h, left : left + w] = imgs[i]
    return out


def write_png(image: np.ndarray, path: Path, overwrite: bool) -> None:
    from PIL import Image

    with io.atomic_path(path, overwrite) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def cmd_inpaint(args: argparse.Namespace) -> int:
    from ..density.model import DensityModel

    set_threads(args.threads)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: give a folder for the completed images")
    images, names = read_images(args.images)
    targets = [out / f"{name}.png" for name in names] + [out / SHEET]
    for t in targets:
        io.check_output(t, args.force)  # before any work: nothing is computed only to be refused
    h, w = images.shape[1:]
    known = load_mask(args.mask) if args.mask else make_mask(args.mask_kind, (h, w), seed=args.seed)
    model = io.load(args.circuit, kind=DensityModel)
    if model.image_shape is not None and tuple(model.image_shape) != (h, w):
        raise ModelMismatchError(
            f"{args.circuit} models {model.image_shape[0]}x{model.image_shape[1]} images, the inputs are {h}x{w}"
        )
    diffusion = None
    if args.diffusion is not None:
        from .diffusion import load_diffusion

        diffusion = load_diffusion(None if args.diffusion == "shipped" else args.diffusion, scheduler=args.scheduler)
    result = inpaint(
        images,
        known,
        model,
        diffusion,
        method=args.method,
        steering=Steering(args.weight, args.fraction, args.width),
        steps=args.steps,
        jump_length=args.jump_length,
        jump_n_sample=args.jump_n_sample,
        eta=args.eta,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.quiet,
    )
    out.mkdir(parents=True, exist_ok=True)
    for img, target in zip(result, targets):
        write_png(img, target, args.force)
    write_png(sheet(images, np.broadcast_to(known, images.shape), result), out / SHEET, args.force)
    shown = f" (the first {SHEET_MAX})" if len(result) > SHEET_MAX else ""
    print(f"wrote {len(result)} completed images and {SHEET}{shown} to {out}")
    return 0


def register_inpaint(sub) -> None:
    """Add ``inpaint`` to a subparsers object."""
    defaults = Steering()
    p = subparser(sub, "inpaint", "fill in missing pixels with a circuit, alone or steering a diffusion model")
    p.add_argument(
        "images", nargs="+", metavar="IMAGES", help="grey images of one size, folders of them, or .npy (N, H, W) uint8"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mask", help="mask image of the same size: white = pixels to fill in, black = known")
    which.add_argument(
        "--mask-kind", help="left, top, center, random:P (e.g. random:0.8), strips, strips:v or strips:h"
    )
    p.add_argument("--circuit", required=True, help="circuit model file written by probcirc train (.h5)")
    p.add_argument(
        "--diffusion", default=None, help="diffusion model folder (train-diffusion), or 'shipped' for the MNIST DDPM"
    )
    p.add_argument("--method", choices=METHODS, default=None, help="default: steered with --diffusion, else sample")
    p.add_argument(
        "--scheduler", choices=("ddim", "ddpm"), default="ddim", help="the diffusion model's scheduler (method replace)"
    )
    p.add_argument("--steps", type=int_at_least(1), default=20, help="denoising steps")
    p.add_argument("--jump-length", type=int_at_least(1), default=5, help="RePaint: steps per resampling jump")
    p.add_argument(
        "--jump-n-sample", type=int_at_least(1), default=2, help="RePaint: passes per jump (1 = no resampling)"
    )
    p.add_argument("--eta", type=float, default=1.0, help="noise share of RePaint/DDIM steps (1 = ancestral sampling)")
    p.add_argument(
        "--weight", type=float, default=defaults.weight, help="steering: weight of the circuit's posterior mean"
    )
    p.add_argument("--fraction", type=float, default=defaults.fraction, help="steering: share of the schedule steered")
    p.add_argument("--width", type=float, default=defaults.width, help="steering: soft-evidence width in pixel levels")
    p.add_argument("--batch-size", type=int_at_least(1), default=100, help="images per batch")
    add_common(p, "output folder for the completed images and sheet.png")
    p.set_defaults(func=cmd_inpaint)
