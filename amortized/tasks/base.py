"""What every task family provides: priors, a simulator and a reference posterior."""

from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass
from typing import Any

import torch

from probcirc import Distribution, GaussianMixture
from probmod.errors import LimitError, UsageError

from .. import _gmm
from .._init_args import init_args

#: the most observations per problem a task accepts (memory grows with it in every batch)
MAX_OBS = 10_000
#: the most prior components a task accepts
MAX_COMPONENTS = 4096


def check_limit(name: str, value: int, limit: int) -> int:
    """``value`` as an int if it is at most ``limit``; a task setting that would allocate without bound otherwise.

    Raises:
        LimitError: ``value`` exceeds ``limit``.
    """
    value = int(value)
    if value > limit:
        raise LimitError(f"{name}={value} exceeds the limit of {limit}")
    return value


@dataclass
class Problems:
    """A batch of B inference problems.

    Attributes:
        prior: GaussianMixture with ``batch_shape == (B,)``.
        observations: ``(B, N, obs_dim)``, padded to the longest data set.
        obs_mask: ``(B, N)`` bool, ``True`` = padding (no observation there).
        latent: ``(B, D)``, the value the observations were simulated from.
    """

    prior: GaussianMixture
    observations: torch.Tensor
    obs_mask: torch.Tensor
    latent: torch.Tensor

    def __len__(self) -> int:
        return self.latent.shape[0]

    def __getitem__(self, idx) -> Problems:
        if isinstance(idx, int):
            idx = slice(idx, idx + 1)
        return Problems(_gmm.index(self.prior, idx), self.observations[idx], self.obs_mask[idx], self.latent[idx])

    def to(self, dtype: torch.dtype) -> Problems:
        return Problems(self.prior.to(dtype), self.observations.to(dtype), self.obs_mask, self.latent.to(dtype))


