"""A batch of 1-D densities held on a grid: the reference posterior where no closed form exists."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from probcirc import Distribution
from probmod.errors import UsageError


class GridPosterior(Distribution):
    """Piecewise-constant 1-D densities, one per problem.

    Args:
        edges: ``(B, G + 1)`` increasing cell edges.
        log_mass: ``(B, G)`` unnormalised log probability of each cell.

    The density is constant inside each cell and zero outside the grid, so
    :meth:`log_prob` and :meth:`sample` describe exactly the same distribution
    (which keeps Monte Carlo KL estimates against it unbiased).

    Example:
        >>> import torch
        >>> g = GridPosterior(torch.linspace(0, 1, 5)[None], torch.zeros(1, 4))
        >>> g.log_prob(torch.tensor([[[0.3]]])).exp()
        tensor([[1.]], dtype=torch.float64)
    """

    def __init__(self, edges: torch.Tensor, log_mass: torch.Tensor):
        self.edges = edges.double()
        if log_mass.dim() != 2 or self.edges.shape != (log_mass.shape[0], log_mass.shape[1] + 1):
            raise UsageError(
                f"edges must be (B, G + 1) and log_mass (B, G); got {tuple(edges.shape)} and {tuple(log_mass.shape)}"
            )
        self.log_mass = torch.log_softmax(log_mass.double(), -1)
        self.widths = self.edges.diff(dim=-1)
        if not bool((self.widths > 0).all()):
            raise UsageError("edges must be strictly increasing along each row")
        self.batch_shape = torch.Size(log_mass.shape[:-1])
        self.event_shape = torch.Size((1,))

    @property
    def centres(self) -> torch.Tensor:
        return 0.5 * (self.edges[..., 1:] + self.edges[..., :-1])

    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` of shape ``(S, B, 1)`` -> ``(S, B)``; ``-inf`` outside the grid."""
        x = x.double()[..., 0]
        s = x.shape[0]
        flat = x.T.contiguous()  # (B, S)
        cell = torch.searchsorted(self.edges.contiguous(), flat, right=True) - 1
        inside = (cell >= 0) & (cell < self.log_mass.shape[-1])
        cell = cell.clamp(0, self.log_mass.shape[-1] - 1)
        dens = torch.gather(self.log_mass - torch.log(self.widths), -1, cell)
        return torch.where(inside, dens, torch.full_like(dens, -torch.inf)).T.reshape(s, -1)

    def sample(self, sample_shape: int | Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws of shape ``sample_shape + (B, 1)``, every one from ``generator`` when it is given.

        Example:
            >>> g = GridPosterior(torch.linspace(0, 1, 5)[None], torch.zeros(1, 4))
            >>> tuple(g.sample((3, 2), generator=torch.Generator().manual_seed(0)).shape)
            (3, 2, 1, 1)
        """
        shape = torch.Size((sample_shape,)) if isinstance(sample_shape, int) else torch.Size(sample_shape)
        n = shape.numel()
        b = self.log_mass.shape[0]
        if n == 0:
            return self.edges.new_empty(*shape, b, 1)
        cell = torch.multinomial(self.log_mass.exp(), n, replacement=True, generator=generator)  # (B, n)
        u = torch.rand(cell.shape, generator=generator, dtype=torch.float64)
        x = torch.gather(self.edges, -1, cell) + u * torch.gather(self.widths, -1, cell)
        return x.T.reshape(*shape, b, 1)

    @property
    def mean(self) -> torch.Tensor:
        """The mean of each density, shape ``(B,)`` (a property, as in :mod:`torch.distributions`)."""
        return (self.log_mass.exp() * self.centres).sum(-1)

    @property
    def variance(self) -> torch.Tensor:
        """The variance of each density, shape ``(B,)``, including the spread within each cell."""
        p = self.log_mass.exp()
        m = (p * self.centres).sum(-1, keepdim=True)
        return (p * ((self.centres - m) ** 2 + self.widths**2 / 12)).sum(-1)
