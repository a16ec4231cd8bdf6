"""Expectation-maximisation from circuit flows: mini-batch, then full-batch."""

from __future__ import annotations

import math

import torch

from ..compile import CompiledCircuit
from ._epoch import Epoch, check_data


def em(
    circuit: CompiledCircuit,
    data: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 512,
    step_size: float = 0.1,
    pseudocount: float = 0.1,
    full_batch_epochs: int = 0,
    mask: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Fit the circuit's parameters by EM; return the mean training log-likelihood of every epoch.

    Mini-batch epochs update after every batch, ``θ ← (1 - s)·θ + s·θ_new`` with
    ``θ_new = (F + α/|ch|) / (ΣF + α)`` from the batch's flows F. Full-batch
    epochs accumulate flows over the whole data set and update once (s = 1),
    which never lowers the training likelihood. Missing entries (``mask``
    True, or NaN in ``data``) are summed out, and their leaves receive their
    expected statistics, which is exact EM for missing data.

    The log-likelihood reported for an epoch is measured with the parameters
    in force while each batch was evaluated, so for full-batch epochs it is
    exactly the likelihood before that epoch's update.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Bernoulli
        >>> pc = probcirc.compile(summate(inputs(0, 2, Bernoulli()), num_nodes=1))
        >>> data = torch.tensor([[1.0]] * 30 + [[0.0]] * 10)
        >>> history = em(pc, data, full_batch_epochs=3, epochs=0, pseudocount=0.0, progress=False)
        >>> round(float(pc.log_prob(torch.tensor([[1.0]])).exp()), 3)
        0.75
    """
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    if pseudocount < 0:
        raise ValueError(f"pseudocount must be >= 0, got {pseudocount}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = check_data(circuit, data)
    if mask is None and data.is_floating_point() and bool(torch.isnan(data).any()):
        mask = torch.isnan(data)
    circuit._prepare(data[:1], None if mask is None else mask[:1])  # fail early on shape errors
    gen = torch.Generator().manual_seed(seed)
    history: list[float] = []
    total = epochs + full_batch_epochs
    with torch.no_grad():
        for epoch in range(total):
            full = epoch >= epochs
            kind = "full" if full else "mini"
            acc = _Accumulator(circuit) if full else None
            ep = Epoch(
                data, batch_size, f"EM {kind} epoch {epoch + 1}/{total}", gen, not full, progress, circuit.device
            )
            for idx in ep:
                x, missing = circuit._prepare(data[idx], None if mask is None else mask[idx])
                mars = circuit._forward_pass(x, missing)
                root = mars[-1]
                flows, grads = circuit._backward_pass(mars, torch.ones_like(root))
                edge_flows = [layer.weight * g for layer, g in zip(circuit._sum_layers, grads)]
                stats = [layer.em_stats(flows, x, missing) for layer in circuit._input_layers]
                if full:
                    acc.add(edge_flows, stats)
                else:
                    _update(circuit, edge_flows, stats, step_size, pseudocount)
                ep.add(root.sum(dtype=torch.float64), len(idx))
            if full:
                _update(circuit, acc.edge_flows, acc.stats, 1.0, pseudocount)
            history.append(ep.mean)
            if progress:
                bpd = -history[-1] / (circuit.num_vars * math.log(2))
                ep.bar.write(
                    f"epoch {epoch + 1}/{total} ({kind}-batch): train ll {history[-1]:.3f}, {bpd:.4f} bits/dim"
                )
    return history


class _Accumulator:
    def __init__(self, circuit: CompiledCircuit):
        self.edge_flows = [torch.zeros_like(l.weight) for l in circuit._sum_layers]
        self.stats = None

    def add(self, edge_flows, stats):
        for a, f in zip(self.edge_flows, edge_flows):
            a += f
        self.stats = stats if self.stats is None else [a + s for a, s in zip(self.stats, stats)]


def _update(circuit: CompiledCircuit, edge_flows, stats, step_size: float, pseudocount: float) -> None:
    for layer, f in zip(circuit._sum_layers, edge_flows):
        layer.em_update(f, step_size, pseudocount)
    for layer, s in zip(circuit._input_layers, stats):
        new = layer.m_step(s, pseudocount)
        layer.params.mul_(1 - step_size).add_(step_size * new)
