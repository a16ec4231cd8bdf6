"""A batch of 1-D densities held on a grid: the reference posterior where no closed form exists."""

from __future__ import annotations

from typing import Sequence

import torch

from probcirc import Distribution


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
        self.log_mass = torch.log_softmax(log_mass.double(), -1)
        self.widths = self.edges.diff(dim=-1)
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
        """Draws of shape ``(n, B, 1)``; ``sample_shape`` must be an int or a 1-tuple."""
        n = sample_shape if isinstance(sample_shape, int) else (int(sample_shape[0]) if len(sample_shape) else 1)
        cell = torch.multinomial(self.log_mass.exp(), n, replacement=True, generator=generator)  # (B, n)
        u = torch.rand(cell.shape, generator=generator, dtype=torch.float64)
        x = torch.gather(self.edges, -1, cell) + u * torch.gather(self.widths, -1, cell)
        out = x.T[..., None]
        return out if not isinstance(sample_shape, tuple) or len(sample_shape) else out[0]

    def mean(self) -> torch.Tensor:
        return (self.log_mass.exp() * self.centres).sum(-1)

    def variance(self) -> torch.Tensor:
        p = self.log_mass.exp()
        m = (p * self.centres).sum(-1, keepdim=True)
        return (p * ((self.centres - m) ** 2 + self.widths**2 / 12)).sum(-1)
