"""Per-variable conditionals P(X_t = v | x_observed) from one forward and one backward pass."""

from __future__ import annotations

from typing import Sequence

import torch

from .. import backend
from ..compile import CompiledCircuit


@backend.exact()
def conditional(
    circuit: CompiledCircuit,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    targets: Sequence[int],
    batch_chunk: int = 256,
) -> torch.Tensor:
    """The full distribution of each target given the observed entries, ``(B, T, V)``.

    Targets are treated as missing whatever the mask says. A smooth and
    decomposable circuit is linear in the leaves of any one variable, so
    ``p(x_o, X_t = v) = Σ_n ∂p/∂L_n · L_n(v)`` over the leaves n of t, and the
    backward pass's flows give ``∂p/∂L_n / p`` for all targets at once.
    ``V`` is the largest number of values among the targets' leaf families.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Categorical
        >>> leaf = inputs(0, 1, Categorical(3), params=torch.tensor([[0.2, 0.3, 0.5]]))
        >>> pc = probcirc.compile(summate(leaf, num_nodes=1), dtype=torch.float64)
        >>> conditional(pc, torch.zeros(1, 1), None, [0])
        tensor([[[0.2000, 0.3000, 0.5000]]], dtype=torch.float64)
    """
    targets = [int(t) for t in targets]
    if not targets or min(targets) < 0 or max(targets) >= circuit.num_vars or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be distinct variable indices in [0, {circuit.num_vars}), got {targets}")
    x = torch.as_tensor(x, device=circuit.device)
    mask = torch.zeros(x.shape, dtype=torch.bool, device=circuit.device) if mask is None else mask.clone()
    if mask.shape == x.shape and x.dim() == 2:
        mask[:, targets] = True
    x, missing = circuit.prepare(x, mask)
    position = torch.full((circuit.num_vars,), -1, dtype=torch.long, device=circuit.device)
    position[torch.tensor(targets, device=circuit.device)] = torch.arange(len(targets), device=circuit.device)
    layers = [l for l in circuit.input_layers if bool((position[l.node_var] >= 0).any())]
    for layer in layers:
        if layer.dist.num_values is None:
            raise NotImplementedError(f"conditional() needs discrete leaves; target leaves are {layer.dist!r}")
    v = max(l.dist.num_values for l in layers)
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[1], batch_chunk):
            xb, mb = x[:, s : s + batch_chunk], missing[:, s : s + batch_chunk]
            mars = circuit.forward_pass(xb, mb)
            flows, _ = circuit.backward_pass(mars, torch.ones(xb.shape[1], dtype=mars.dtype, device=mars.device))
            res = torch.zeros(xb.shape[1], len(targets), v, dtype=mars.dtype, device=mars.device)
            for layer in layers:
                sel = (position[layer.node_var] >= 0).nonzero().squeeze(-1)
                pmf = layer.dist.pmf(layer.params[sel])  # (n_sel, V_layer)
                contrib = flows[layer.start + sel].T[:, :, None] * pmf
                res[..., : pmf.shape[1]].index_add_(1, position[layer.node_var[sel]], contrib)
            out.append(res / res.sum(-1, keepdim=True))
    return torch.cat(out)
