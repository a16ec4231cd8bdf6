"""Gradient-based learning of the log-likelihood through autograd."""

from __future__ import annotations

import torch

from ..compile import CompiledCircuit
from ..queries import log_prob
from ._epoch import Epoch, check_data


def sgd(
    circuit: CompiledCircuit,
    data: torch.Tensor,
    epochs: int = 1,
    batch_size: int = 512,
    lr: float = 0.05,
    mask: torch.Tensor | None = None,
    optimizer: str = "adam",
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Maximise the mean log-likelihood with Adam (or plain SGD) on unconstrained parameters.

    Sum weights are parameterised by per-node softmax logits (absent edges
    stay at zero) and leaf parameters by their family's unconstrained form.
    Gradients come from the circuit's own backward pass through autograd.
    Returns the mean training log-likelihood per epoch.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    data = check_data(circuit, data)
    sums, leaves = circuit._sum_layers, circuit._input_layers
    sum_free = [
        torch.nn.Parameter(torch.where(l.weight > 0, l.weight.log(), torch.full_like(l.weight, -torch.inf)))
        for l in sums
    ]
    leaf_free = [torch.nn.Parameter(l.dist.to_unconstrained(l.params)) for l in leaves]
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(sum_free + leaf_free, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    history = []

    def install(track: bool):
        for l, f in zip(sums, sum_free):
            w = torch.softmax(f, -1)
            l.weight = w if track else w.detach()
        for l, f in zip(leaves, leaf_free):
            p = l.dist.from_unconstrained(f)
            l.params = p if track else p.detach()

    try:
        for epoch in range(epochs):
            ep = Epoch(
                data, batch_size, f"SGD epoch {epoch + 1}/{epochs}", gen, progress=progress, device=circuit.device
            )
            for idx in ep:
                install(track=True)
                ll = log_prob(circuit, data[idx], None if mask is None else mask[idx])
                loss = -ll.mean()
                opt.zero_grad()
                loss.backward()
                # Absent edges have -inf logits; their gradient is meaningless.
                for f in sum_free:
                    if f.grad is not None:
                        f.grad.nan_to_num_(0.0)
                opt.step()
                ep.add(ll.detach().sum(dtype=torch.float64), len(idx))
            history.append(ep.mean)
    finally:
        with torch.no_grad():
            install(track=False)
    return history
