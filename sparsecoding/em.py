"""The EM driver: annealing schedule, truncated E-step per chunk, reduction across ranks, M-step.

One EM step ``t`` (0-based) runs at temperature ``T_t``; its row in the
history holds the parameters *after* the step's M-step, ``T_t``, the number
of data points used (``N_use``), the mean truncated log-likelihood per data
point of the parameters *before* the step (evaluated at ``T = 1``) and the
step's wall time in seconds (since the end of the previous step, so it includes
the previous step's ``on_step``, e.g. saving, which other ranks wait for).
"""

from __future__ import annotations

import functools
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec

import numpy as np
from threadpoolctl import threadpool_limits

from probmod.errors import NumericalError

from .parallel import SerialComm, bcast_params, chunked_sum, n_chunks
from .truncation import Block, n_use

__all__ = [
    "CollapseWarning",
    "EMResult",
    "Schedule",
    "TruncationWarning",
    "collapse_message",
    "data_moments",
    "gather_rows",
    "parse_anneal",
    "require_finite",
    "run_em",
    "truncation_message",
]


@dataclass(frozen=True)
class Schedule:
    """Temperature ``T0 -> T1`` linearly over the first ``frac`` of the steps, then ``T1``."""

    T0: float = 1.0
    T1: float = 1.0
    frac: float = 0.0

    def progress_left(self, step: int, steps: int) -> float:
        """1 at the start of annealing, falling linearly to 0 where annealing ends."""
        end = self.frac * steps
        return 0.0 if end <= 0 or step >= end else 1.0 - step / end

    def __call__(self, step: int, steps: int) -> float:
        end = self.frac * steps
        if end <= 0 or step >= end:
            return self.T1
        return self.T0 + (self.T1 - self.T0) * step / end


_ANNEAL = re.compile(r"^\s*([0-9.eE+-]+)\s*(?::\s*([0-9.eE+-]+)\s*@\s*([0-9.eE+-]+)\s*)?$")


def parse_anneal(spec: str | float | Schedule) -> Schedule:
    """Parse ``"T0:T1@frac"`` (e.g. ``"5:1@0.8"``) or a constant ``"T"``.

    Raises:
        ValueError: for a malformed spec, a temperature below 1 or ``frac`` outside [0, 1].

    Example:
        >>> s = parse_anneal("5:1@0.8")
        >>> [s(t, 10) for t in (0, 4, 8, 9)]
        [5.0, 3.0, 1.0, 1.0]
    """
    if isinstance(spec, Schedule):
        return spec
    m = _ANNEAL.match(str(spec))
    if not m:
        raise ValueError(
            f"anneal must look like '5:1@0.8' (T from 5 to 1 over the first 80% of steps) or '1'; got {spec!r}"
        )
    try:
        if m.group(2) is None:
            T0 = T1 = float(m.group(1))
            frac = 0.0
        else:
            T0, T1, frac = float(m.group(1)), float(m.group(2)), float(m.group(3))
    except ValueError:
        raise ValueError(f"anneal {spec!r}: not a number; use e.g. '5:1@0.8'") from None
    if T0 < 1 or T1 < 1:
        raise ValueError(f"anneal {spec!r}: temperatures must be >= 1")
    if not 0 <= frac <= 1:
        raise ValueError(f"anneal {spec!r}: the fraction after '@' must lie in [0, 1]")
    return Schedule(T0, T1, frac)


@dataclass
class EMResult:
    params: dict[str, np.ndarray]
    history: dict[str, np.ndarray] = field(default_factory=dict)


def _flatten(d: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(d[k], dtype=np.float64).ravel() for k in sorted(d)])


