"""Gradient-based learning of the log-likelihood through autograd."""

from __future__ import annotations

import torch

from ..compile import CompiledCircuit
from ..queries import log_prob
from ._epoch import Epoch, check_data
from .distributed import CHUNK_SIZE, ChunkSum, chunk_rows


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
    chunk_size: int = CHUNK_SIZE,
    group=None,
) -> list[float]:
    """Maximise the mean log-likelihood with Adam (or plain SGD) on unconstrained parameters.

    Sum weights are parameterised by per-node softmax logits (absent edges
    stay at zero) and leaf parameters by their family's unconstrained form.
    Gradients come from the circuit's own backward pass through autograd.
    Returns the mean training log-likelihood per epoch.

    Each batch's gradient is the exact sum of its chunks' gradients
    (:mod:`probcirc.learn.distributed`), so inside a ``torch.distributed``
    process group (``group``, default: the default group when one is
    initialised) the ranks split the chunks, all-reduce the gradients, and
    take the same optimiser step: the same bytes for any number of ranks.
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
        for mix, f in zip(sums, sum_free):
            w = torch.softmax(f, -1)
            mix.weight = w if track else w.detach()
        for leaf, f in zip(leaves, leaf_free):
            p = leaf.dist.from_unconstrained(f)
            leaf.params = p if track else p.detach()

    params = sum_free + leaf_free
    shapes = [tuple(p.shape) for p in params]
    reducer = ChunkSum(group)
    try:
        for epoch in range(epochs):
            label = f"SGD epoch {epoch + 1}/{epochs}"
            ep = Epoch(data, batch_size, label, gen, progress=progress and reducer.rank == 0, device=circuit.device)
            for idx in ep:
                chunks = chunk_rows(idx, chunk_size)
                grads, lls = {}, {}
                for c in reducer.mine(len(chunks)):
                    install(track=True)
                    rows = chunks[c]
                    ll = log_prob(circuit, data[rows], None if mask is None else mask[rows])
                    # The batch's loss is -mean(ll): this chunk's share of it.
                    found = torch.autograd.grad(-ll.sum() / len(idx), params, allow_unused=True)
                    grads[c] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, found)]
                    # Absent edges have -inf logits; their gradient is meaningless.
                    for g in grads[c][: len(sum_free)]:
                        g.nan_to_num_(0.0)
                    lls[c] = ll.detach().sum(dtype=torch.float64)
                totals, ll_sum = reducer.run(grads, lls, len(chunks), shapes, circuit.device, part_dtype=circuit.dtype)
                for p, g in zip(params, totals):
                    p.grad = g.to(p.dtype, copy=True)  # the reducer reuses its buffer
                opt.step()
                ep.add(ll_sum, len(idx))
            history.append(ep.mean)
    finally:
        with torch.no_grad():
            install(track=False)
    return history
