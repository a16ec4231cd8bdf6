"""Training by amortised forward KL: minimise −log q(x | prior, data) on fresh simulations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from probmod import io
from probmod.errors import NumericalError, UsageError
from probmod.progress import Progress

from .tasks import Task
from .transformer import DistributionTransformer


def build_model(task: Task, d_model: int = 64, n_layers: int = 3, n_heads: int = 4) -> DistributionTransformer:
    """A fresh model sized for ``task`` and carrying its settings.

    Example:
        >>> from amortized.tasks import LTIFilter
        >>> build_model(LTIFilter(n_components=3), d_model=16, n_layers=1, n_heads=2).obs_dim
        3
    """
    return DistributionTransformer(
        task.dim, task.n_components, task.obs_dim, d_model, n_layers, n_heads, task=task.name, task_config=task.config()
    )


def loss_on(model: DistributionTransformer, task: Task, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Mean −log q(x | prior, data) over ``batch`` freshly simulated problems."""
    p = task.sample(batch, generator).to(torch.float32)
    return -model(p.prior, p.observations, p.obs_mask).log_prob(p.latent).mean()


def train(
    model: DistributionTransformer,
    task: Task,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    warmup: int = 100,
    seed: int = 0,
    start_step: int = 0,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 500,
    callback: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train ``model`` on ``task`` with AdamW and a warm-up + cosine learning-rate schedule.

    Every step draws ``batch_size`` new problems, so there is no data set to
    overfit. If ``checkpoint`` is given, the model is written there (atomically)
    every ``checkpoint_every`` steps; ``start_step`` resumes the schedule.
    ``progress=True`` reports on stderr (a bar on a terminal, a line every few
    seconds elsewhere).

    Returns:
        The training loss of every step run.

    Raises:
        UsageError: ``steps`` or ``batch_size`` is not positive.
        NumericalError: the loss became NaN or infinite (lower ``lr``).

    Example:
        >>> from amortized.tasks import LinearGaussian
        >>> task = LinearGaussian(dim=1, n_components=2)
        >>> model = build_model(task, d_model=16, n_layers=1, n_heads=2)
        >>> losses = train(model, task, steps=5, batch_size=32, progress=False)
        >>> len(losses)
        5
    """
    if steps < 1 or batch_size < 1:
        raise UsageError(f"steps and batch_size must be positive, got steps={steps}, batch_size={batch_size}")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    def schedule(step: int) -> float:
        step += start_step
        if step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, steps + start_step - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    gen = torch.Generator().manual_seed(seed + start_step)
    model.train()
    losses: list[float] = []
    t0 = time.time()
    with Progress(total=steps, desc=f"train {task.name}", unit="step", enabled=progress) as bar:
        for i in range(steps):
            loss = loss_on(model, task, batch_size, gen)
            if not torch.isfinite(loss):
                raise NumericalError(f"loss became {loss.item()} at step {start_step + i}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(f"loss={sum(losses[-50:]) / len(losses[-50:]):.3f}")
            if callback is not None:
                callback(start_step + i, losses[-1])
            if checkpoint is not None and (i + 1) % checkpoint_every == 0 and i + 1 < steps:
                model.training_info = dict(steps=start_step + i + 1, seconds=time.time() - t0)
                io.save(model, checkpoint, overwrite=True)
    model.eval()
    model.training_info = dict(
        steps=start_step + steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        seconds=round(time.time() - t0, 1),
        final_loss=sum(losses[-50:]) / len(losses[-50:]),
    )
    return losses
