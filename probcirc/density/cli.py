"""``probcirc train | eval | sample``: density estimation with circuits from the command line.

``train`` fits a circuit by EM one epoch at a time, prints train and
validation bits per dimension after each, and saves the model file (its
checkpoint) and a chart beside it after every epoch, atomically. Each epoch's
shuffle comes from a generator seeded from ``(--seed, epoch)``, so a run
stopped at any point and continued with ``--resume`` ends with the same bytes
as one that was never stopped.

Example:
    >>> from probcirc.cli import build_parser
    >>> args = build_parser().parse_args(["train", "x.npy", "--latents", "8", "-o", "m.h5"])
    >>> args.structure, args.latents, args.epochs, args.resume
    ('hclt', 8, 10, False)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from probmod import io
from probmod.cli import (
    add_common,
    add_force,
    add_output,
    add_seed,
    add_threads,
    int_at_least,
    set_threads,
    subparser,
)
from probmod.errors import InputError, NumericalError, UsageError
from probmod.progress import Progress

from .. import backend
from ..learn import distributed, em
from .data import load_data
from .model import STRUCTURES, DensityModel, RunOptions, epoch_seed, fingerprint
from .plots import grid, write_chart, write_png

__all__ = ["register", "cmd_train", "cmd_eval", "cmd_sample", "chart_path"]


def chart_path(output: str | Path) -> Path:
    """Where ``train -o model.h5`` writes its chart: ``model.png`` beside it."""
    return Path(output).with_suffix(".png")


# ------------------------------------------------------------------ train
def cmd_train(args: argparse.Namespace) -> int:
    """Train (alone, or as one rank of ``torchrun --nproc-per-node N -m probcirc train``); rank 0 writes."""
    set_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise UsageError(f"--device {args.device!r}: not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: this torch sees no CUDA device")
    if distributed.init_from_env(args.dist_timeout, args.device):
        if args.threads is None:
            set_threads(1)  # one thread per rank: ranks share the cores, and chunks compute the same anywhere
        try:
            return _train(args, main=distributed.is_main())
        finally:
            distributed.shutdown()
    return _train(args, main=True)


def _train(args: argparse.Namespace, main: bool) -> int:
    out, chart = Path(args.output), chart_path(args.output)
    if out.suffix.lower() == ".png":
        raise UsageError(f"-o {out}: the model is HDF5 (.h5); the chart goes beside it as {chart.name}")
    if args.resume and args.force:
        raise UsageError("--resume continues the run in -o; --force would start it again: give one of them")
    run = RunOptions(
        args.structure,
        args.latents,
        args.batch_size,
        args.step_size,
        args.pseudocount,
        args.valid_fraction,
        args.seed,
        args.chunk_size,
        args.precision,
        args.sum_pseudocount,
    )
    io.check_output(out, overwrite=args.force or args.resume)
    io.check_output(chart, overwrite=args.force or args.resume)
    data = load_data(args.data, args.key)
    model = _resumed(args, run, data.x) if args.resume else DensityModel.start(run, data.x, data.image_shape)
    # Under torchrun each rank has taken GPU LOCAL_RANK (init_from_env): "cuda" means that one.
    model.circuit = model.circuit.to(torch.device(args.device))
    train, valid = data.x[model.train_rows], data.x[model.valid_rows]
    x = torch.from_numpy(train)
    total = args.epochs + args.full_epochs
    with Progress(total, "train", "epoch", enabled=main and not args.quiet) as bar:
        bar.update(model.epochs_done)
        for epoch in range(model.epochs_done, total):
            full, start = epoch >= args.epochs, time.perf_counter()
            model.restructure(epoch, x, args.prune_grow)
            with backend.approximate(run.precision):
                ll = em(
                    model.circuit,
                    x,
                    epochs=0 if full else 1,
                    full_batch_epochs=1 if full else 0,
                    batch_size=args.batch_size,
                    step_size=args.step_size,
                    pseudocount=args.pseudocount,
                    sum_pseudocount=args.sum_pseudocount,
                    seed=epoch_seed(args.seed, epoch),
                    chunk_size=args.chunk_size,
                )[0]
            train_bpd = -ll / (train.shape[1] * math.log(2))
            if not math.isfinite(train_bpd):
                raise NumericalError(f"epoch {epoch + 1}: bits per dimension is not finite; lower --step-size")
            if not main:  # every rank holds the same parameters; only rank 0 validates and writes
                continue
            valid_bpd = model.bits_per_dim(valid)[0] if len(valid) else float("nan")
            if len(valid) and not math.isfinite(valid_bpd):
                raise NumericalError(f"epoch {epoch + 1}: bits per dimension is not finite; lower --step-size")
            model.record(train_bpd, valid_bpd, full, time.perf_counter() - start)
            io.save(model, out, overwrite=True)  # the checkpoint: atomic, so a kill leaves the last whole epoch
            write_chart(model.history, chart, overwrite=True)
            bar.update(1)
            kind = "full" if full else "mini"
            seconds = model.history["seconds"][-1]
            print(
                f"epoch {epoch + 1}/{total} ({kind}-batch): train {train_bpd:.4f} bits/dim, "
                f"validation {valid_bpd:.4f} bits/dim, {seconds:.1f} s",
                flush=True,
            )
    if not main:
        return 0
    if model.epochs_done == 0:  # --epochs 0 --full-epochs 0: the initial model is the result
        io.save(model, out, overwrite=args.force or args.resume)
        write_chart(model.history, chart, overwrite=args.force or args.resume)
    print(f"wrote {out} and {chart}")
    return 0


def _resumed(args: argparse.Namespace, run: RunOptions, x: np.ndarray) -> DensityModel:
    """The checkpoint in ``-o``, after checking that this command line continues its run."""
    out = Path(args.output)
    if not out.exists():
        raise InputError(f"{out}: no checkpoint to resume; leave out --resume to start a run")
    model = io.load(out, kind=DensityModel)
    diff = model.run.differences(run)
    if diff:
        raise UsageError(f"--resume: {out} was trained with other options: {'; '.join(diff)}")
    if model.data_sha256 != fingerprint(x):
        raise UsageError(f"--resume: {args.data} is not the data {out} was trained on")
    done, full_done = model.epochs_done, model.full_epochs_done
    mini_done = done - full_done
    if mini_done > args.epochs or full_done > args.full_epochs:
        raise UsageError(
            f"--resume: {out} has done {mini_done} mini-batch and {full_done} full-batch epochs, more than "
            f"--epochs {args.epochs} --full-epochs {args.full_epochs}"
        )
    if full_done and mini_done != args.epochs:
        raise UsageError(
            f"--resume: {out} has begun its full-batch epochs after {mini_done} mini-batch epochs; "
            f"--epochs must stay {mini_done}"
        )
    return model


# ------------------------------------------------------------------ eval, sample
def _load_model(path: str) -> DensityModel:
    return io.load(path, kind=DensityModel)


def cmd_eval(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    model = _load_model(args.model)
    data = load_data(args.data, args.key)
    model.check_data(data.x, str(args.data))
    bpd, nats = model.bits_per_dim(data.x)
    print(f"bits_per_dim={bpd:.6f} nats_per_sample={nats:.6f} samples={len(data.x)}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    model = _load_model(args.model)
    out = Path(args.output) if args.output else None
    if out is not None:
        if out.suffix.lower() not in (".png", ".npy"):
            raise UsageError(f"-o {out}: write a .png grid (image models) or a .npy array")
        if out.suffix.lower() == ".png" and model.image_shape is None:
            raise UsageError(f"{args.model} was trained on vectors, not images; write -o .npy or print (no -o)")
        io.check_output(out, args.force)
    gen = torch.Generator().manual_seed(args.seed)
    draws = model.circuit.sample((args.num,), generator=gen).numpy()
    if out is None:
        np.savetxt(sys.stdout, draws, fmt="%d")
        return 0
    images = draws.reshape(-1, *model.image_shape) if model.image_shape else draws
    if out.suffix.lower() == ".png":
        write_png(grid(images, model.num_values), out, args.force)
    else:
        with io.atomic_path(out, args.force) as tmp, open(tmp, "wb") as f:
            np.save(f, images.astype(np.uint8 if model.num_values <= 256 else np.int64))
    print(f"wrote {args.num} samples to {out}")
    return 0


# ------------------------------------------------------------------ parsers


def register(sub) -> None:
    """Add ``train``, ``eval`` and ``sample`` to the ``probcirc`` subparsers."""
    p = subparser(sub, "train", "fit a circuit to data by EM; checkpoint and chart after every epoch")
    p.add_argument(
        "data",
        metavar="DATA",
        help="a .npy (N, D) or (N, H, W) integer array, an .h5 file, or a folder of grey images of one size",
    )
    p.add_argument("--key", default=None, help="the dataset in an HDF5 DATA (default: its only dataset)")
    p.add_argument(
        "--structure",
        choices=STRUCTURES,
        default="hclt",
        help="hidden Chow-Liu tree, Poon-Domingos (image rectangles) or RAT-SPN (depth <= 4, 8 repetitions)",
    )
    p.add_argument("--latents", type=int_at_least(1), default=16, help="latent states (sum nodes) per region")
    p.add_argument("--epochs", type=int_at_least(0), default=10, help="mini-batch EM epochs")
    p.add_argument("--full-epochs", type=int_at_least(0), default=0, help="full-batch EM epochs after those")
    p.add_argument("--batch-size", type=int_at_least(1), default=512, help="samples per mini-batch")
    p.add_argument("--step-size", type=float, default=0.1, help="mini-batch EM step size, in (0, 1]")
    p.add_argument("--pseudocount", type=float, default=0.1, help="EM smoothing pseudocount, >= 0")
    p.add_argument(
        "--sum-pseudocount",
        type=float,
        default=None,
        help="the sum layers' own pseudocount, >= 0 (default: --pseudocount)",
    )
    p.add_argument("--valid-fraction", type=float, default=0.1, help="share of DATA held out for validation, in [0, 1)")
    p.add_argument(
        "--prune-grow",
        default=None,
        metavar="AT:FRACTION:FACTOR[:NOISE],...",
        help="structure learning: before epoch AT+1, prune FRACTION of the sum edges by flow, "
        "then copy every node FACTOR times with NOISE (default 0.1)",
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in -o (same options and data)")
    p.add_argument(
        "--chunk-size",
        type=int_at_least(1),
        default=distributed.CHUNK_SIZE,
        help="rows per chunk, the unit a rank computes; results depend on it, never on the number of ranks "
        "(stored in the model: --resume must give the same)",
    )
    p.add_argument(
        "--precision",
        choices=backend.PRECISIONS,
        default="ieee",
        help="matrix products during EM: bf16 keeps 7 mantissa bits of each factor (faster, CPU and GPU), tf32 and "
        "tf32x3 act on GPU kernels only; validation, eval and sample stay exact (stored in the model)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device to train on, e.g. cuda (under torchrun: each rank's GPU LOCAL_RANK, with NCCL)",
    )
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=distributed.DEFAULT_TIMEOUT,
        help="under torchrun: seconds a rank waits for the others before exiting with an error",
    )
    add_common(p, "model file (.h5), rewritten after every epoch; the chart goes beside it (.png)")
    p.set_defaults(func=cmd_train)

    p = subparser(sub, "eval", "bits per dimension (and nats per sample) of a trained model on data")
    p.add_argument("model", help="model file written by probcirc train")
    p.add_argument("data", metavar="DATA", help="a .npy array, an .h5 file or a folder of grey images")
    p.add_argument("--key", default=None, help="the dataset in an HDF5 DATA (default: its only dataset)")
    add_threads(p)
    p.set_defaults(func=cmd_eval)

    p = subparser(sub, "sample", "draw samples from a trained model: a PNG grid, a .npy array, or printed rows")
    p.add_argument("model", help="model file written by probcirc train")
    p.add_argument("-n", "--num", type=int_at_least(1), default=16, help="number of samples")
    add_output(p, help="a .png grid (image models) or a .npy array; without it, rows are printed", required=False)
    add_force(p)
    add_seed(p)
    p.set_defaults(func=cmd_sample)
