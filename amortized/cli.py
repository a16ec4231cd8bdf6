"""``amortized``: train, evaluate and plot Distribution Transformers from the command line.

The console script ``amortized`` and ``python -m amortized`` are the same
program. It follows probmod's conventions (:mod:`probmod.cli`): every error is
one line ``amortized COMMAND: error: ...`` with the exit status of its kind
(the table ends every ``--help``), nothing is replaced without ``--force``,
outputs are checked before any long work starts, and progress goes to stderr
(a bar on a terminal, a line every few seconds on a pipe or log) unless
``-q``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from probmod import io
from probmod.cli import (
    add_force,
    add_output,
    add_quiet,
    add_seed,
    add_threads,
    make_parser,
    run,
    set_threads,
    subparser,
)
from probmod.errors import ModelMismatchError, UsageError

from .modelfile import MAX_PARAMETERS, load, task_of
from .tasks import TASKS, make_task

PROG = "amortized"


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model file (HDF5) written by `amortized train`")
    _add_max_params(p)


def _add_max_params(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-params",
        type=_positive(int),
        default=MAX_PARAMETERS,
        help="refuse model files declaring more weights than this (raise it for a trusted large model)",
    )


def _parser() -> argparse.ArgumentParser:
    p = make_parser(
        PROG,
        "Distribution Transformers: map a Gaussian-mixture prior and data to a Gaussian-mixture "
        "posterior. Train a model on simulated problems, score it against exact posteriors and "
        "baselines, or draw one problem.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = subparser(sub, "train", "train a Distribution Transformer on fresh simulations")
    t.add_argument("--task", required=True, choices=sorted(TASKS), help="task family to train on")
    t.add_argument(
        "--dim",
        type=_positive(int),
        default=None,
        help="latent dimension (linear_gaussian only, default 2; the other tasks are 1-D)",
    )
    t.add_argument("--components", type=_positive(int), default=4, help="mixture components K")
    t.add_argument("--max-obs", type=int, default=None, help="most observations per problem (default: the task's own)")
    t.add_argument("--steps", type=_positive(int), default=2000, help="optimiser steps")
    t.add_argument("--batch-size", type=_positive(int), default=256, help="problems per step")
    t.add_argument("--lr", type=_positive(float), default=1e-3, help="peak learning rate (AdamW)")
    t.add_argument("--weight-decay", type=float, default=1e-2, help="AdamW weight decay")
    t.add_argument("--d-model", type=_positive(int), default=64, help="token width")
    t.add_argument("--layers", type=_positive(int), default=3, help="decoder layers")
    t.add_argument("--heads", type=_positive(int), default=4, help="attention heads (must divide --d-model)")
    t.add_argument(
        "--checkpoint-every", type=_positive(int), default=500, help="write OUTPUT.ckpt.h5 this often (steps)"
    )
    t.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint's (or model's) weights and step count")
    _add_max_params(t)
    add_seed(t, 0)
    add_threads(t)
    add_quiet(t)
    add_output(t, help="model file to write (HDF5)")
    add_force(t, help="replace OUTPUT if it exists")

    e = subparser(sub, "evaluate", "KL, NLL and wall time against the reference posterior and two baselines")
    _add_model(e)
    e.add_argument("--task", choices=sorted(TASKS), help="refuse a model trained on another task")
    e.add_argument("--problems", type=_positive(int), default=200, help="test problems")
    e.add_argument("--kl-samples", type=_positive(int), default=10_000, help="samples per KL estimate")
    e.add_argument("--vi-steps", type=_positive(int), default=500, help="Adam steps of the GMM-VI baseline")
    e.add_argument("--is-samples", type=_positive(int), default=1000, help="prior draws for importance sampling")
    e.add_argument("--no-baselines", action="store_true", help="score the model only (skip GMM-VI and SNIS)")
    e.add_argument(
        "--sequences", type=_positive(int), default=200, help="trajectories to roll out (sequential tasks only)"
    )
    e.add_argument("--seq-steps", type=_positive(int), default=30, help="steps per trajectory (sequential tasks only)")
    e.add_argument("--plot", metavar="PNG", help="also draw prior / exact / model densities to PNG")
    add_seed(e, 1234)
    add_threads(e)
    add_quiet(e)
    add_force(e, help="replace the --plot PNG if it exists")

    q = subparser(sub, "plot", "prior, exact posterior and model posterior for one problem, to PNG")
    _add_model(q)
    add_seed(q, 5)
    add_threads(q)
    add_output(q, help="PNG to write")
    add_force(q, help="replace OUTPUT if it exists")
    return p


def _load(path: str, task: str | None, max_params: int):
    model = load(path, max_parameters=max_params)
    if task is not None and model.task != task:
        raise ModelMismatchError(f"{path}: model was trained on task {model.task!r}, not {task!r}")
    return model, task_of(model, path)


def _task_config(a) -> dict:
    config = dict(n_components=a.components)
    if a.task == "linear_gaussian":
        config["dim"] = a.dim or 2
    elif a.dim not in (None, 1):
        raise UsageError(f"task {a.task} has a 1-D latent; --dim must be 1, got {a.dim}")
    if a.max_obs is not None:
        if a.max_obs < 0:
            raise UsageError(f"--max-obs must be at least 0, got {a.max_obs}")
        config["max_obs"] = a.max_obs
    return config


def _train(a) -> None:
    from .train import build_model, train

    if a.d_model % a.heads:
        raise UsageError(f"--heads ({a.heads}) must divide --d-model ({a.d_model})")
    task = make_task(a.task, **_task_config(a))
    io.check_output(a.output, a.force)
    ckpt = str(a.output) + ".ckpt.h5"
    io.check_output(ckpt, overwrite=True)  # our own file from an earlier, interrupted run
    start = 0
    if a.resume:
        model, ckpt_task = _load(a.resume, a.task, a.max_params)
        if ckpt_task.config() != task.config():
            raise ModelMismatchError(
                f"{a.resume}: checkpoint task settings {ckpt_task.config()} differ from {task.config()}"
            )
        start = int(model.training_info.get("steps", 0))
    else:
        model = build_model(task, a.d_model, a.layers, a.heads)
    losses = train(
        model,
        task,
        a.steps,
        a.batch_size,
        a.lr,
        a.weight_decay,
        seed=a.seed,
        start_step=start,
        progress=not a.quiet,
        checkpoint=ckpt,
        checkpoint_every=a.checkpoint_every,
    )
    model.training_info["command"] = f"{PROG} " + shlex.join(a.argv)
    io.save(model, a.output, overwrite=a.force)
    Path(ckpt).unlink(missing_ok=True)
    n = min(50, len(losses))
    print(
        f"wrote {a.output}: task={task.name} loss {sum(losses[:n]) / n:.3f} -> {sum(losses[-n:]) / n:.3f} "
        f"in {model.training_info['seconds']:.0f}s"
    )


def _evaluate(a) -> None:
    from .evaluate import evaluate, format_table

    model, task = _load(a.model, a.task, a.max_params)
    if a.plot:
        io.check_output(a.plot, a.force)
        if task.dim not in (1, 2):
            raise UsageError(f"--plot draws 1-D or 2-D latents; this model's task has dim={task.dim}")
    report = evaluate(
        model,
        task,
        n_problems=a.problems,
        kl_samples=a.kl_samples,
        baselines=not a.no_baselines,
        vi_steps=a.vi_steps,
        is_samples=a.is_samples,
        seed=a.seed,
        progress=not a.quiet,
    )
    print(format_table(report), flush=True)
    if task.name == "lti_filter":
        from .filtering import evaluate_filter, format_filter_table

        rows = evaluate_filter(
            model, task, a.sequences, a.seq_steps, min(a.kl_samples, 2000), seed=a.seed, progress=not a.quiet
        )
        print()
        print(format_filter_table(rows, a.sequences, a.seq_steps), flush=True)
    if a.plot:
        from .plot import plot_problem

        plot_problem(model, task, a.plot, seed=a.seed, overwrite=a.force)
        print(f"wrote {a.plot}")


def _plot(a) -> None:
    from .plot import plot_problem

    model, task = _load(a.model, None, a.max_params)
    io.check_output(a.output, a.force)
    plot_problem(model, task, a.output, seed=a.seed, overwrite=a.force)
    print(f"wrote {a.output}")


COMMANDS = {"train": _train, "evaluate": _evaluate, "plot": _plot}


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def command(args: argparse.Namespace) -> None:
        args.argv = argv
        set_threads(args.threads)
        COMMANDS[args.command](args)

    return run(PROG, command, _parser(), argv)