class Task(abc.ABC):
    """A family of inference problems: prior sampler, simulator and reference posterior.

    A subclass names its family in the class statement,
    ``class MyTask(Task, name="my_task", obs_dim=2, max_obs=8)`` (``dim``,
    ``obs_dim`` and ``exact`` are class attributes; ``max_obs`` is the
    default of that constructor argument), takes its own settings as keyword
    arguments plus ``**common`` (``n_components``, ``max_obs``, ``min_obs``,
    passed on to this class), and implements the abstract methods. Its
    signature shows the shared arguments too. ``config()`` returns the
    settings that define the family; a model trained on one family stores
    them, and :func:`amortized.tasks.make_task` rebuilds the same family for
    evaluation.
    """

    name: str = ""
    dim: int = 1
    obs_dim: int = 1
    exact: bool = True  # False where the reference is a quadrature or grid approximation
    default_max_obs: int = 5

    def __init_subclass__(
        cls, *, name: str = "", dim: int = 1, obs_dim: int = 1, exact: bool = True, max_obs: int = 5, **kwargs: Any
    ):
        super().__init_subclass__(**kwargs)
        cls.name, cls.dim, cls.obs_dim, cls.exact, cls.default_max_obs = name, dim, obs_dim, exact, max_obs
        if "__init__" not in cls.__dict__:
            return
        # The shared arguments join the subclass signature (with its max_obs default): config() and help read it.
        sig = inspect.signature(cls.__init__)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [
            p.replace(kind=p.KEYWORD_ONLY, default=max_obs, annotation=int)
            if p.name == "max_obs"
            else p.replace(kind=p.KEYWORD_ONLY)
            for p in list(inspect.signature(Task.__init__).parameters.values())[1:]
            if p.name not in sig.parameters
        ]
        cls.__init__.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]

    def __init__(self, n_components: int = 4, max_obs: int | None = None, min_obs: int = 0):
        max_obs = self.default_max_obs if max_obs is None else max_obs
        for name, value in (("n_components", n_components), ("max_obs", max_obs), ("min_obs", min_obs)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"{name} must be an integer, got {value!r}")
        if n_components < 1:
            raise UsageError(f"n_components must be at least 1, got {n_components}")
        if not 0 <= min_obs <= max_obs:
            raise UsageError(f"need 0 <= min_obs <= max_obs, got min_obs={min_obs}, max_obs={max_obs}")
        check_limit("n_components", n_components, MAX_COMPONENTS)
        check_limit("max_obs", max_obs, MAX_OBS)
        self.n_components, self.max_obs, self.min_obs = n_components, max_obs, min_obs

    def config(self) -> dict[str, Any]:
        """The constructor arguments that define this family (tuples as lists, for JSON)."""
        return init_args(self)

    @abc.abstractmethod
    def sample_prior(self, batch: int, generator: torch.Generator | None = None) -> GaussianMixture:
        """``batch`` random priors, float64, ``batch_shape == (batch,)``."""

    @abc.abstractmethod
    def simulate(
        self, latent: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Observations ``(B, max_obs, obs_dim)`` and padding mask ``(B, max_obs)`` for latents ``(B, D)``."""

    @abc.abstractmethod
    def log_likelihood(self, x: torch.Tensor, observations: torch.Tensor, obs_mask: torch.Tensor) -> torch.Tensor:
        """``log p(observations | x)`` for ``x`` of shape ``(S, B, D)`` -> ``(S, B)``; padding is ignored."""

    @abc.abstractmethod
    def posterior(self, prior: GaussianMixture, observations: torch.Tensor, obs_mask: torch.Tensor) -> Distribution:
        """The exact (or reference) posterior, batch shape ``(B,)``, with ``log_prob`` and ``sample``."""

    def sample(self, batch: int, generator: torch.Generator | None = None) -> Problems:
        """``batch`` fresh problems: prior, latent drawn from it, observations simulated from the latent."""
        prior = self.sample_prior(batch, generator)
        latent = _gmm.sample(prior, 1, generator)[0]
        obs, mask = self.simulate(latent, generator)
        return Problems(prior, obs, mask, latent)

    def _n_obs_mask(self, batch: int, generator: torch.Generator | None) -> torch.Tensor:
        """Padding mask with a uniformly random count of observations in [min_obs, max_obs]."""
        n = torch.randint(self.min_obs, self.max_obs + 1, (batch, 1), generator=generator)
        return torch.arange(self.max_obs)[None, :] >= n

    def check_observations(self, observations: torch.Tensor) -> None:
        if observations.dim() != 3 or observations.shape[-1] != self.obs_dim:
            raise UsageError(
                f"{self.name} observations must have shape (B, N, {self.obs_dim}), got {tuple(observations.shape)}"
            )


def random_prior(
    batch: int,
    n_components: int,
    dim: int,
    mean_scale: float,
    scale_range: tuple[float, float],
    corr_scale: float,
    logit_scale: float,
    generator: torch.Generator | None,
    mean_offset: float = 0.0,
) -> GaussianMixture:
    """Random mixtures: N(offset, mean_scale²) means, log-uniform scales, random correlations."""
    g = generator
    k, d = n_components, dim
    logits = torch.randn(batch, k, generator=g, dtype=torch.float64) * logit_scale
    means = mean_offset + torch.randn(batch, k, d, generator=g, dtype=torch.float64) * mean_scale
    lo, hi = torch.log(torch.tensor(scale_range, dtype=torch.float64))
    log_diag = lo + (hi - lo) * torch.rand(batch, k, d, generator=g, dtype=torch.float64)
    tril = torch.diag_embed(log_diag.exp())
    if d > 1:
        off = torch.randn(batch, k, d, d, generator=g, dtype=torch.float64) * corr_scale
        # Scaled by the diagonal so that correlations, not raw entries, are what is random.
        s = log_diag.exp()
        tril = tril + torch.tril(off, -1) * torch.sqrt(s[..., :, None] * s[..., None, :])
    return _gmm.make(logits, means, tril)
