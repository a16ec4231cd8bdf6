"""The one interface every model in probmod shares: :class:`Distribution`, and :class:`Conditional` for posteriors.

Names follow :mod:`torch.distributions` so that users' habits carry over.

Missing values
--------------
Every ``mask`` argument in probmod has the same meaning: ``mask[b, d] = True``
marks variable ``d`` of sample ``b`` as **missing**; exact models marginalise it
out, and the value stored in ``x`` at that place is ignored (it may be NaN).
A mask has the same shape as ``x`` (``batch + event_shape``) and dtype
``torch.bool``. ``mask=None`` means nothing is missing. Each sample may have
its own mask.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Protocol, overload, runtime_checkable

import torch

__all__ = ["Distribution", "Conditional", "check_mask"]


class Distribution(abc.ABC):
    """Abstract base of every probmod model.

    Subclasses implement :meth:`log_prob` and :meth:`sample`. Models that can
    answer marginal, conditional or most-probable-explanation queries exactly
    override :meth:`marginal`, :meth:`condition` and :meth:`mpe`; the others
    keep the defaults here, which raise :class:`NotImplementedError`, so an
    approximate answer is never passed off as an exact one.

    Example:
        >>> import torch
        >>> from probcirc import GaussianMixture
        >>> gmm = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.eye(2)[None])
        >>> isinstance(gmm, Distribution), tuple(gmm.event_shape)
        (True, (2,))
    """

    #: Shape of one draw, e.g. ``(D,)`` for a distribution over D variables.
    event_shape: torch.Size = torch.Size()
    #: Shape of a batch of independent distributions held by one object.
    batch_shape: torch.Size = torch.Size()

    @property
    def support(self) -> str:
        """A short description of the values a draw can take, e.g. ``"real"``."""
        return "real"

    @abc.abstractmethod
    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Log density or log mass of ``x``; missing entries (``mask``) are marginalised.

        ``x`` has shape ``sample_shape + batch_shape + event_shape``; the result
        has shape ``sample_shape + batch_shape``.
        """

    @abc.abstractmethod
    def sample(self, sample_shape: int | Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw samples of shape ``sample_shape + batch_shape + event_shape``.

        With ``generator`` every draw comes from it, never from torch's global
        generator, so a seeded generator reproduces the samples. Discrete
        models return integer tensors (``torch.long``).
        """

    def marginal(self, vars: Sequence[int]) -> Distribution:
        """The exact marginal distribution over the variables ``vars``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact marginal")

    def condition(self, x: torch.Tensor, mask: torch.Tensor) -> Conditional:
        """The exact distribution of the missing entries given the observed ones, per sample."""
        raise NotImplementedError(f"{type(self).__name__} has no exact conditional")

    def mpe(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The most probable completion of the missing entries, per sample."""
        raise NotImplementedError(f"{type(self).__name__} has no exact MPE query")


@runtime_checkable
class Conditional(Protocol):
    """What :meth:`Distribution.condition` returns: one exact posterior per conditioned sample.

    ``len(post)`` is the number of samples ``B`` it was built from. Every
    method answers for all of them at once, with full-width tensors of shape
    ``(B, D)`` in which the observed entries hold the evidence. ``mean`` and
    ``variance`` are properties, as in :mod:`torch.distributions`; ``mpe``
    and ``sample`` are methods because they compute or draw. ``sample``
    takes a ``torch.Generator`` and never draws from the global one when a
    generator is given.

    Example:
        >>> import torch
        >>> from probcirc import GaussianMixture
        >>> gmm = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.eye(2)[None])
        >>> x = torch.tensor([[0.5, 0.0]]); mask = torch.tensor([[False, True]])
        >>> isinstance(gmm.condition(x, mask), Conditional)
        True
    """

    def __len__(self) -> int: ...

    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor: ...

    @property
    def mean(self) -> torch.Tensor: ...

    @property
    def variance(self) -> torch.Tensor: ...

    def mpe(self) -> torch.Tensor: ...


def _sample_shape(sample_shape: int | Sequence[int]) -> torch.Size:
    if isinstance(sample_shape, int):
        return torch.Size((sample_shape,))
    return torch.Size(sample_shape)


# No mask in, no mask out: the overloads let callers that passed a tensor use the result as one.
@overload
def check_mask(x: torch.Tensor, mask: torch.Tensor, event_dims: int = 1) -> torch.Tensor: ...
@overload
def check_mask(x: torch.Tensor, mask: None, event_dims: int = 1) -> None: ...
@overload
def check_mask(x: torch.Tensor, mask: torch.Tensor | None, event_dims: int = 1) -> torch.Tensor | None: ...


def check_mask(x: torch.Tensor, mask: torch.Tensor | None, event_dims: int = 1) -> torch.Tensor | None:
    """Validate a missing-value mask against ``x`` and return it as a bool tensor.

    Raises:
        ValueError: if the mask's shape differs from ``x``'s, or its dtype is not bool.

    Example:
        >>> import torch
        >>> check_mask(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 3])
    """
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must have dtype torch.bool (True = missing), got {mask.dtype}")
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)} but x has shape {tuple(x.shape)}; they must match")
    return mask.to(x.device)
