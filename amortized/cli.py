"""``python -m amortized``: train, evaluate, plot and filter from the command line.

Every error the user can fix is reported as one line on stderr with exit
status 2; nothing is overwritten without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from probcirc import io

from .tasks import TASKS, make_task


class UsageError(Exception):
    """Bad input the user can fix; printed as one line."""


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m amortized", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a Distribution Transformer on fresh simulations")
    t.add_argument("--task", required=True, choices=sorted(TASKS))
    t.add_argument("--dim", type=_positive(int), default=None, help="latent dimension (linear_gaussian only; others are 1-D)")
    t.add_argument("--components", type=_positive(int), default=4, help="mixture components K")
    t.add_argument("--max-obs", type=int, default=None, help="most observations per problem (task default if omitted)")
    t.add_argument("--steps", type=_positive(int), default=2000)
    t.add_argument("--batch-size", type=_positive(int), default=256)
    t.add_argument("--lr", type=_positive(float), default=1e-3)
    t.add_argument("--weight-decay", type=float, default=1e-2)
    t.add_argument("--d-model", type=_positive(int), default=64)
    t.add_argument("--layers", type=_positive(int), default=3)
    t.add_argument("--heads", type=_positive(int), default=4)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=_positive(int), default=500,
                   help="write OUTPUT.ckpt.h5 this often (steps)")
    t.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint's weights and step count")
    t.add_argument("--threads", type=_positive(int), default=None, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    t.add_argument("-o", "--output", required=True, help="model file to write (HDF5)")
    t.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")

    e = sub.add_parser("evaluate", help="KL, NLL and wall time against the reference posterior and two baselines")
    e.add_argument("model")
    e.add_argument("--task", choices=sorted(TASKS), help="refuse a model trained on another task")
    e.add_argument("--problems", type=_positive(int), default=200, help="test problems")
    e.add_argument("--kl-samples", type=_positive(int), default=10_000, help="samples per KL estimate")
    e.add_argument("--vi-steps", type=_positive(int), default=500)
    e.add_argument("--is-samples", type=_positive(int), default=1000, help="prior draws for importance sampling")
    e.add_argument("--no-baselines", action="store_true")
    e.add_argument("--seed", type=int, default=1234)
    e.add_argument("--threads", type=_positive(int), default=None)
    e.add_argument("--sequences", type=_positive(int), default=200, help="lti_filter: trajectories to roll out")
    e.add_argument("--seq-steps", type=_positive(int), default=30, help="lti_filter: steps per trajectory")
    e.add_argument("--plot", metavar="PNG", help="also draw prior / exact / model contours to PNG")
    e.add_argument("--overwrite", action="store_true", help="replace the PNG if it exists")

    q = sub.add_parser("plot", help="prior, exact posterior and model posterior for one problem, to PNG")
    q.add_argument("model")
    q.add_argument("-o", "--output", required=True)
    q.add_argument("--seed", type=int, default=5)
    q.add_argument("--overwrite", action="store_true")
    return p


def _load(path: str, task: str | None):
    from .transformer import DistributionTransformer

    try:
        model = io.load(path, kind=DistributionTransformer)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except io.FormatError as err:
        raise UsageError(str(err)) from None
    if not model.task or model.task not in TASKS:
        raise UsageError(f"{path}: the model names no known task (got {model.task!r})")
    if task is not None and model.task != task:
        raise UsageError(f"{path}: model was trained on task {model.task!r}, not {task!r}")
    return model, make_task(model.task, **model.task_config)


def _check_out(path: str, overwrite: bool) -> None:
    if Path(path).exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")
    if Path(path).is_dir():
        raise UsageError(f"{path} is a directory")


def _train(a) -> None:
    from .train import build_model, train
    from .transformer import DistributionTransformer

    _check_out(a.output, a.overwrite)
    config = dict(n_components=a.components)
    if a.task == "linear_gaussian":
        config["dim"] = a.dim or 2
    elif a.dim not in (None, 1):
        raise UsageError(f"task {a.task} has a 1-D latent; --dim must be 1, got {a.dim}")
    if a.max_obs is not None:
        if a.max_obs < 0:
            raise UsageError(f"--max-obs must be at least 0, got {a.max_obs}")
        config["max_obs"] = a.max_obs
    if a.d_model % a.heads:
        raise UsageError(f"--heads ({a.heads}) must divide --d-model ({a.d_model})")
    task = make_task(a.task, **config)
    start = 0
    if a.resume:
        model, ckpt_task = _load(a.resume, a.task)
        if ckpt_task.config() != task.config():
            raise UsageError(f"{a.resume}: checkpoint task settings {ckpt_task.config()} differ from {task.config()}")
        start = int(model.training_info.get("steps", 0))
    else:
        model = build_model(task, a.d_model, a.layers, a.heads)
    ckpt = str(a.output) + ".ckpt.h5"
    losses = train(model, task, a.steps, a.batch_size, a.lr, a.weight_decay, seed=a.seed, start_step=start,
                   progress=not a.no_progress, checkpoint=ckpt, checkpoint_every=a.checkpoint_every)
    model.training_info["command"] = "python -m amortized " + shlex.join(a.argv)
    io.save(model, a.output, overwrite=a.overwrite)
    if Path(ckpt).exists():
        Path(ckpt).unlink()
    n = min(50, len(losses))
    print(f"wrote {a.output}: task={task.name} loss {sum(losses[:n]) / n:.3f} -> {sum(losses[-n:]) / n:.3f} "
          f"in {model.training_info['seconds']:.0f}s")
    assert isinstance(model, DistributionTransformer)


def _evaluate(a) -> None:
    from .evaluate import evaluate, format_table

    model, task = _load(a.model, a.task)
    if a.plot:
        _check_out(a.plot, a.overwrite)
    report = evaluate(model, task, n_problems=a.problems, kl_samples=a.kl_samples, baselines=not a.no_baselines,
                      vi_steps=a.vi_steps, is_samples=a.is_samples, seed=a.seed)
    print(format_table(report))
    if model.task == "lti_filter":
        from .filtering import evaluate_filter, format_filter_table

        rows = evaluate_filter(model, task, a.sequences, a.seq_steps, min(a.kl_samples, 2000), seed=a.seed)
        print()
        print(format_filter_table(rows, a.sequences, a.seq_steps))
    if a.plot:
        from .plot import plot_problem

        plot_problem(model, task, a.plot, seed=a.seed)
        print(f"wrote {a.plot}")


def _plot(a) -> None:
    from .plot import plot_problem

    model, task = _load(a.model, None)
    _check_out(a.output, a.overwrite)
    plot_problem(model, task, a.output, seed=a.seed)
    print(f"wrote {a.output}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        {"train": _train, "evaluate": _evaluate, "plot": _plot}[args.command](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
