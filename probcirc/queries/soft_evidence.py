"""Posteriors of a Bernoulli-leaf circuit under soft (virtual) evidence on every variable."""

from __future__ import annotations

import torch

from .. import backend
from ..compile import CompiledCircuit
from ..inputs import Bernoulli
from ..layers import InputLayer

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
    for layer in pc.input_layers:
        if not isinstance(layer.dist, Bernoulli):
            raise TypeError(f"soft evidence needs Bernoulli leaves, found {layer.dist!r}")
    q = torch.as_tensor(q, dtype=pc.dtype)
    if q.dim() != 2 or q.shape[1] != pc.num_vars:
        raise ValueError(f"q must have shape (batch, {pc.num_vars}), got {tuple(q.shape)}")
    b = q.shape[0]
    chunk = chunk or max(1, int(2**22 // max(1, pc.num_slots)))
    posts, logz = [], []
    with torch.no_grad(), backend.exact():  # exact products even inside backend.approximate()
        for s in range(0, b, chunk):
            qn = q[s : s + chunk].T.contiguous()  # (V, b) node-major, like the engine's buffers
            nb = qn.shape[1]
            mars = torch.empty(pc.num_slots, nb, dtype=pc.dtype)
            mars[0] = 0.0
            shares = []
            for layer in pc.layers:
                if isinstance(layer, InputLayer):
                    theta = layer.params[:, :1]
                    qv = qn.index_select(0, layer.node_var)
                    one = theta * qv
                    val = one + (1 - theta) * (1 - qv)
                    mars[layer.start : layer.stop] = val.log()
                    shares.append((layer, torch.where(val > 0, one / torch.where(val > 0, val, torch.ones_like(val)), torch.zeros_like(val))))
                else:
                    layer(mars)
            flows, _ = pc.backward_pass(mars, torch.ones(nb, dtype=pc.dtype))
            num = torch.zeros(pc.num_vars, nb, dtype=pc.dtype)
            den = torch.zeros(pc.num_vars, nb, dtype=pc.dtype)
            for layer, share in shares:
                f = flows[layer.start : layer.stop]
                num.index_add_(0, layer.node_var, f * share)
                den.index_add_(0, layer.node_var, f)
            posts.append((num / den).T)
            logz.append(mars[-1].clone())
    return torch.cat(posts), torch.cat(logz)