def _unflatten(v: np.ndarray, like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out, i = {}, 0
    for k in sorted(like):
        shape = np.shape(like[k])
        n = int(np.prod(shape))
        out[k] = v[i : i + n].reshape(shape)
        i += n
    return out


def data_moments(chunks: dict[int, np.ndarray], N: int, D: int, chunk_size: int, comm) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and variance of the data, summed in chunk order."""
    per = {c: np.concatenate([Y.sum(axis=0), (Y**2).sum(axis=0)]) for c, Y in chunks.items()}
    tot = chunked_sum(per, n_chunks(N, chunk_size), 2 * D, comm)
    mean = tot[:D] / N
    var = np.maximum(tot[D:] / N - mean**2, 1e-12)
    return mean, var


def gather_rows(chunks: dict[int, np.ndarray], rows: np.ndarray, D: int, chunk_size: int, comm) -> np.ndarray:
    """Global data ``rows`` on every rank: each is filled by the rank that holds it, then summed (exact: x + 0)."""
    out = np.zeros((len(rows), D))
    for i, r in enumerate(rows):  # H rows, not data points
        c, j = divmod(int(r), chunk_size)
        if c in chunks:
            out[i] = chunks[c][j]
    return comm.allreduce_sum(out) if comm.size > 1 else out


class CollapseWarning(UserWarning):
    """EM ended with ``pi`` or ``sigma`` collapsed: the dictionary explains (almost) nothing of the data."""


#: below this mean number of active causes per data point (H pi), pi has collapsed
MIN_ACTIVE = 0.1
#: above this share of the data's variance left to the noise (sigma² / mean variance), sigma has collapsed
MAX_NOISE_SHARE = 0.95


def collapse_message(params: dict[str, np.ndarray], var: np.ndarray) -> str | None:
    """Why the parameters look collapsed (a sentence saying what to try), or None when they do not.

    Example:
        >>> msg = collapse_message({"W": np.ones((4, 32)), "pi": np.array(0.002), "sigma": np.array(0.5)}, np.ones(4))
        >>> msg.split(".")[0]
        'pi collapsed to 0'
        >>> msg[:60]
        'pi collapsed to 0.002 (H pi = 0.064 active causes per data p'
    """
    H = params["W"].shape[1]
    pi = float(np.mean(params["pi"]))
    sigma2, data_var = float(params["sigma"]) ** 2, float(np.mean(var))
    what = []
    if H * pi < MIN_ACTIVE:
        what.append(f"pi collapsed to {pi:.3g} (H pi = {H * pi:.3g} active causes per data point, below {MIN_ACTIVE})")
    if data_var > 0 and sigma2 > MAX_NOISE_SHARE * data_var:
        what.append(
            f"sigma collapsed onto the data: the noise holds {sigma2 / data_var:.0%} of the data's variance "
            f"(above {MAX_NOISE_SHARE:.0%})"
        )
    if not what:
        return None
    return "; ".join(what) + (
        ". The dictionary explains almost none of the data: whiten it and drop flat patches "
        "(data patches --whiten --keep 0.5), start W from data points (--init data), anneal from a "
        "higher temperature (--anneal 4:1@0.5) or raise Hprime and gamma"
    )


class TruncationWarning(UserWarning):
    """The learned ``pi`` puts much prior mass on more than ``gamma`` active causes: ET misses that posterior mass."""


#: below this prior probability of at most ``gamma`` active causes, the truncated sets miss too much mass
MIN_TRUNCATED_MASS = 0.9


def truncation_message(params: dict[str, np.ndarray], gamma: int) -> str | None:
    """Why ``gamma`` is too small for the learned ``pi`` (a sentence saying what to raise), or None.

    Expectation Truncation only sees states with at most ``gamma`` active causes;
    under the prior these hold ``A = P(|s| <= gamma)`` of the mass.

    Example:
        >>> truncation_message({"W": np.ones((4, 100)), "pi": np.array(0.05)}, 3)[:44]
        'gamma=3 covers only 26% of the prior mass (P'
    """
    from .truncation import truncation_factors

    H = params["W"].shape[1]
    A = truncation_factors(float(np.mean(params["pi"])), H, int(gamma))[0]
    if A >= MIN_TRUNCATED_MASS:
        return None
    return (
        f"gamma={gamma} covers only {A:.0%} of the prior mass (P(|s| <= gamma) with H={H}, "
        f"pi={float(np.mean(params['pi'])):.3g}), below {MIN_TRUNCATED_MASS:.0%}: the truncated posterior misses "
        f"data points with more active causes; raise gamma (and Hprime), or use Ncut_factor=1 to leave them out"
    )


def require_finite(params: dict[str, np.ndarray], loglik, where: str) -> None:
    """Raise :class:`~probmod.errors.NumericalError` naming ``where``
    if a parameter or the log-likelihood is not finite."""
    bad = [k for k in sorted(params) if not np.all(np.isfinite(params[k]))]
    if loglik is not None and not np.isfinite(loglik):
        bad.append("log-likelihood")
    if bad:
        raise NumericalError(
            f"{where} gave non-finite {', '.join(bad)}; the data may be too large or too small in "
            f"magnitude (rescale it, e.g. to unit variance)"
        )


_P = ParamSpec("_P")


def _one_blas_thread(run: Callable[_P, EMResult]) -> Callable[_P, EMResult]:
    """Run ``run`` with one BLAS thread and numpy's overflow warnings off."""

    @functools.wraps(run)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> EMResult:
        with (
            # small matrix products: one BLAS thread is faster than several (and ranks add parallelism)
            threadpool_limits(limits=1, user_api="blas"),
            # overflow shows up as inf/NaN, which require_finite reports with the step; numpy's warnings would repeat it
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        ):
            return run(*args, **kwargs)

    return wrapper


@_one_blas_thread
def run_em(
    model,
    chunks: dict[int, np.ndarray],
    *,
    N: int,
    D: int,
    steps: int,
    anneal: str | Schedule = "1",
    Ncut_factor: float = 0.0,
    seed: int = 0,
    W_noise: float = 0.0,
    comm=None,
    params: dict[str, np.ndarray] | None = None,
    start_step: int = 0,
    history: Mapping[str, Iterable[Any]] | None = None,
    on_step: Callable[[int, dict, dict], None] | None = None,
    progress: bool = False,
) -> EMResult:
    """Run truncated EM steps ``start_step .. steps-1`` on this rank's ``chunks``.

    Args:
        model: a :class:`~sparsecoding.models.base.SparseCodingModel` (its
            ``H, Hprime, gamma, chunk_size`` are used).
        chunks: ``{global chunk id: rows}`` held by this rank.
        N, D: global data size.
        params: starting parameters (all ranks must pass the same); drawn
            from ``seed`` when None.
        history: rows of earlier steps (lists per key) when resuming.
        on_step: called on every rank as ``on_step(step, params, row)`` after each step.
        W_noise: standard deviation of Gaussian noise added to W after each
            M-step while annealing, falling linearly to 0 where annealing ends
            (drawn from ``(seed, step)``, so it is the same on every rank and on resume).

    Raises:
        LimitError: the model's memory estimate exceeds its ``max_memory``
            (checked before any table is built).
        UsageError: ``params`` fail the model's :meth:`check_params`.
        NumericalError: the initialisation or an EM step produced NaN or infinite
            parameters or log-likelihood; the message names the step. Every rank
            holds the same parameters, so every rank raises it at the same step.
    """
    comm = comm or SerialComm()
    schedule = parse_anneal(anneal)
    model.check_memory(N, D, ranks=comm.size)
    et = model.engine()
    H = int(model.H)
    C = n_chunks(N, int(model.chunk_size))
    mean, var = data_moments(chunks, N, D, int(model.chunk_size), comm)
    if params is None:
        params = model.init_params(D, mean, var, np.random.default_rng(seed))
        if getattr(model, "init", "noise") == "data":
            rows = np.sort(np.random.default_rng([seed, 1]).choice(N, size=H, replace=N < H))
            params = model.init_from_data(params, gather_rows(chunks, rows, D, int(model.chunk_size), comm))
        require_finite(params, None, "the initialisation (from the data's mean and variance)")
    else:
        params = model.check_params(params, D, source="starting parameters")
    params = bcast_params(params, comm)
    hist: dict[str, list] = {k: list(v) for k, v in (history or {}).items()}

    bar = None
    if progress and comm.rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=start_step, desc=f"{model.name} EM", unit="step", dynamic_ncols=True)

    t_end = time.perf_counter()
    for t in range(start_step, steps):
        T = schedule(t, steps)
        like_stats = model.new_stats(params, D)
        like_common = {"n_active": np.zeros(()), "value_counts": np.zeros(len(et.values)), "loglik": np.zeros(())}
        like = {**{"m_" + k: v for k, v in like_stats.items()}, **{"c_" + k: v for k, v in like_common.items()}}

        def chunk_stats(Y, blocks, logZ=None, used=None, T=T, params=params):  # this step's T and parameters
            if logZ is None:
                post, logZ = et.posterior_and_log_marginal(blocks, T)
            else:
                post = et.posterior(blocks, T)
            if used is not None:
                Y = Y[used]
                post = [p[used] for p in post]
                blocks = [Block(None if b.idx is None else b.idx[used], b.vals, b.logjoint[used]) for b in blocks]
            st = model.new_stats(params, D)
            model.accumulate(params, Y, blocks, post, st, T)
            com = et.common_stats(blocks, post)
            com["loglik"] = np.array(float(np.sum(logZ)))
            return _flatten({**{"m_" + k: v for k, v in st.items()}, **{"c_" + k: v for k, v in com.items()}})

        per_chunk: dict[int, np.ndarray] = {}
        if Ncut_factor > 0:
            N_use = n_use(N, float(params["pi"]), H, et.gamma, Ncut_factor)
            cache = {}
            allZ = np.zeros(N)
            for c, Y in chunks.items():
                blocks = et.blocks(params, Y)
                logZ = et.log_marginal(blocks)
                cache[c] = (blocks, logZ)
                start = c * int(model.chunk_size)
                allZ[start : start + len(Y)] = logZ
            allZ = comm.allreduce_sum(allZ) if comm.size > 1 else allZ
            order = np.lexsort((np.arange(N), -allZ))  # best explained first, ties by index
            used_all = np.zeros(N, dtype=bool)
            used_all[order[:N_use]] = True
            for c, Y in chunks.items():
                start = c * int(model.chunk_size)
                blocks, logZ = cache.pop(c)
                per_chunk[c] = chunk_stats(Y, blocks, logZ, used_all[start : start + len(Y)])
        else:
            N_use = N
            for c, Y in chunks.items():
                per_chunk[c] = chunk_stats(Y, et.blocks(params, Y, reuse=True))  # one work array for all chunks
        total = _unflatten(chunked_sum(per_chunk, C, len(_flatten(like)), comm), like)
        stats = {k[2:]: v for k, v in total.items() if k.startswith("m_")}
        common = {k[2:]: v for k, v in total.items() if k.startswith("c_")}
        new = model.m_step(params, stats, common, N_use, T)
        noise = W_noise * schedule.progress_left(t, steps)
        if noise > 0:  # annealed parameter noise, drawn from (seed, step): the same on every rank and on resume
            new = model.perturb(new, noise, np.random.default_rng([seed, t]))
        params = bcast_params(new, comm)
        require_finite(params, common["loglik"], f"EM step {t} (T={T:g})")
        # timed from the previous step's end: that includes its on_step (rank 0 saving results), which
        # the other ranks wait for at this step's reduction
        now = time.perf_counter()
        row = {
            "step": t,
            "T": T,
            "N_use": N_use,
            "loglik": float(common["loglik"]) / N,
            "wall_time": now - t_end,
            **params,
        }
        t_end = now
        for k, v in row.items():
            hist.setdefault(k, []).append(np.array(v))
        if bar is not None:
            bar.set_postfix(
                T=f"{T:.2f}",
                ll=f"{row['loglik']:.3f}",
                pi=f"{float(params['pi']):.3f}",
                sigma=f"{float(params['sigma']):.3f}",
            )
            bar.update(1)
        if on_step is not None:
            on_step(t, params, row)
    if bar is not None:
        bar.close()
    for message, category in (
        (collapse_message(params, var), CollapseWarning),
        (truncation_message(params, et.gamma), TruncationWarning),
    ):
        if message is not None and comm.rank == 0 and start_step < steps:  # a finished run reloaded: said before
            warnings.warn(message, category, stacklevel=3)
    return EMResult(params, {k: np.stack(v) for k, v in hist.items()})
