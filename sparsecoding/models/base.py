"""The common face of the sparse coding models: a Distribution and an sklearn-like estimator.

A model subclass supplies only its equations:

* ``nonzero_values`` and ``log_prior_values``: the state space and the prior;
* ``log_lik(params, Y, obs, idx, vals)``: ``log p(y | s)`` for a block of states;
* ``new_stats`` / ``accumulate`` / ``m_step``: sufficient statistics and updates;
* ``init_params`` and ``generate``.

Candidate selection, state enumeration, normalisation, annealing, data
truncation, chunked reduction across MPI ranks and checkpoints live in
:mod:`sparsecoding.truncation` and :mod:`sparsecoding.em`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from probcirc.distribution import Distribution, check_mask

from ..truncation import ExpectationTruncation, truncation_factors

__all__ = ["SparseCodingModel"]


def _sample_shape(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(sample_shape, int):
        return (sample_shape,)
    return tuple(int(s) for s in sample_shape)


class SparseCodingModel(Distribution):
    """Base class of BSC, TSC, DSC, MCA, MMCA and GSC.

    Args:
        H: number of latent causes (dictionary elements).
        Hprime: candidate causes kept per data point by Expectation Truncation
            (default ``min(H, 8)``).
        gamma: most causes active at once in a truncated state (default ``min(Hprime, 5)``).
        steps: EM iterations run by :meth:`fit`.
        anneal: temperature schedule, e.g. ``"5:1@0.8"`` (T from 5 to 1 over the
            first 80% of the steps) or ``"1"`` (no annealing).
        Ncut_factor: data truncation in [0, 1]: keep the
            ``N (1 - (1 - A) Ncut_factor)`` points best explained by their
            truncated state sets (``A = P(|s| <= gamma)`` under the prior).
        W_noise: std of noise added to W after each M-step while annealing,
            decreasing linearly to 0 where annealing ends (helps escape local optima).
        chunk_size: data points per chunk; statistics are summed per chunk in a
            fixed order, so results do not depend on the number of MPI ranks.
        seed: seed of the parameter initialisation.
        **params: known parameters (e.g. ``W``, ``pi``, ``sigma``) to use the
            model as a fixed generative model or as the EM starting point.

    The fitted parameters are in :attr:`params` (numpy arrays, float64) and
    are also reachable as attributes (``model.W``, ``model.pi``, ...).
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
        steps: int = 50,
        anneal: str = "1",
        Ncut_factor: float = 0.0,
        W_noise: float = 0.0,
        chunk_size: int = 256,
        seed: int = 0,
        **params: Any,
    ):
        self.H = H
        self.Hprime = Hprime
        self.gamma = gamma
        self.steps = steps
        self.anneal = anneal
        self.Ncut_factor = Ncut_factor
        self.W_noise = W_noise
        self.chunk_size = chunk_size
        self.seed = seed
        unknown = set(params) - set(self.param_names)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown parameter(s) {sorted(unknown)}; "
                f"its parameters are {list(self.param_names)}"
            )
        self.params: dict[str, np.ndarray] = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
        self.history_: dict[str, np.ndarray] | None = None

    # -- parameter access ---------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in type(self).param_names and "params" in self.__dict__:
            if name not in self.__dict__["params"]:
                raise AttributeError(f"{type(self).__name__}.{name} is not set; call fit() or pass {name}=...")
            return self.__dict__["params"][name]
        raise AttributeError(name)

    @property
    def event_shape(self) -> torch.Size:  # type: ignore[override]
        W = self.params.get("W")
        return torch.Size(() if W is None else (W.shape[0],))

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

    # -- estimator ----------------------------------------------------------------
    @property
    def _Hprime(self) -> int:
        return int(self.Hprime) if self.Hprime is not None else min(int(self.H), 8)

    @property
    def _gamma(self) -> int:
        return int(self.gamma) if self.gamma is not None else min(self._Hprime, 5)

    def check_hyper(self) -> None:
        """Validate the hyperparameters; raise ValueError saying what to change."""
        if not isinstance(self.H, (int, np.integer)) or self.H < 1:
            raise ValueError(f"H must be a positive integer, got {self.H!r}")
        if not isinstance(self._Hprime, (int, np.integer)) or self._Hprime < 1:
            raise ValueError(f"Hprime must be a positive integer, got {self.Hprime!r}")
        if self._Hprime > self.H:
            raise ValueError(f"Hprime={self._Hprime} exceeds H={self.H}; choose Hprime <= H")
        if self._gamma < 1:
            raise ValueError(f"gamma must be at least 1, got {self.gamma!r}")
        if self._gamma > self._Hprime:
            raise ValueError(f"gamma={self._gamma} exceeds Hprime={self._Hprime}; choose gamma <= Hprime")
        if not isinstance(self.steps, (int, np.integer)) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if float(self.W_noise) < 0:
            raise ValueError(f"W_noise must be >= 0, got {self.W_noise!r}")
        if not 0.0 <= float(self.Ncut_factor) <= 1.0:
            raise ValueError(f"Ncut_factor must lie in [0, 1], got {self.Ncut_factor!r}")
        if not isinstance(self.chunk_size, (int, np.integer)) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {self.chunk_size!r}")
        from ..em import parse_anneal

        parse_anneal(self.anneal)

    def engine(self) -> ExpectationTruncation:
        """The Expectation Truncation engine for this model's ``H, Hprime, gamma``."""
        self.check_hyper()
        return ExpectationTruncation(self, int(self.H), self._Hprime, self._gamma)

    def _check_data(self, Y: Any, name: str = "Y") -> np.ndarray:
        if isinstance(Y, torch.Tensor):
            Y = Y.detach().cpu().numpy()
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {Y.shape}; reshape it")
        if Y.shape[0] < 1:
            raise ValueError(f"{name} has no rows")
        if not np.all(np.isfinite(Y)):
            raise ValueError(f"{name} contains NaN or inf; remove or impute those rows")
        W = self.params.get("W")
        if W is not None and W.shape[0] != Y.shape[1]:
            raise ValueError(f"{name} has {Y.shape[1]} features but the model's W has {W.shape[0]} rows")
        return Y

    def _check_fitted(self) -> None:
        missing = [k for k in self.param_names if k not in self.params]
        if missing:
            raise RuntimeError(f"{type(self).__name__} has no {missing}; call fit() or pass them to the constructor")

    def fit(self, Y: Any, comm=None, progress: bool = False) -> "SparseCodingModel":
        """Learn the parameters from data ``Y`` (N, D) with truncated EM.

        When all parameters are already set (constructor keywords or an earlier
        fit) they are the starting point; otherwise they are initialised from
        ``seed``. ``comm`` may be an mpi4py communicator: every rank passes the
        same full ``Y`` and works on its own chunks (the command line instead
        reads one slice per rank); by default the fit runs serially.
        """
        from ..em import run_em
        from ..parallel import as_comm, local_chunks_from_array

        self.check_hyper()
        Y = self._check_data(Y)
        comm = as_comm(comm)
        N, D = Y.shape
        chunks = local_chunks_from_array(Y, self.chunk_size, comm.rank, comm.size)
        params = dict(self.params) if all(k in self.params for k in self.param_names) else None
        result = run_em(
            self,
            chunks,
            N=N,
            D=D,
            steps=int(self.steps),
            anneal=self.anneal,
            Ncut_factor=float(self.Ncut_factor),
            seed=int(self.seed),
            W_noise=float(self.W_noise),
            comm=comm,
            params=params,
            progress=progress,
        )
        self.params = result.params
        self.history_ = result.history
        return self

    def _blocks(self, Y: np.ndarray, mask=None):
        et = self.engine()
        obs = None if mask is None else (~np.asarray(mask, dtype=bool)).astype(np.float64)
        Yc = Y if obs is None else np.where(obs > 0, Y, 0.0)
        return et, et.blocks(self.params, Yc, obs), Yc

    def log_likelihood(self, Y: Any) -> float:
        """Mean truncated log-likelihood per data point, ``mean_n log sum_{s in S_n} p(y_n, s)``.

        This is the Expectation-Truncation approximation (a lower bound of the
        exact log-likelihood; equal to it when ``Hprime = gamma = H``).
        """
        self._check_fitted()
        Y = self._check_data(Y)
        return float(np.mean(self._log_marginal(Y)))

    def _log_marginal(self, Y: np.ndarray, mask=None) -> np.ndarray:
        out = np.empty(Y.shape[0])
        step = int(self.chunk_size)
        for start in range(0, Y.shape[0], step):  # chunks, not data points
            sl = slice(start, start + step)
            et, blocks, _ = self._blocks(Y[sl], None if mask is None else mask[sl])
            out[sl] = et.log_marginal(blocks)
        return out

    def transform(self, Y: Any, kind: str = "mean") -> np.ndarray:
        """Codes for ``Y``: posterior means of the latents (``kind="mean"``) or MAP states (``"map"``).

        Both use the truncated posterior at ``T = 1``. Returns an (n, H) array.
        """
        self._check_fitted()
        Y = self._check_data(Y)
        if kind not in ("mean", "map"):
            raise ValueError(f"kind must be 'mean' or 'map', got {kind!r}")
        out = np.empty((Y.shape[0], int(self.H)))
        step = int(self.chunk_size)
        for start in range(0, Y.shape[0], step):
            sl = slice(start, start + step)
            et, blocks, Yc = self._blocks(Y[sl])
            post = et.posterior(blocks, 1.0)
            out[sl] = self._code(Yc, blocks, post, kind)
        return out

    def _code(self, Y, blocks, post, kind: str) -> np.ndarray:
        from ..truncation import scatter_vec

        H = int(self.H)
        if kind == "mean":
            return sum(scatter_vec(p @ b.vals, b.idx, H) for b, p in zip(blocks, post))
        # MAP: the best state over both blocks
        best = [np.argmax(p, axis=1) for p in post]
        bestp = np.stack([p[np.arange(len(p)), i] for p, i in zip(post, best)], axis=1)
        which = np.argmax(bestp, axis=1)
        out = np.zeros((Y.shape[0], H))
        for j, (b, i) in enumerate(zip(blocks, best)):
            rows = np.nonzero(which == j)[0]
            out[rows] = scatter_vec(b.vals[i[rows]], None if b.idx is None else b.idx[rows], H)
        return out

    # -- Distribution interface ---------------------------------------------------
    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Truncated log-likelihood ``log sum_{s in S_n} p(x_n, s)`` per sample (a lower bound).

        This is the Expectation-Truncation approximation, not the exact log
        density (they coincide when ``Hprime = gamma = H``). Missing entries
        (``mask`` True) are marginalised exactly given each state, since the
        Gaussian noise factorises over dimensions; candidate selection then uses
        the observed dimensions only.
        """
        self._check_fitted()
        x = torch.as_tensor(x)
        mask = check_mask(x, mask)
        D = self.params["W"].shape[0]
        if x.shape[-1:] != (D,):
            raise ValueError(f"x must end in the event shape ({D},), got {tuple(x.shape)}")
        batch = x.shape[:-1]
        Y = x.detach().cpu().reshape(-1, D).numpy().astype(np.float64)
        M = None if mask is None else mask.detach().cpu().reshape(-1, D).numpy()
        if M is not None:
            Y = np.where(M, 0.0, Y)
        out = self._log_marginal(Y, M)
        dtype = x.dtype if x.is_floating_point() else torch.float64
        return torch.as_tensor(out, dtype=dtype).reshape(batch)

    def sample(self, sample_shape: int | Sequence[int] = ()) -> torch.Tensor:
        """Draw data from the generative model (torch's global RNG seeds the draw)."""
        self._check_fitted()
        shape = _sample_shape(sample_shape)
        n = int(np.prod(shape)) if shape else 1
        seed = int(torch.randint(0, 2**62, ()).item())
        _, Y = self.generate(self.params, n, np.random.default_rng(seed))
        return torch.as_tensor(Y).reshape(*shape, Y.shape[1])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(H={self.H}, Hprime={self.Hprime}, gamma={self.gamma}, "
            f"steps={self.steps}, anneal={self.anneal!r})"
        )
