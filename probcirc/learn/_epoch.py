"""One pass over a data set in mini-batches, shared by EM and SGD."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from probmod.errors import UsageError
from probmod.progress import Progress

from ..compile import CompiledCircuit


def check_data(circuit: CompiledCircuit, data: torch.Tensor) -> torch.Tensor:
    """``data`` as a non-empty 2-D tensor, left where it is (batches move to the circuit, not the whole set)."""
    data = data if isinstance(data, torch.Tensor) else torch.as_tensor(data, device="cpu")
    if data.dim() != 2 or len(data) == 0:
        raise UsageError(f"data must be a non-empty (samples, {circuit.num_vars}) batch, got shape {tuple(data.shape)}")
    return data


class Epoch:
    """Row indices of ``data`` batch by batch, with the running mean log-likelihood on a progress bar.

    The order is a permutation drawn from ``gen`` (``shuffle=False``: the rows
    in order, drawing nothing), always on the CPU so that one seed gives one
    order whatever the devices.

    Example:
        >>> import torch
        >>> ep = Epoch(torch.zeros(5, 1), 2, "demo", torch.Generator().manual_seed(0), shuffle=False)
        >>> [idx.tolist() for idx in ep]
        [[0, 1], [2, 3], [4]]
        >>> ep.add(torch.tensor(-3.0), 3); ep.mean
        -1.0
    """

    def __init__(
        self,
        data: torch.Tensor,
        batch_size: int,
        label: str,
        gen: torch.Generator,
        shuffle: bool = True,
        progress: bool = False,
        device: torch.device | str = "cpu",
    ):
        n = len(data)
        order = torch.randperm(n, generator=gen, device="cpu") if shuffle else torch.arange(n, device="cpu")
        self.order = order.to(data.device)
        self.batch_size = batch_size
        self.ll_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.seen = 0
        self.progress = progress
        self.bar = Progress(n, label, "samples", enabled=progress)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for s in range(0, len(self.order), self.batch_size):
            yield self.order[s : s + self.batch_size]
        self.bar.close()

    def add(self, ll_sum: torch.Tensor, n: int) -> None:
        """Count a batch of ``n`` samples whose log-likelihoods sum to ``ll_sum``."""
        self.ll_sum += ll_sum  # a tensor: float() here would stall a GPU every batch
        self.seen += n
        self.bar.update(n)
        if self.progress:
            self.bar.set_postfix(f"ll={self.mean:.3f}")

    @property
    def mean(self) -> float:
        """The mean log-likelihood of the samples counted so far."""
        return float(self.ll_sum) / max(self.seen, 1)
