"""The common face of the sparse coding models: a Distribution and a scikit-learn estimator.

A model subclass supplies only its equations:

* ``nonzero_values`` and ``log_prior_values``: the state space and the prior;
* ``log_lik(params, Y, obs, idx, vals)``: ``log p(y | s)`` for a block of states;
* ``new_stats`` / ``accumulate`` / ``m_step``: sufficient statistics and updates;
* ``init_params`` and ``generate``;
* ``stat_size``, ``param_size`` and ``work_per_point``: sizes for the memory estimate.

Candidate selection, state enumeration, normalisation, annealing, data
truncation, chunked reduction across MPI ranks and checkpoints live in
:mod:`sparsecoding.truncation` and :mod:`sparsecoding.em`.

The estimator contract is scikit-learn's: ``__init__`` stores hyperparameters
only; ``fit`` validates them and sets the fitted attributes, which end in
``_`` (``components_``, ``pi_``, ``sigma_``, ``params_``, ``n_iter_``,
``converged_``, ``history_``, ``n_features_in_``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
import torch

from probmod.distribution import Distribution, check_mask
from probmod.errors import LimitError, ProbmodError, UsageError
from probmod.estimator import (
    ConvergenceWarning,
    Estimator,
    check_is_fitted,
    check_random_state,
)

from ..truncation import ExpectationTruncation, exact_log_marginal, truncation_factors
from .checks import format_size, memory_estimate, parse_size, require

__all__ = ["EXACT_STATES_LIMIT", "ExactIntractableError", "SparseCodingModel", "with_base_hyperparameters"]

#: how EM starts W: from data points drawn at random, or from the data mean plus noise
INIT_METHODS = ("noise", "data")

#: ``log_prob`` enumerates every latent state when there are at most this many (2**12: BSC with H <= 12)
EXACT_STATES_LIMIT = 2**12


class ExactIntractableError(UsageError, NotImplementedError):
    """``log_prob`` was asked for a model with too many latent states to enumerate exactly.

    A :class:`~probmod.errors.UsageError` (exit code 2) that is also a
    ``NotImplementedError``, as the :class:`~probmod.distribution.Distribution`
    interface raises for queries a model cannot answer exactly.
    """


def _sample_shape(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(sample_shape, int):
        return (sample_shape,)
    return tuple(int(s) for s in sample_shape)


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def converged(history: dict[str, np.ndarray], tol: float) -> bool:
    """Whether the last EM step, at T = 1, changed the mean truncated log-likelihood ℓ
    by at most ``tol * max(1, |ℓ|)``."""
    ll, T = np.asarray(history.get("loglik", [])), np.asarray(history.get("T", []))
    if len(ll) < 2 or T[-1] != 1.0 or T[-2] != 1.0:
        return False
    return bool(abs(ll[-1] - ll[-2]) <= tol * max(1.0, abs(ll[-1])))


class SparseCodingModel(Estimator, Distribution):
    """Base class of BSC, TSC, DSC, MCA, MMCA and GSC: a scikit-learn estimator and a Distribution.

    Args:
        H: number of latent causes (dictionary elements).
        Hprime: candidate causes kept per data point by Expectation Truncation
            (None: ``min(H, 8)``).
        gamma: most causes active at once in a truncated state (None: ``min(Hprime, 5)``).
        steps: EM steps run by :meth:`fit` (always all of them: the annealing
            schedule is laid out over them).
        anneal: temperature schedule, e.g. ``"2:1@0.6"`` (T from 2 to 1 over the
            first 60% of the steps) or ``"1"`` (no annealing).
        Ncut_factor: data truncation in [0, 1]: keep the
            ``N (1 - (1 - A) Ncut_factor)`` points best explained by their
            truncated state sets (``A = P(|s| <= gamma)`` under the prior).
        W_noise: std of noise added to W after each M-step while annealing,
            decreasing linearly to 0 where annealing ends (helps escape local optima).
        init: how EM starts ``W``: ``"noise"`` (the data mean plus Gaussian noise of a quarter
            of the data's standard deviation: small, unstructured fields, which every data point
            pulls on alike under the annealed posterior) or ``"data"`` (each column a data point
            drawn at random). On whitened natural patches and on the bars test the small start
            learned better dictionaries (docs/sparsecoding.md, "Dictionaries from natural images").
        chunk_size: data points per chunk; statistics are summed per chunk in a
            fixed order, so results do not depend on the number of MPI ranks.
        tol: ``converged_`` is True when the last step, at T = 1, changed the mean
            truncated log-likelihood per point ℓ by at most ``tol * max(1, |ℓ|)``;
            otherwise :meth:`fit` warns with :class:`~probmod.estimator.ConvergenceWarning`.
        max_memory: the most memory (bytes, or a size such as ``"16GiB"``) a fit may
            need per rank, by :meth:`check_memory`'s estimate; None for no limit.
        warm_start: start :meth:`fit` from the current ``params_`` (from an earlier
            fit or :meth:`from_params`) instead of a fresh initialisation.
        random_state: seed of the initialisation and of the annealing noise: None
            for fresh randomness, an int for a reproducible fit (the command line's
            ``--seed``), or a numpy Generator.

    The defaults are the command line's (``sparsecoding train``), which reads them from here.
    Known parameters (a fixed generative model, or an EM starting point with
    ``warm_start=True``) are given through :meth:`from_params`.
    """

    name = "base"
    #: names of the parameters, in the order they are stored in result files
    param_names: tuple[str, ...] = ("W", "pi", "sigma")

    def __init__(
        self,
        H: int,
        Hprime: int | None = None,
        gamma: int | None = None,
        *,
        steps: int = 100,
        anneal: str = "2:1@0.6",
        Ncut_factor: float = 0.0,
        W_noise: float = 0.0,
        init: str = "noise",
        chunk_size: int = 256,
        tol: float = 1e-4,
        max_memory: float | str | None = "8GiB",
        warm_start: bool = False,
        random_state: int | np.random.Generator | None = None,
    ):
        self.H, self.Hprime, self.gamma = H, Hprime, gamma
        self.steps, self.anneal, self.Ncut_factor, self.W_noise, self.tol = steps, anneal, Ncut_factor, W_noise, tol
        self.chunk_size, self.max_memory, self.init = chunk_size, max_memory, init
        self.warm_start, self.random_state = warm_start, random_state

    @classmethod
    def from_params(cls, **kwargs: Any) -> SparseCodingModel:
        """A model with known parameters, ready for ``sample``, ``log_prob``, ``transform`` or a warm-started fit.

        Keywords named in :attr:`param_names` are parameters (validated by
        :meth:`check_params`); the others are hyperparameters. ``H`` defaults
        to the number of columns of ``W``.

        Example:
            >>> import numpy as np
            >>> from sparsecoding import BSC
            >>> m = BSC.from_params(W=np.eye(3), pi=0.2, sigma=0.5)
            >>> m.components_.shape, m.pi_, m.H
            ((3, 3), 0.2, 3)
        """
        params = {k: kwargs.pop(k) for k in list(kwargs) if k in cls.param_names}
        unknown = set(kwargs) - set(cls._param_names())
        if unknown:
            raise UsageError(
                f"{cls.__name__}.from_params got unknown keyword(s) {sorted(unknown)}; parameters are "
                f"{list(cls.param_names)}, hyperparameters {cls._param_names()}"
            )
        if "H" not in kwargs and params.get("W") is not None and np.ndim(params["W"]) == 2:
            kwargs["H"] = int(np.shape(params["W"])[1])
        model = cls(**kwargs)
        model.check_hyper()
        model.params_ = model.check_params(params)
        model.n_features_in_ = int(model.params_["W"].shape[0])
        return model

    # -- fitted attributes ----------------------------------------------------
    def _param(self, name: str) -> np.ndarray:
        check_is_fitted(self, "params_")
        return self.params_[name]

    @property
    def components_(self) -> np.ndarray:
        """The dictionary as rows, (H, D), like scikit-learn's dictionary learners: ``W.T``."""
        return self._param("W").T

    @property
    def pi_(self) -> float:
        """The probability that a cause is active (non-zero)."""
        return float(self._param("pi"))

    @property
    def sigma_(self) -> float:
        """The standard deviation of the Gaussian observation noise."""
        return float(self._param("sigma"))

    @property
    def event_shape(self) -> torch.Size:  # type: ignore[override]
        params = getattr(self, "params_", None)
        return torch.Size(() if params is None else (params["W"].shape[0],))

    @property
    def support(self) -> str:
        return "real"

    # -- equations supplied by subclasses -------------------------------------
    def nonzero_values(self) -> np.ndarray:
        """The non-zero values a cause can take."""
        return np.array([1.0])

    def log_prior_values(self, params: dict) -> tuple[float, np.ndarray]:
        """``(log P(s_h = 0), log P(s_h = v) for each non-zero v)``; binary default with ``pi``."""
        pi = float(params["pi"])
        return float(np.log1p(-pi)), np.array([np.log(pi)])

    def log_lik(self, params: dict, Y: np.ndarray, obs: np.ndarray | None, idx, vals: np.ndarray) -> np.ndarray:
        """``log p(y_n | s)`` for every state of a block: (n, M) or (1, M)."""
        raise NotImplementedError

    def selection_score(self, params: dict, Y: np.ndarray, obs, single_logjoint: np.ndarray) -> np.ndarray:
        """Score per cause for candidate selection: the best singleton log-joint (n, H)."""
        n = single_logjoint.shape[0]
        V = len(self.nonzero_values())
        return single_logjoint[:, 1:].reshape(n, self.H, V).max(axis=2)

    def new_stats(self, params: dict, D: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def accumulate(self, params: dict, Y: np.ndarray, blocks, post, stats: dict, T: float = 1.0) -> None:
        """Add the chunk's expected sufficient statistics (posterior ``post`` per block) to ``stats``."""
        raise NotImplementedError

    def m_step(self, params: dict, stats: dict, common: dict, N_use: int, T: float) -> dict:
        raise NotImplementedError

    def init_params(self, D: int, mean: np.ndarray, var: np.ndarray, rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def init_from_data(self, params: dict, samples: np.ndarray) -> dict:
        """``params`` from :meth:`init_params` with ``W``'s columns replaced by data points ``samples`` (H, D)."""
        return {**params, "W": np.array(samples.T, dtype=np.float64)}

    def stat_size(self, H: int, D: int) -> int:
        """Number of floats in :meth:`new_stats` (for the memory estimate)."""
        raise NotImplementedError

    def param_size(self, H: int, D: int) -> int:
        """Number of floats in the parameters (for the memory estimate of the history)."""
        return D * H + 2

    def work_per_point(self, H: int, Hprime: int, D: int, n_single: int, n_multi: int) -> float:
        """Floats the E-step and the statistics hold per data point for its state blocks (memory estimate).

        ``n_single`` states on all ``H`` causes (a block shared by all points) and ``n_multi`` on
        ``Hprime`` candidate slots (gathered per point); by default the linear models' needs: one
        float per state, the candidate block's slot values and a row of ``H`` moments.
        """
        return n_single + n_multi * Hprime + 2 * H

    def sample_states(self, params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` latent state vectors from the prior: (n, H)."""
        log_p0, log_pv = self.log_prior_values(params)
        probs = np.exp(np.concatenate([[log_p0], np.atleast_1d(log_pv)]))
        values = np.concatenate([[0.0], self.nonzero_values()])
        H = params["W"].shape[1]
        return values[rng.choice(len(values), size=(n, H), p=probs / probs.sum())]

    def generate(self, params: dict, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``(states, data)`` from the generative model."""
        raise NotImplementedError

    def perturb(self, params: dict, scale: float, rng: np.random.Generator) -> dict:
        """Add Gaussian noise of std ``scale`` to W (annealed parameter noise)."""
        out = dict(params)
        out["W"] = params["W"] + scale * rng.standard_normal(params["W"].shape)
        return out

    # -- shared M-step pieces ---------------------------------------------------
    def update_pi(self, params: dict, common: dict, N_use: int) -> float:
        """``pi = E * <|s|> / (N_use H)`` with the truncation correction ``E``."""
        H = params["W"].shape[1]
        E = truncation_factors(float(params["pi"]), H, self._gamma)[2]
        pi = E * float(common["n_active"]) / (N_use * H)
        return float(np.clip(pi, 1e-6, 1 - 1e-6))

    # -- validation -----------------------------------------------------------------
    @property
    def _Hprime(self) -> int:
        return int(self.Hprime) if self.Hprime is not None else min(int(self.H), 8)

    @property
    def _gamma(self) -> int:
        return int(self.gamma) if self.gamma is not None else min(self._Hprime, 5)

    def check_hyper(self) -> None:
        """Validate the hyperparameters; raise :class:`~probmod.errors.UsageError` saying what to change."""
        from ..em import parse_anneal

        require(_is_int(self.H) and self.H >= 1, f"H must be a positive integer, got {self.H!r}")
        for name in ("Hprime", "gamma"):
            v = getattr(self, name)
            require(v is None or (_is_int(v) and v >= 1), f"{name} must be a positive integer or None, got {v!r}")
        require(self._Hprime <= self.H, f"Hprime={self._Hprime} exceeds H={self.H}; choose Hprime <= H")
        require(
            self._gamma <= self._Hprime, f"gamma={self._gamma} exceeds Hprime={self._Hprime}; choose gamma <= Hprime"
        )
        require(self.init in INIT_METHODS, f"init must be one of {', '.join(INIT_METHODS)}, got {self.init!r}")
        require(_is_int(self.steps) and self.steps >= 1, f"steps must be a positive integer, got {self.steps!r}")
        require(
            _is_int(self.chunk_size) and self.chunk_size >= 1,
            f"chunk_size must be a positive integer, got {self.chunk_size!r}",
        )
        for name, lo, hi in (("W_noise", 0.0, np.inf), ("Ncut_factor", 0.0, 1.0), ("tol", 0.0, np.inf)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and lo <= v <= hi
            require(bool(ok), f"{name} must be a number in [{lo:g}, {hi:g}], got {v!r}")
        require(
            isinstance(self.warm_start, (bool, np.bool_)), f"warm_start must be True or False, got {self.warm_start!r}"
        )
        rs = self.random_state
        require(
            rs is None or _is_int(rs) or isinstance(rs, np.random.Generator),
            f"random_state must be None, an int or a numpy Generator, got {type(rs).__name__}",
        )
        parse_size(self.max_memory)
        try:
            parse_anneal(self.anneal)
        except ValueError as err:
            raise UsageError(str(err)) from None

    def check_params(
        self, params: dict, D: int | None = None, *, error: type[ProbmodError] = UsageError, source: str = "parameters"
    ) -> dict[str, np.ndarray]:
        """Validate parameter values (set by hand or loaded from a checkpoint); return them as C-ordered float64.

        Checks that every parameter in :attr:`param_names` is present, numeric and
        finite, that ``W`` is (D, H), ``0 < pi <= 1`` and ``sigma > 0``, plus the
        model's own constraints (MCA: ``W >= 0``; DSC: ``prior`` a distribution;
        GSC: ``Psi`` symmetric positive definite). Raises ``error`` (e.g.
        :class:`~probmod.errors.FormatError` for a checkpoint) with ``source`` in the message.

        Example:
            >>> import numpy as np
            >>> from sparsecoding import BSC
            >>> BSC(H=2).check_params({"W": np.ones((3, 2)), "pi": 2.0, "sigma": 1.0})
            Traceback (most recent call last):
            ...
            probmod.errors.UsageError: parameters: pi must lie in (0, 1], got 2.0
        """
        missing = [k for k in self.param_names if k not in params]
        require(
            not missing, f"{source}: missing {missing}; {type(self).__name__} needs {list(self.param_names)}", error
        )
        out: dict[str, np.ndarray] = {}
        for k in self.param_names:
            try:
                v = np.array(params[k], dtype=np.float64, order="C")
            except (TypeError, ValueError):
                raise error(f"{source}: {k} is not numeric") from None
            require(bool(np.all(np.isfinite(v))), f"{source}: {k} contains NaN or infinity", error)
            out[k] = v
        H, W = int(self.H), out["W"]
        require(
            W.ndim == 2 and W.shape[1] == H and (D is None or W.shape[0] == D),
            f"{source}: W must have shape ({'D' if D is None else D}, {H}), got {W.shape}",
            error,
        )
        pi, sigma = out["pi"], out["sigma"]
        require(bool(pi.shape == () and 0.0 < pi <= 1.0), f"{source}: pi must lie in (0, 1], got {pi.tolist()}", error)
        require(
            bool(sigma.shape == () and sigma > 0.0), f"{source}: sigma must be positive, got {sigma.tolist()}", error
        )
        self._check_own_params(out, error, source)
        return out

    def _check_own_params(self, params: dict, error: type[ProbmodError], source: str) -> None:
        """Model-specific parameter constraints (subclasses)."""

    def check_memory(self, N: int, D: int, ranks: int = 1, fitting: bool = True) -> float:
        """Estimated bytes per rank for ``N`` points of ``D`` dimensions; raise LimitError over ``max_memory``.

        Called before anything large is allocated: ``H=18000`` on 5x5 images
        would need a 2.6 GB singleton state table, a 2.6 GB ``WᵀW`` and chunk
        tables of several gigabytes. See :func:`~sparsecoding.models.checks.memory_estimate`.

        Example:
            >>> from sparsecoding import BSC
            >>> BSC(H=18000).check_memory(1000, 25)
            Traceback (most recent call last):
            ...
            probmod.errors.LimitError: BSC(H=18000, ...
        """
        self.check_hyper()
        limit = parse_size(self.max_memory)
        parts = memory_estimate(self, N, D, ranks, fitting)
        total = sum(parts.values())
        if total > limit:
            raise LimitError(
                f"{type(self).__name__}(H={self.H}, Hprime={self._Hprime}, gamma={self._gamma}, "
                f"chunk_size={self.chunk_size}) on {N} points of {D} dimensions would need about "
                f"{format_size(total)} per rank (state tables and W {format_size(parts['tables'])}, chunk buffers "
                f"{format_size(parts['chunk'])}, reduction and history {format_size(parts['reduction'])}), over "
                f"max_memory={format_size(limit)}; lower H, Hprime or gamma, or raise max_memory (command line: "
                f"--max-memory); a larger chunk_size shrinks the reduction table, a smaller one the chunk buffers"
            )
        return total

    def engine(self) -> ExpectationTruncation:
        """The Expectation Truncation engine for this model's ``H, Hprime, gamma`` (built once per setting)."""
        self.check_hyper()
        key = (int(self.H), self._Hprime, self._gamma, self.nonzero_values().tobytes())
        cached = self.__dict__.get("_engine")
        if cached is None or cached[0] != key:
            cached = (key, ExpectationTruncation(self, *key[:3]))
            self.__dict__["_engine"] = cached
        return cached[1]

    def _check_data(self, Y: Any, name: str = "X", reset: bool = False) -> np.ndarray:
        if hasattr(Y, "toarray") or type(Y).__module__.startswith("scipy.sparse"):
            raise TypeError(f"{name} is a sparse matrix; {type(self).__name__} needs dense data: pass {name}.toarray()")
        if isinstance(Y, torch.Tensor):
            Y = Y.detach().cpu().numpy()
        Y = np.asarray(Y)
        if np.iscomplexobj(Y):
            raise UsageError(f"Complex data not supported: {name} has complex values")
        try:
            Y = np.asarray(Y, dtype=np.float64)
        except TypeError as err:
            raise TypeError(f"{name} must be numeric: {err}") from None
        except ValueError as err:
            raise UsageError(f"{name} must be numeric: {err}") from None
        if Y.ndim != 2:
            raise UsageError(
                f"{name} must be a 2-D array (n_samples, n_features), got shape {Y.shape}; "
                f"Reshape your data, e.g. {name}.reshape(1, -1) for one sample"
            )
        for axis, what in ((0, "sample(s)"), (1, "feature(s)")):
            if Y.shape[axis] < 1:
                raise UsageError(f"Found array with 0 {what} (shape={Y.shape}) while a minimum of 1 is required.")
        if not np.all(np.isfinite(Y)):
            raise UsageError(f"{name} contains NaN or infinity; remove or impute those rows")
        expected = None if reset else getattr(self, "n_features_in_", None)
        if expected is not None and Y.shape[1] != expected:
            raise UsageError(
                f"{name} has {Y.shape[1]} features, but {type(self).__name__} is expecting {expected} features as input"
            )
        return Y

    # -- estimator ----------------------------------------------------------------
    def _seed(self, comm) -> int:
        """The integer seed of this fit: ``random_state`` itself for an int, else drawn (the same on every rank)."""
        if _is_int(self.random_state):
            return int(cast(int, self.random_state))
        seed = np.array([check_random_state(self.random_state).integers(2**62)], dtype=np.int64)
        return int((comm.bcast(seed) if comm.size > 1 else seed)[0])

    def fit(self, X: Any, y: None = None, *, comm=None, progress: bool = False) -> SparseCodingModel:
        """Learn the parameters from data ``X`` (N, D) with ``steps`` steps of truncated EM; returns ``self``.

        The start is drawn from ``random_state`` (or, with ``warm_start``, is the
        current ``params_``). ``comm`` may be an mpi4py communicator: every rank
        passes the same full ``X`` and works on its own chunks (the command line
        instead reads one slice per rank); by default the fit runs serially.
        ``y`` is ignored (scikit-learn's signature).

        Raises:
            UsageError: bad hyperparameters or data.
            LimitError: the estimated memory exceeds ``max_memory``.
            NumericalError: a step produced NaN or infinite parameters (e.g. data of
                enormous magnitude); the message names the step.
        """
        from ..em import run_em
        from ..parallel import as_comm, local_chunks_from_array

        self.check_hyper()
        Y = self._check_data(X, reset=True)
        comm = as_comm(comm)
        N, D = Y.shape
        start, fitted = None, getattr(self, "params_", None)
        if self.warm_start and fitted is not None:
            start = self.check_params(fitted, D, source="warm start (params_)")
        chunks = local_chunks_from_array(Y, int(self.chunk_size), comm.rank, comm.size)
        result = run_em(
            self,
            chunks,
            N=N,
            D=D,
            steps=int(self.steps),
            anneal=self.anneal,
            Ncut_factor=float(self.Ncut_factor),
            seed=self._seed(comm),
            W_noise=float(self.W_noise),
            comm=comm,
            params=start,
            progress=progress,
        )
        self.params_ = result.params
        self.history_ = result.history
        self.n_features_in_ = D
        self.n_iter_ = int(self.steps)
        self.converged_ = converged(result.history, float(self.tol))
        if not self.converged_:
            warnings.warn(
                f"{type(self).__name__} did not converge in {self.steps} steps: the last step changed the "
                f"truncated log-likelihood by more than tol={self.tol:g} (or ran at T > 1); "
                f"increase steps",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_transform(self, X: Any, y: None = None, **fit_params: Any) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``: the codes of the training data, (N, H)."""
        return self.fit(X, **fit_params).transform(X)

    def _chunks(self, Y: np.ndarray):
        """Row slices of ``chunk_size`` (chunks, not data points, bound the E-step's memory)."""
        step = int(self.chunk_size)
        return (slice(start, start + step) for start in range(0, Y.shape[0], step))

    def _ready(self, Y: np.ndarray) -> ExpectationTruncation:
        self.check_memory(Y.shape[0], Y.shape[1], fitting=False)
        return self.engine()

    def _log_marginal(self, Y: np.ndarray, obs: np.ndarray | None = None) -> np.ndarray:
        et = self._ready(Y)
        out = np.empty(Y.shape[0])
        for sl in self._chunks(Y):
            out[sl] = et.log_marginal(et.blocks(self.params_, Y[sl], None if obs is None else obs[sl]))
        return out

    def score(self, X: Any, y: None = None) -> float:
        """Mean truncated log-likelihood per data point, ``mean_n log sum_{s in S_n} p(y_n, s)``.

        A lower bound of the mean exact log-likelihood (equal to it when
        ``Hprime = gamma = H``): the Expectation Truncation approximation that
        EM maximises. Higher is better, as scikit-learn's ``score`` expects.
        """
        check_is_fitted(self, "params_")
        return float(np.mean(self._log_marginal(self._check_data(X))))

    def transform(self, X: Any, kind: str = "mean") -> np.ndarray:
        """Codes for ``X``: posterior means of the latents (``kind="mean"``) or MAP states (``"map"``).

        Both use the truncated posterior at ``T = 1``. Returns an (n, H) array.
        """
        check_is_fitted(self, "params_")
        Y = self._check_data(X)
        if kind not in ("mean", "map"):
            raise UsageError(f"kind must be 'mean' or 'map', got {kind!r}")
        et = self._ready(Y)
        out = np.empty((Y.shape[0], int(self.H)))
        for sl in self._chunks(Y):
            blocks = et.blocks(self.params_, Y[sl])
            out[sl] = self._code(Y[sl], blocks, et.posterior(blocks, 1.0), kind)
        return out

    def _code(self, Y, blocks, post, kind: str) -> np.ndarray:
        from ..truncation import scatter_vec

        H = int(self.H)
        if kind == "mean":
            return cast(np.ndarray, sum(scatter_vec(p @ b.vals, b.idx, H) for b, p in zip(blocks, post)))
        # MAP: the best state over both blocks
        best = [np.argmax(p, axis=1) for p in post]
        bestp = np.stack([p[np.arange(len(p)), i] for p, i in zip(post, best)], axis=1)
        which = np.argmax(bestp, axis=1)
        out = np.zeros((Y.shape[0], H))
        for j, (b, i) in enumerate(zip(blocks, best)):
            rows = np.nonzero(which == j)[0]
            out[rows] = scatter_vec(b.vals[i[rows]], None if b.idx is None else b.idx[rows], H)
        return out

    def __sklearn_tags__(self):
        """scikit-learn's tags: an unsupervised transformer on dense 2-D float data (imported only when asked)."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float64"]),
            input_tags=InputTags(two_d_array=True, allow_nan=False, sparse=False),
        )

    # -- Distribution interface ---------------------------------------------------
    def _event_rows(self, x: Any, mask: Any) -> tuple[np.ndarray, np.ndarray | None, torch.Size, torch.dtype]:
        """``x`` as float64 rows (missing entries zeroed), the observed-entry weights, the batch shape and dtype."""
        check_is_fitted(self, "params_")
        x = torch.as_tensor(x)
        mask = check_mask(x, mask)
        D = self.params_["W"].shape[0]
        if x.shape[-1:] != (D,):
            raise UsageError(f"x must end in the event shape ({D},), got {tuple(x.shape)}")
        Y = x.detach().cpu().reshape(-1, D).numpy().astype(np.float64)
        M = None if mask is None else mask.detach().cpu().reshape(-1, D).numpy()
        seen = np.isfinite(Y) if M is None else (np.isfinite(Y) | M)
        if not seen.all():
            raise UsageError(
                "x has NaN or infinite entries that the mask does not mark missing; "
                "pass mask=torch.isnan(x) to marginalise them"
            )
        obs = None if M is None else (~M).astype(np.float64)
        Y = Y if M is None else np.where(M, 0.0, Y)
        return Y, obs, x.shape[:-1], (x.dtype if x.is_floating_point() else torch.float64)

    def n_states(self) -> int:
        """Number of latent states, ``(1 + number of non-zero values) ** H``."""
        return (1 + len(self.nonzero_values())) ** int(self.H)

    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log density ``log p(x) = log sum_s p(x, s)`` per sample, over every latent state.

        Exact where the state space is small enough to enumerate: at most
        :data:`EXACT_STATES_LIMIT` states (BSC, MCA, MMCA and GSC up to H = 12,
        TSC up to H = 7). Missing entries (``mask`` True) are marginalised
        exactly, since the Gaussian noise factorises over dimensions given the state.

        Raises:
            ExactIntractableError: for larger state spaces (a UsageError and a
                NotImplementedError); use :meth:`log_prob_lower_bound` there.

        Example:
            >>> import numpy as np, torch
            >>> from sparsecoding import BSC
            >>> m = BSC.from_params(W=np.eye(2), pi=0.5, sigma=1.0)
            >>> float(m.log_prob(torch.zeros(1, 2))[0]) < float(m.log_prob_lower_bound(torch.zeros(1, 2))[0]) + 1e-12
            True
        """
        check_is_fitted(self, "params_")
        total = self.n_states()
        if total > EXACT_STATES_LIMIT:
            raise ExactIntractableError(
                f"{type(self).__name__} with H={self.H} has {total} latent states, more than the "
                f"{EXACT_STATES_LIMIT} that log_prob enumerates exactly; use log_prob_lower_bound(x) for the "
                f"truncated lower bound"
            )
        Y, obs, batch, dtype = self._event_rows(x, mask)
        out = np.empty(Y.shape[0])
        for sl in self._chunks(Y):
            out[sl] = exact_log_marginal(self, self.params_, Y[sl], None if obs is None else obs[sl])
        return torch.as_tensor(out, dtype=dtype).reshape(batch)

    def log_prob_lower_bound(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Truncated log-likelihood ``log sum_{s in S_n} p(x_n, s)`` per sample: a lower bound of :meth:`log_prob`.

        The Expectation Truncation approximation (equal to the exact value when
        ``Hprime = gamma = H``); it scales to any H. Missing entries (``mask``
        True) are marginalised exactly given each state; candidate selection
        then uses the observed dimensions only.
        """
        Y, obs, batch, dtype = self._event_rows(x, mask)
        return torch.as_tensor(self._log_marginal(Y, obs), dtype=dtype).reshape(batch)

    def sample(self, sample_shape: int | Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw data from the generative model: shape ``sample_shape + (D,)``, float64.

        With ``generator`` the draw comes from it alone (torch's global
        generator is left untouched), so the same seed gives the same samples;
        without one, torch's global generator seeds the draw.

        Example:
            >>> import numpy as np, torch
            >>> from sparsecoding import BSC
            >>> m = BSC.from_params(W=np.eye(2), pi=0.5, sigma=1.0)
            >>> a = m.sample((3,), generator=torch.Generator().manual_seed(0))
            >>> torch.equal(a, m.sample((3,), generator=torch.Generator().manual_seed(0))), tuple(a.shape)
            (True, (3, 2))
        """
        check_is_fitted(self, "params_")
        shape = _sample_shape(sample_shape)
        n = int(np.prod(shape)) if shape else 1
        seed = int(torch.randint(0, 2**62, (), generator=generator).item())
        _, Y = self.generate(self.params_, n, np.random.default_rng(seed))
        return torch.as_tensor(Y).reshape(*shape, Y.shape[1])


def with_base_hyperparameters(init: Callable[..., None]) -> Callable[..., None]:
    """Complete the signature of a subclass ``__init__`` that passes ``**common`` on to the base class.

    The subclass names only its own hyperparameters; the shared keyword-only
    ones (``steps`` ... ``random_state``) join its signature here, because
    ``get_params`` (hence ``sklearn.base.clone``), ``repr``, ``help`` and
    :func:`~sparsecoding.models.hyperparameter_defaults` read them from it.

    Example:
        >>> class Toy(SparseCodingModel):
        ...     @with_base_hyperparameters
        ...     def __init__(self, H, *, scale=1.0, **common):
        ...         super().__init__(H, **common)
        ...         self.scale = scale
        >>> list(inspect.signature(Toy).parameters)[:4]
        ['H', 'scale', 'steps', 'anneal']
        >>> Toy(3, scale=2.0, steps=5).get_params()["steps"]
        5
    """
    sig = inspect.signature(init)
    own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    base = inspect.signature(SparseCodingModel.__init__).parameters.values()
    shared = [p for p in base if p.kind is p.KEYWORD_ONLY and p.name not in sig.parameters]
    init.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
    return init
