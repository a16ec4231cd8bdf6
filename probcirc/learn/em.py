"""Expectation-maximisation from circuit flows: mini-batch, then full-batch."""

from __future__ import annotations

import math

import torch

from ..compile import CompiledCircuit
from ..layers import Tape
from ._epoch import Epoch, check_data
from .distributed import CHUNK_SIZE, ChunkSum, chunk_rows


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
    chunk_size: int = CHUNK_SIZE,
    group=None,
    sum_pseudocount: float | None = None,
) -> list[float]:
    """Fit the circuit's parameters by EM; return the mean training log-likelihood of every epoch.

    Mini-batch epochs update after every batch, ``θ ← (1 - s)·θ + s·θ_new`` with
    ``θ_new = (F + α/|ch|) / (ΣF + α)`` from the batch's flows F. The sum
    layers' α is ``sum_pseudocount`` when given, else ``pseudocount`` (the
    leaves always take ``pseudocount``): a mini-batch shows each of a large
    circuit's sum nodes only a few samples' flow, and smoothing every update
    towards uniform weights costs likelihood there, while a leaf needs its α
    for the values the batch did not show. Full-batch
    epochs accumulate flows over the whole data set and update once (s = 1),
    which never lowers the training likelihood. Missing entries (``mask``
    True, or NaN in ``data``) are summed out, and their leaves receive their
    expected statistics, which is exact EM for missing data.

    The log-likelihood reported for an epoch is measured with the parameters
    in force while each batch was evaluated, so for full-batch epochs it is
    exactly the likelihood before that epoch's update.

    Each batch is computed in chunks of ``chunk_size`` rows whose statistics
    are added exactly (:mod:`probcirc.learn.distributed`). Inside a
    ``torch.distributed`` process group (``group``, default: the default group
    when one is initialised) every rank passes the same ``data`` and ``seed``,
    computes its share of the chunks, and all ranks apply the same update: the
    parameters are the same bytes for any number of ranks, this one included,
    given the same ``chunk_size`` and threads per rank.

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
    for name, alpha in (("pseudocount", pseudocount), ("sum_pseudocount", sum_pseudocount)):
        if alpha is not None and not alpha >= 0:
            raise ValueError(f"{name} must be >= 0, got {alpha}")
    alphas = (pseudocount if sum_pseudocount is None else sum_pseudocount, pseudocount)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = check_data(circuit, data)
    if mask is None and data.is_floating_point() and bool(torch.isnan(data).any()):
        mask = torch.isnan(data)
    gen = torch.Generator().manual_seed(seed)
    reducer, ws = ChunkSum(group), _Workspace()
    # One row fails early on shape errors and gives the statistics' and seen tables' shapes and dtypes
    # (a rank may get no chunk).
    like = _chunk_stats(circuit, data, mask, torch.arange(1, device=data.device))[1:]
    history: list[float] = []
    total = epochs + full_batch_epochs
    with torch.no_grad():
        for epoch in range(total):
            full = epoch >= epochs
            kind = "full" if full else "mini"
            acc: list[torch.Tensor] | None = None
            label = f"EM {kind} epoch {epoch + 1}/{total}"
            ep = Epoch(data, batch_size, label, gen, not full, progress and reducer.rank == 0, circuit.device)
            for idx in ep:
                # A mini-batch update converts the totals to the parameters' dtype: ask for it directly.
                dtype = torch.float64 if full else circuit.dtype
                totals, support, ll = _batch_stats(circuit, data, mask, idx, chunk_size, reducer, like, ws, dtype)
                if not full:
                    _update(circuit, totals, step_size, alphas, support)
                else:
                    if acc is None:
                        acc = [torch.zeros(t.shape, dtype=torch.float64, device=circuit.device) for t in like[0]]
                    for a, t, where in zip(acc, totals, support):
                        # float64, in batch order: the same on every rank (nothing to add outside a support)
                        if where is None:
                            a += t
                        else:
                            a.view(-1).index_add_(0, where, t.to(torch.float64))
                ep.add(ll, len(idx))
            if acc is not None:
                _update(circuit, acc, 1.0, alphas)
            history.append(ep.mean)
            if progress and reducer.rank == 0:
                bpd = -history[-1] / (circuit.num_vars * math.log(2))
                ep.bar.write(
                    f"epoch {epoch + 1}/{total} ({kind}-batch): train ll {history[-1]:.3f}, {bpd:.4f} bits/dim"
                )
    return history


def edge_flows(
    circuit: CompiledCircuit,
    data: torch.Tensor,
    batch_size: int = 512,
    mask: torch.Tensor | None = None,
    chunk_size: int = CHUNK_SIZE,
    group=None,
) -> list[torch.Tensor]:
    """Expected edge counts of every sum layer over ``data`` (EM's E-step, no update), float64.

    One tensor per sum layer, shaped like its ``weight``: entry ``[g, o, i]``
    is the summed flow of the edge from node ``o`` of group ``g`` to its
    child ``i``, added exactly as in :func:`em` (the same bytes on any number
    of ranks).

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Bernoulli
        >>> leaves = inputs(0, 2, Bernoulli(), params=torch.tensor([[0.0], [1.0]]))
        >>> pc = probcirc.compile(summate(leaves, num_nodes=1, params=torch.tensor([[0.5, 0.5]])))
        >>> edge_flows(pc, torch.tensor([[1.0]] * 3 + [[0.0]]))[0].flatten().tolist()
        [1.0, 3.0]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = check_data(circuit, data)
    if mask is None and data.is_floating_point() and bool(torch.isnan(data).any()):
        mask = torch.isnan(data)
    reducer, ws = ChunkSum(group), _Workspace()
    like = _chunk_stats(circuit, data, mask, torch.arange(1, device=data.device))[1:]
    n_sums = len(circuit._sum_layers)
    total: list[torch.Tensor] | None = None
    with torch.no_grad():
        for s in range(0, len(data), batch_size):
            idx = torch.arange(s, min(s + batch_size, len(data)), device=data.device)
            flows = _batch_stats(circuit, data, mask, idx, chunk_size, reducer, like, ws)[0][:n_sums]
            total = (
                [f.to(torch.float64, copy=True) for f in flows]
                if total is None
                else [a + f for a, f in zip(total, flows)]
            )
    assert total is not None
    return total


def _batch_stats(
    circuit, data, mask, idx, chunk_size, reducer, like, ws, dtype=torch.float64
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], torch.Tensor]:
    """The batch ``idx``'s EM statistics, their supports and its summed log-likelihood, all ranks.

    The statistics are :meth:`ChunkSum.run`'s totals, in ``dtype``; a categorical layer's come as
    the vector of the entries in its support (flat indices, ``None`` for a dense total). ``like``
    is a one-row chunk's statistics and seen tables (their shapes and dtypes).
    """
    like_stats, like_seen = like
    chunks = chunk_rows(idx, chunk_size)
    parts, lls = {}, {}
    # Each chunk finds the values its samples show (the leaves' seen tables, from the node-major
    # values its pass prepares anyway); their OR over every chunk of every rank is the batch's, the
    # same for any number of ranks and chunks, so every run takes the same update path.
    seen = [t if t is None else torch.zeros_like(t) for t in like_seen]
    for c in reducer.mine(len(chunks)):
        lls[c], parts[c], chunk_seen = _chunk_stats(circuit, data, mask, chunks[c], ws)
        seen = [a if a is None or b is None else a.logical_or_(b) for a, b in zip(seen, chunk_seen)]
    union = iter(reducer.any([t for t in seen if t is not None]))
    support = [None] * len(circuit._sum_layers) + [
        None if t is None else layer.support_of(next(union)) for layer, t in zip(circuit._input_layers, seen)
    ]
    shapes = [t.shape for t in like_stats]
    totals, ll = reducer.run(parts, lls, len(chunks), shapes, circuit.device, support, dtype, True, like_stats[0].dtype)
    return totals, support, ll


