"""The contract every leaf family fulfils.

A family describes a univariate distribution. Every method broadcasts over
leading dimensions: parameters have shape ``(..., num_params)`` and values
``(..., B)``, node-major like the compiled circuit's ``(num_slots, B)``
buffers. A compiled input layer passes parameters ``(V, k, P)`` and values
``(V, 1, B)`` (k leaves per variable), so no value is copied per leaf.
"""

from __future__ import annotations

import abc

import torch


class InputDist(abc.ABC):
    """Abstract leaf family. Parameters live in linear space, one row per node."""

    #: Number of parameters per node.
    num_params: int
    #: Number of values for discrete families, ``None`` for continuous ones.
    num_values: int | None = None

    def key(self) -> tuple:
        """Families with equal keys share one compiled input layer."""
        return (type(self).__name__, *self._hyper())

    def _hyper(self) -> tuple:
        return ()

    @abc.abstractmethod
    def init_params(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Random starting parameters for ``n`` nodes, shape ``(n, num_params)``."""

    @abc.abstractmethod
    def check_params(self, params: torch.Tensor) -> None:
        """Raise ValueError if ``params`` are not valid for this family."""

    @abc.abstractmethod
    def check_values(self, x: torch.Tensor) -> None:
        """Raise ValueError naming the problem if observed values are outside the support."""

    @abc.abstractmethod
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Log density or mass of values ``x`` ``(..., B)`` under each node's distribution ``(..., B)``."""

    @abc.abstractmethod
    def mode(self, params: torch.Tensor) -> torch.Tensor:
        """The most probable value per node, shape ``(...,)``."""

    @abc.abstractmethod
    def sample(self, params: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """One draw per parameter row, shape ``(A,)``."""

    @abc.abstractmethod
    def stats(self, params: torch.Tensor, x: torch.Tensor, observed: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
        """Expected sufficient statistics ``(..., S)`` from per-sample node flows ``(..., B)``.

        A missing value contributes its expectation under the node's current
        distribution, which is the exact E-step for missing data.
        """

    @abc.abstractmethod
    def m_step(self, stats: torch.Tensor, params: torch.Tensor, pseudocount: float) -> torch.Tensor:
        """New parameters from accumulated statistics (with Laplace-style smoothing)."""

    @abc.abstractmethod
    def to_unconstrained(self, params: torch.Tensor) -> torch.Tensor:
        """Map parameters to free real numbers, for gradient-based learning."""

    @abc.abstractmethod
    def from_unconstrained(self, free: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_unconstrained`."""

    def stat_seen(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor | None:
        """Which statistics can be nonzero given values ``x`` ``(V, 1, B)``: a bool ``(V, 1, S)`` or None (all).

        Data-parallel EM exchanges only these entries, so families whose
        statistics are sparse in the data (a categorical table) narrow it.
        """
        return None

    def mode_log_prob(self, params: torch.Tensor) -> torch.Tensor:
        """log p(mode) per node: a missing variable's value in max-product."""
        return self.log_prob(params, self.mode(params)[..., None]).squeeze(-1)

    def pmf(self, params: torch.Tensor) -> torch.Tensor:
        """Probabilities of every value, ``(n, num_values)``; discrete families only."""
        if self.num_values is None:
            raise NotImplementedError(f"{type(self).__name__} is continuous: it has no probability table")
        values = torch.arange(self.num_values, dtype=params.dtype, device=params.device)
        return self.log_prob(params, values[None, :].expand(params.shape[0], -1)).exp()

    def moments(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E[X] and E[X²] per node, ``(n,)`` each; discrete families from their table, values 0..V-1."""
        p = self.pmf(params)
        values = torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)
        return p @ values, p @ (values * values)

    def __repr__(self) -> str:
        hyper = ", ".join(map(str, self._hyper()))
        return f"{type(self).__name__}({hyper})"


def keep_where_empty(new: torch.Tensor, old: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """An M-step result, except for nodes that saw no data and no pseudocount: those keep ``old``.

    ``new`` is used up: the result is written into it (an M-step's temporaries are large).
    """
    return torch.where(total[..., None] > 0, new.nan_to_num_(0.0), old, out=new)


def check_integers(x: torch.Tensor, low: int, high: int, what: str) -> None:
    """Shared support check for discrete families: integers in [low, high]."""
    if x.numel() == 0:
        return
    # One host sync when all is well (a GPU stalls on each); the details are looked up only on failure.
    if not bool(((x != torch.round(x)) | (x < low) | (x > high)).any()):
        return
    if bool((x != torch.round(x)).any()):
        raise ValueError(f"{what} values must be integers, got {x[x != torch.round(x)][0].item()}")
    bad = (x < low) | (x > high)
    if bool(bad.any()):
        raise ValueError(f"{what} value {x[bad][0].item():g} is out of range [{low}, {high}]")
