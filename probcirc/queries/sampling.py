"""Sampling (unconditional and given evidence) and MPE by max-product with backtracking."""

from __future__ import annotations

import torch

from .. import backend
from ..compile import CompiledCircuit


@backend.exact()
def sample(
    circuit: CompiledCircuit,
    num_samples: int | None = None,
    x: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_samples`` samples, or complete the missing entries of ``x`` by conditional sampling.

    Given evidence, each sum node picks a child with probability proportional
    to ``w · p_child(evidence)``, so completions are exact draws from
    ``p(x_missing | x_observed)``. Observed entries are returned unchanged.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Bernoulli
        >>> pc = probcirc.compile(summate(inputs(0, 2, Bernoulli()), num_nodes=1))
        >>> sample(pc, 5).shape
        torch.Size([5, 1])
    """
    if x is None:
        if num_samples is None or num_samples < 0:
            raise ValueError("give num_samples >= 0, or evidence x with a mask")
        x = torch.zeros(num_samples, circuit.num_vars, dtype=circuit.dtype, device=circuit.device)
        mask = torch.ones_like(x, dtype=torch.bool)
    elif mask is None:
        raise ValueError("conditional sampling needs a mask (True = entry to sample)")
    dtype = _result_dtype(x, circuit)
    x, missing = circuit._prepare(x, mask)
    with torch.no_grad():
        mars = circuit._forward_pass(x, missing)
        return circuit._down(mars, x, missing, "sample", generator).to(dtype)


@backend.exact()
def mpe(circuit: CompiledCircuit, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The most probable completion under the joint of observed, missing and latent variables.

    This is ``argmax over (x_missing, z) of p(x_observed, x_missing, z)``, where z
    are the sum nodes' choices: the max-product pass keeps each missing
    variable at its best value and each sum at its best child, and the
    backtracking reads the choices off. It is exact for that joint; the MPE of
    the marginal over x alone is NP-hard in general and not what this returns.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Categorical
        >>> leaf = inputs(0, 1, Categorical(3), params=torch.tensor([[0.2, 0.3, 0.5]]))
        >>> pc = probcirc.compile(summate(leaf, num_nodes=1))
        >>> mpe(pc, torch.zeros(1, 1), torch.tensor([[True]]))
        tensor([[2.]])
    """
    if mask is None:
        mask = torch.zeros(torch.as_tensor(x).shape, dtype=torch.bool, device=circuit.device)
    dtype = _result_dtype(x, circuit)
    x, missing = circuit._prepare(x, mask)
    with torch.no_grad():
        mars = circuit._forward_pass(x, missing, max_mode=True)
        return circuit._down(mars, x, missing, "argmax").to(dtype)


@backend.exact()
def max_log_prob(circuit: CompiledCircuit, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``max over (x_missing, z) of log p(x_observed, x_missing, z)``, the value :func:`mpe` attains."""
    x, missing = circuit._prepare(x, mask)
    with torch.no_grad():
        return circuit._forward_pass(x, missing, max_mode=True)[-1].clone()


def _result_dtype(x, circuit: CompiledCircuit) -> torch.dtype:
    """Completions come back in the evidence's dtype (integers stay integers)."""
    return torch.as_tensor(x, device=circuit.device).dtype if x is not None else circuit.dtype