class _Workspace:
    """The node values and flows of a chunk, in two buffers, and the sum layers' tape, kept from chunk to chunk.

    Fresh ``slots x rows`` tensors every chunk (hundreds of MiB for MNIST-sized
    circuits) are mapped anew by the allocator and page-faulted in, which cost
    as much as a quarter of an EM step on CPU. A shorter last chunk uses the
    front of the buffers, which is contiguous.
    """

    def __init__(self) -> None:
        self._bufs: dict[str, torch.Tensor] = {}
        self.tape = Tape()

    def take(self, name: str, circuit: CompiledCircuit, rows: int) -> torch.Tensor:
        size = circuit._num_slots * rows
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < size or buf.dtype != circuit.dtype or buf.device != circuit.device:
            buf = self._bufs[name] = torch.empty(size, dtype=circuit.dtype, device=circuit.device)
        return buf[:size].view(circuit._num_slots, rows)


def _chunk_stats(
    circuit: CompiledCircuit, data, mask, rows: torch.Tensor, ws: _Workspace | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """The summed log-likelihood (float64), the EM statistics and the leaves' seen tables of the samples ``rows``."""
    x, missing = circuit._prepare(data[rows], None if mask is None else mask[rows])
    ws = ws or _Workspace()
    mars = circuit._forward_pass(x, missing, out=ws.take("mars", circuit, len(rows)), tape=ws.tape)
    root = mars[-1]
    flows, grads = circuit._backward_pass(
        mars, torch.ones_like(root), out=ws.take("flows", circuit, len(rows)), tape=ws.tape
    )
    edge_flows = [g.mul_(layer.weight) for layer, g in zip(circuit._sum_layers, grads)]  # g is ours: in place
    stats = [layer.em_stats(flows, x, missing) for layer in circuit._input_layers]
    seen = [layer.stat_seen(x, missing) for layer in circuit._input_layers]
    return root.sum(dtype=torch.float64), edge_flows + stats, seen


def _update(
    circuit: CompiledCircuit,
    totals: list[torch.Tensor],
    step_size: float,
    alphas: tuple[float, float],
    support: list[torch.Tensor | None] | None = None,
) -> None:
    """Apply the M-step to every layer; ``alphas`` are the sum layers' and the leaves' pseudocounts."""
    sums = circuit._sum_layers
    support = support or [None] * len(totals)
    for layer, f in zip(sums, totals):
        # The totals are this batch's temporaries (or a finished epoch's sums): used up in place.
        layer.em_update(f.to(layer.weight.dtype), step_size, alphas[0], owned=True)
    for leaves, s, where in zip(circuit._input_layers, totals[len(sums) :], support[len(sums) :]):
        leaves.em_update(s, step_size, alphas[1], support=where)
