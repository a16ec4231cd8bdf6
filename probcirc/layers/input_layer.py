"""Input layer: every leaf of one family, evaluated at once."""

from __future__ import annotations

import torch
from torch import nn

from ..inputs import InputDist


class InputLayer(nn.Module):
    """Leaves of one family; node j reads variable ``node_var[j]`` and owns slot ``start + j``.

    Buffers of node values are node-major, ``(num_slots, B)``, so that a layer
    reads and writes whole rows.
    """

    def __init__(self, dist: InputDist, node_var: torch.Tensor, params: torch.Tensor, start: int):
        super().__init__()
        self.dist = dist
        self.start = start
        self.register_buffer("node_var", node_var.long())
        self.register_buffer("params", params)

    @property
    def stop(self) -> int:
        return self.start + self.node_var.numel()

    def values(self, x: torch.Tensor, missing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each node's variable value per sample and whether it is observed, both ``(n, B)``.

        ``x`` and ``missing`` arrive node-major too, ``(num_vars, B)``.
        """
        return x.index_select(0, self.node_var), ~missing.index_select(0, self.node_var)

    def forward(self, mars: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, max_mode: bool = False) -> None:
        xv, observed = self.values(x, missing)
        out = mars[self.start : self.stop]
        out.copy_(self.dist.log_prob(self.params, xv))
        if max_mode:
            # A missing variable is maximised out in max-product...
            out.copy_(torch.where(observed, out, self.dist.mode_log_prob(self.params)[:, None]))
        elif not bool(observed.all()):
            # ...and summed out (log 1 = 0) otherwise.
            out.masked_fill_(~observed, 0.0)

    def em_stats(self, flows: torch.Tensor, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        xv, observed = self.values(x, missing)
        return self.dist.stats(self.params, xv, observed, flows[self.start : self.stop])

    def down(self, active: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, choose: str, generator) -> None:
        """Fill the missing variables of the active leaves: drawn (``sample``) or the mode (``argmax``)."""
        j, b = active[self.start : self.stop].nonzero(as_tuple=True)
        var = self.node_var[j]
        free = missing[var, b]
        b, j, var = b[free], j[free], var[free]
        if choose == "sample":
            x[var, b] = self.dist.sample(self.params[j], generator).to(x.dtype)
        else:
            x[var, b] = self.dist.mode(self.params)[j].to(x.dtype)
