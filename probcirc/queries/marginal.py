"""Log-likelihoods with missing values marginalised out, differentiable in the parameters."""

from __future__ import annotations

import torch

from .. import backend
from ..compile import CompiledCircuit


def parameters(circuit: CompiledCircuit) -> list[torch.Tensor]:
    """The circuit's parameter tensors in a fixed order: sum weights, then leaf parameters."""
    return [l.weight for l in circuit._sum_layers] + [l.params for l in circuit._input_layers]


class _LogProb(torch.autograd.Function):
    """log p(x_observed) with gradients from the circuit's own backward pass (flows)."""

    @staticmethod
    def forward(ctx, circuit, x, missing, *params):
        mars = circuit._forward_pass(x, missing)
        ctx.circuit, ctx.x, ctx.missing, ctx.mars = circuit, x, missing, mars
        return mars[-1].clone()

    @staticmethod
    def backward(ctx, grad):
        circuit, x, missing = ctx.circuit, ctx.x, ctx.missing
        flows, grads = circuit._backward_pass(ctx.mars, grad)
        for layer in circuit._input_layers:
            with torch.enable_grad():
                params = layer.params.detach().requires_grad_(True)
                logp = layer.log_values(params, x, missing)
                (g,) = torch.autograd.grad(logp, params, flows[layer.start : layer.stop])
            grads.append(g)
        return (None, None, None, *grads)


@backend.exact()
def log_prob(circuit: CompiledCircuit, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x_o) per sample, shape ``(B,)``; entries where ``mask`` is True are summed out.

    Gradients reach the sum weights and leaf parameters when they require them.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Bernoulli
        >>> pc = probcirc.compile(summate(inputs(0, 2, Bernoulli()), num_nodes=1))
        >>> log_prob(pc, torch.tensor([[0.0]]), torch.tensor([[True]]))
        tensor([0.])
    """
    x, missing = circuit._prepare(x, mask)
    params = parameters(circuit)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        return _LogProb.apply(circuit, x, missing, *params)
    return circuit._forward_pass(x, missing)[-1].clone()


__all__ = ["log_prob", "parameters"]
