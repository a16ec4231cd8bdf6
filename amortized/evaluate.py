"""Accuracy and speed of a trained model against the reference posterior and the baselines.

Metrics, per problem, then averaged:

* **KL(exact ‖ q)**, estimated as the mean of ``log p(x) − log q(x)`` over
  ``kl_samples`` draws from the exact (or reference) posterior p.
* **NLL**: ``−log q(x_true)``, the latent the data were simulated from.
* **ms/posterior**: wall time to produce one posterior, median of repeats,
  at batch 1 and batch 1024 (total time divided by the batch).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from probcirc import Distribution, GaussianMixture
from probmod.errors import ModelMismatchError
from probmod.progress import Progress

from . import _gmm
from .baselines import gmm_vi, importance_sampling
from .tasks import Problems, Task
from .transformer import DistributionTransformer


@dataclass
class Row:
    """One method's figures; times in milliseconds per posterior (NaN = not measured)."""

    method: str
    kl: float
    kl_median: float
    nll: float
    ms_batch1: float = float("nan")
    ms_batched: float = float("nan")


@dataclass
class Report:
    task: str
    n_problems: int
    kl_samples: int
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, method: str) -> Row:
        return next(r for r in self.rows if r.method == method)


def draw(posterior: Distribution, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws per problem from a reference posterior, ``(n, B, D)``."""
    if isinstance(posterior, GaussianMixture):
        return _gmm.sample(posterior.to(torch.float64), n, generator)
    return posterior.sample(n, generator=generator)


def score(q: GaussianMixture, x: torch.Tensor, tick: Callable[[], None] | None = None) -> torch.Tensor:
    """``log q(x)`` in chunks small enough for mixtures of a thousand components; ``tick()`` after each chunk."""
    b, k, d = q.means.shape
    if k > 64 and torch.equal(q.scale_tril, q.scale_tril[:, :1].expand_as(q.scale_tril)):
        return _gmm.log_prob_shared_scale(q.to(torch.float64), x.double(), tick=tick)
    # A few MB per chunk: large temporaries go through mmap and page faults, which cost more than the loop.
    chunk = max(1, 2**18 // max(1, b * k * d))
    return _gmm.log_prob(q.to(torch.float64), x.double(), chunk=chunk, tick=tick)


def kl_and_nll(
    exact: Distribution,
    log_p: torch.Tensor,
    samples: torch.Tensor,
    q: GaussianMixture,
    latent: torch.Tensor,
    tick: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem KL(exact ‖ q) estimates and −log q(latent); ``tick`` as in :func:`score`."""
    kl = (log_p - score(q, samples, tick)).mean(0)
    nll = -score(q, latent[None])[0]
    return kl, nll


def _median_ms(fn: Callable[[], object], repeats: int, per: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times) / per


def time_model(model: DistributionTransformer, problems: Problems, batch: int, repeats: int) -> float:
    """Median ms per posterior for ``model`` at ``batch`` (problems are tiled up to the batch)."""
    p = problems.to(torch.float32)
    idx = torch.arange(batch) % len(p)
    sub = p[idx]
    with torch.inference_mode():
        model(sub.prior, sub.observations, sub.obs_mask)  # warm-up
        if batch == 1:
            singles = [p[i % len(p)] for i in range(repeats)]
            it = iter(singles)
            return _median_ms(lambda: model(*_args(next(it))), repeats, 1)
        return _median_ms(lambda: model(sub.prior, sub.observations, sub.obs_mask), repeats, batch)


def _args(p: Problems):
    return p.prior, p.observations, p.obs_mask


def evaluate(
    model: DistributionTransformer,
    task: Task,
    n_problems: int = 200,
    kl_samples: int = 10_000,
    baselines: bool = True,
    vi_steps: int = 500,
    is_samples: int = 1000,
    seed: int = 1234,
    timing_batch: int = 1024,
    timing_repeats: int = 50,
    progress: bool = False,
) -> Report:
    """Score ``model`` and the baselines on ``n_problems`` fresh problems of ``task``.

    With ``progress=True`` each stage is announced on stderr, and long stages
    (the GMM-VI baseline's Adam steps) report a line every few seconds even when
    stderr is a pipe or a log file (a bar on a terminal).

    Example:
        >>> from amortized.tasks import LinearGaussian
        >>> from amortized.train import build_model
        >>> task = LinearGaussian(dim=1, n_components=2)
        >>> model = build_model(task, d_model=16, n_layers=1, n_heads=2)
        >>> r = evaluate(model, task, n_problems=4, kl_samples=100, vi_steps=5, is_samples=50, timing_batch=8,
        ...              timing_repeats=2)
        >>> ", ".join(row.method for row in r.rows)
        'prior, exact, transformer, gmm-vi, snis'
    """
    if model.task is not None and model.task != task.name:
        raise ModelMismatchError(f"model was trained on task {model.task!r}, not {task.name!r}")
    # progress units: the reference, one scoring per method, and every Adam step of GMM-VI
    total = 3 + (vi_steps + 2 if baselines else 0)
    with Progress(total=total, desc="evaluate", unit="step", enabled=progress) as bar:
        bar.write(f"evaluate: {n_problems} {task.name} problems, reference posteriors and {kl_samples} draws each")
        return _evaluate(
            model,
            task,
            n_problems,
            kl_samples,
            baselines,
            vi_steps,
            is_samples,
            seed,
            timing_batch,
            timing_repeats,
            bar,
        )


def _evaluate(
    model: DistributionTransformer,
    task: Task,
    n_problems: int,
    kl_samples: int,
    baselines: bool,
    vi_steps: int,
    is_samples: int,
    seed: int,
    timing_batch: int,
    timing_repeats: int,
    bar: Progress,
) -> Report:
    gen = torch.Generator().manual_seed(seed)
    problems = task.sample(n_problems, gen)
    exact = task.posterior(problems.prior, problems.observations, problems.obs_mask)
    samples = draw(exact, kl_samples, gen)
    log_p = exact.log_prob(samples)
    bar.update(1)
    # Scoring a KDE baseline and timing GMM-VI take minutes on large runs without finishing a unit;
    # update(0) still logs a line every few seconds, so a log shows the job is alive.
    heartbeat = lambda *_: bar.update(0)  # noqa: E731
    report = Report(task.name, n_problems, kl_samples)
    if not task.exact:
        report.notes.append(f"{task.name}: KL is measured against a quadrature/grid reference, not a closed form")

    def add(method: str, q: GaussianMixture, ms1: float = float("nan"), msb: float = float("nan")) -> None:
        kl, nll = kl_and_nll(exact, log_p, samples, q, problems.latent, tick=heartbeat)
        report.rows.append(Row(method, kl.mean().item(), kl.median().item(), nll.mean().item(), ms1, msb))
        bar.update(1)

    add("prior", problems.prior)
    nll_exact = -exact.log_prob(problems.latent.double()[None])[0]
    report.rows.append(Row("exact", 0.0, 0.0, nll_exact.mean().item()))

    bar.write(f"evaluate: transformer (timed at batch 1 and {timing_batch})")
    model.eval()
    with torch.inference_mode():
        f32 = problems.to(torch.float32)
        q = model(f32.prior, f32.observations, f32.obs_mask)
    add(
        "transformer",
        q,
        time_model(model, problems, 1, timing_repeats),
        time_model(model, problems, timing_batch, max(3, timing_repeats // 10)),
    )

    if baselines:
        step = lambda _: bar.update(1)  # noqa: E731
        for name, fn in (
            ("gmm-vi", lambda p, cb=None: gmm_vi(task, p, steps=vi_steps, seed=seed, callback=cb)),
            ("snis", lambda p, cb=None: importance_sampling(task, p, n_samples=is_samples, seed=seed)),
        ):
            bar.write(f"evaluate: {name} baseline" + (f", {vi_steps} Adam steps" if name == "gmm-vi" else ""))
            t0 = time.perf_counter()
            q = fn(problems, step)  # the accuracy run doubles as the batched timing
            msb = 1e3 * (time.perf_counter() - t0) / n_problems
            singles = iter(range(3))

            def one(fn: Callable = fn, it: Iterator[int] = singles) -> object:
                return fn(problems[next(it) % n_problems], heartbeat)

            ms1 = _median_ms(one, 3, 1)
            add(name, q, ms1, msb)
        report.notes.append(
            f"gmm-vi: {vi_steps} Adam steps, 16 draws per component; "
            f"snis: {is_samples} prior draws, weighted Gaussian KDE for its density"
        )
    report.notes.append(
        f"batched: transformer at batch {timing_batch}, baselines at batch {n_problems}; "
        f"batch-1 times are medians; torch threads={torch.get_num_threads()}"
    )
    return report


def format_table(report: Report) -> str:
    """The report as a fixed-width text table."""
    head = f"{'method':<12} {'KL mean':>9} {'KL median':>10} {'NLL':>8} {'ms/post b=1':>12} {'ms/post batched':>16}"
    lines = [f"task={report.task} problems={report.n_problems} kl_samples={report.kl_samples}", head, "-" * len(head)]
    for r in report.rows:
        lines.append(
            f"{r.method:<12} {r.kl:>9.4f} {r.kl_median:>10.4f} {r.nll:>8.3f} {_fmt(r.ms_batch1):>12} "
            f"{_fmt(r.ms_batched):>16}"
        )
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _fmt(ms: float) -> str:
    return "-" if ms != ms else (f"{ms:.3f}" if ms < 10 else f"{ms:.0f}")
