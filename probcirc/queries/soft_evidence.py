"""Posteriors of a Bernoulli-leaf circuit under soft (virtual) evidence on every variable."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import backend
from ..compile import CompiledCircuit, LeafGroup
from ..inputs import Bernoulli

__all__ = ["soft_evidence"]


def soft_evidence(pc: CompiledCircuit, q: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior P(X_j = 1) of every variable of a circuit with Bernoulli leaves, under soft evidence.

    ``q`` is ``(B, num_vars)``: the probability that each variable is 1 under
    each sample's independent evidence. Returns ``(posteriors (B, V), log Z (B,))``
    where ``Z = Σ_x p(x) Π_j q_j^x_j (1-q_j)^(1-x_j)``. Exact for any smooth,
    decomposable circuit whose leaves are all Bernoulli.

    Each leaf over variable j with parameter θ takes the value
    θ·q_j + (1-θ)(1-q_j) (the circuit is multilinear in its leaves), and one
    backward pass gives every leaf's share of Z; summing the shares of
    variable j's leaves, weighted by their share of value 1, gives
    P(X_j = 1 | evidence) for all j at once.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.inputs import Bernoulli
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> a = inputs(0, 2, Bernoulli(), params=torch.tensor([[0.0], [1.0]]))
        >>> b = inputs(1, 2, Bernoulli(), params=torch.tensor([[0.0], [1.0]]))
        >>> both = summate(multiply(a, b), num_nodes=1, params=torch.tensor([[0.5, 0.5]]))  # X0 = X1
        >>> post, _ = soft_evidence(probcirc.compile(both, dtype=torch.float64), torch.tensor([[0.9, 0.5]]))
        >>> post
        tensor([[0.9000, 0.9000]], dtype=torch.float64)
    """
    groups = pc.leaf_groups
    for g in groups:
        if not isinstance(g.dist, Bernoulli):
            raise TypeError(f"soft evidence needs Bernoulli leaves, found {g.dist!r}")
    q = torch.as_tensor(q, dtype=pc.dtype, device=pc.device)
    if q.dim() != 2 or q.shape[1] != pc.num_vars:
        raise ValueError(f"q must have shape (batch, {pc.num_vars}), got {tuple(q.shape)}")
    chunk = chunk or max(1, int(2**22 // max(1, pc.num_nodes)))
    posts, logz = [], []
    with torch.no_grad(), backend.exact():  # exact products even inside backend.approximate()
        for s in range(0, q.shape[0], chunk):
            qn = q[s : s + chunk].T  # (V, b) node-major, like the leaf values
            ones = [g.params[:, :1] * qn.index_select(0, g.var) for g in groups]  # θ·q: the value-1 part
            values = [one + (1 - g.params[:, :1]) * (1 - qn.index_select(0, g.var)) for g, one in zip(groups, ones)]
            out = pc.forward_with_leaves(_in_order([v.log() for v in values]), flows=True)
            num = torch.zeros(qn.shape, dtype=pc.dtype, device=pc.device)
            den = torch.zeros(qn.shape, dtype=pc.dtype, device=pc.device)
            for g, one, val, f in zip(groups, ones, values, out.leaf_flows or ()):
                share = torch.where(
                    val > 0, one / torch.where(val > 0, val, torch.ones_like(val)), torch.zeros_like(val)
                )
                num.index_add_(0, g.var, f * share)
                den.index_add_(0, g.var, f)
            posts.append((num / den).T)
            logz.append(out.log_value)
    return torch.cat(posts), torch.cat(logz)


def _in_order(values: list[torch.Tensor]) -> Callable[[LeafGroup], torch.Tensor]:
    """A leaf hook handing out ``values`` in turn: it is called once per group, in ``leaf_groups`` order."""
    it = iter(values)
    return lambda _group: next(it)
