"""Sequential filtering with a trained ``lti_filter`` model, scored against the exact Gaussian-sum filter."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from probmod.progress import Progress

from . import _gmm
from .rollout import roll_forward
from .tasks import LTIFilter
from .transformer import DistributionTransformer


@dataclass
class FilterRow:
    """Averages over every step of every sequence."""

    method: str
    kl: float  # KL(Gaussian-sum filter ‖ method), per step
    nll: float  # −log q(x_t) of the true state
    rmse: float  # of the posterior mean
    ms_per_step: float = float("nan")


def kalman_filter(task: LTIFilter, prior, observations: torch.Tensor, obs_mask: torch.Tensor):
    """Plain Kalman filter started from the moment-matched Gaussian of the prior (a 1-component mixture per step)."""
    mean, cov = _gmm.mean_cov(prior.to(torch.float64))
    zero_logits = torch.zeros(mean.shape[0], 1, dtype=torch.float64)
    single = _gmm.make(zero_logits, mean[:, None], torch.linalg.cholesky(cov)[:, None])
    return task.reference_filter(single, observations, obs_mask)


def evaluate_filter(
    model: DistributionTransformer,
    task: LTIFilter,
    n_sequences: int = 200,
    steps: int = 30,
    kl_samples: int = 10_000,
    seed: int = 4321,
    progress: bool = False,
) -> list[FilterRow]:
    """Roll the model forward on simulated trajectories; compare with the exact and the plain Kalman filter.

    ``progress=True`` reports the scoring on stderr (a line every few seconds on a pipe).

    Example:
        >>> from amortized.train import build_model
        >>> task = LTIFilter(n_components=2)
        >>> model = build_model(task, d_model=16, n_layers=1, n_heads=2)
        >>> [r.method for r in evaluate_filter(model, task, n_sequences=3, steps=4, kl_samples=50)]
        ['transformer', 'kalman (1 Gaussian)', 'gaussian-sum (exact)']
    """
    gen = torch.Generator().manual_seed(seed)
    seq = task.simulate_sequence(steps, n_sequences, gen)
    obs, mask, x = seq["observations"], seq["obs_mask"], seq["latents"]
    exact = task.reference_filter(seq["prior"], obs, mask)
    kalman = kalman_filter(task, seq["prior"], obs, mask)
    model.eval()
    with torch.inference_mode():
        dt = roll_forward(model, seq["prior"].to(torch.float32), obs.float(), mask, transition=task.predict)
        first = _gmm.index(seq["prior"].to(torch.float32), slice(0, 1))
        roll_forward(model, first, obs[:, :1].float(), mask[:, :1], transition=task.predict)  # warm-up
        t0 = time.perf_counter()
        roll_forward(model, first, obs[:, :1].float(), mask[:, :1], transition=task.predict)
        ms1 = 1e3 * (time.perf_counter() - t0) / steps  # update + prediction, one sequence
    rows = []
    methods = (
        ("transformer", dt, ms1),
        ("kalman (1 Gaussian)", kalman, float("nan")),
        ("gaussian-sum (exact)", exact, float("nan")),
    )
    with Progress(total=len(methods) * steps, desc="rollout scoring", unit="step", enabled=progress) as bar:
        for name, posts, timing in methods:
            rows.append(_score_rollout(name, posts, timing, exact, x, kl_samples, gen, bar))
    return rows


def _score_rollout(
    name: str, posts, timing: float, exact, x: torch.Tensor, kl_samples: int, gen: torch.Generator, bar: Progress
) -> FilterRow:
    """KL to the exact filter, NLL and RMSE of one method's posteriors, averaged over steps and sequences."""
    kls, nlls, errs = [], [], []
    for t in range(len(posts)):
        s = _gmm.sample(exact[t], kl_samples, gen)
        kls.append((_gmm.log_prob(exact[t], s) - _gmm.log_prob(posts[t].to(torch.float64), s)).mean(0))
        nlls.append(-_gmm.log_prob(posts[t].to(torch.float64), x[t][None])[0])
        errs.append((_gmm.mean_cov(posts[t].to(torch.float64))[0] - x[t]).pow(2).sum(-1))
        bar.update(1)
    return FilterRow(
        name,
        torch.stack(kls).mean().item(),
        torch.stack(nlls).mean().item(),
        torch.stack(errs).mean().sqrt().item(),
        timing,
    )


def format_filter_table(rows: list[FilterRow], n_sequences: int, steps: int) -> str:
    head = f"{'filter':<22} {'KL/step':>8} {'NLL':>8} {'RMSE':>7} {'ms/step b=1':>12}"
    lines = [
        f"lti_filter rollout: {n_sequences} sequences x {steps} steps, KL against the exact Gaussian-sum filter",
        head,
        "-" * len(head),
    ]
    for r in rows:
        ms = "-" if r.ms_per_step != r.ms_per_step else f"{r.ms_per_step:.3f}"
        lines.append(f"{r.method:<22} {r.kl:>8.4f} {r.nll:>8.3f} {r.rmse:>7.3f} {ms:>12}")
    return "\n".join(lines)
