"""Gradient-based learning of the log-likelihood through autograd."""

from __future__ import annotations

import torch

from probmod.errors import UsageError
from probmod.progress import Progress

from ..compile import CompiledCircuit
from ..queries import log_prob


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
    data = data if isinstance(data, torch.Tensor) else torch.as_tensor(data, device="cpu")  # batches move, not it
    if data.dim() != 2 or len(data) == 0:
        raise UsageError(f"data must be a non-empty (samples, {circuit.num_vars}) batch, got shape {tuple(data.shape)}")
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
            order = torch.randperm(len(data), generator=gen, device="cpu").to(data.device)  # CPU generator
            total, seen = torch.zeros((), dtype=torch.float64, device=circuit.device), 0
            bar = Progress(len(data), f"SGD epoch {epoch + 1}/{epochs}", "samples", enabled=progress)
            for s in range(0, len(data), batch_size):
                idx = order[s : s + batch_size]
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
                total += ll.detach().sum(dtype=torch.float64)  # a tensor: float() would stall a GPU every batch
                seen += len(idx)
                bar.update(len(idx))
                if progress:
                    bar.set_postfix(f"ll={float(total) / seen:.3f}")
            bar.close()
            history.append(float(total) / seen)
    finally:
        with torch.no_grad():
            install(track=False)
    return history
