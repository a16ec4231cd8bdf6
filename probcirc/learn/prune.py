"""Structure learning by pruning and growing (Dang, Liu and Van den Broeck, "Sparse PCs", 2022).

:func:`prune` removes the sum edges that carry the least flow (the expected
number of samples that use them) and :func:`grow` copies every node, with
noise on the copies' parameters; :func:`prune_grow` alternates them with EM.

How pruning is represented in the layered engine: a pruned edge is switched
off in its sum layer's ``edge_mask`` and its weight is set to zero; the node's
other weights are renormalised. EM honours the mask (the pseudocount is
spread over live edges only), so a pruned edge never comes back, and the mask
is saved with the model. The layer keeps its dense ``(G, n_out, n_in)``
shape, so pruning alone does not make the forward pass cheaper: it frees the
budget that :func:`grow` spends (prune 75 %, grow x2 gives back the edge
count). Both keep smoothness and decomposability: pruning only removes sum
edges, and a grown product's copy c multiplies copy c of each child.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from probmod.errors import UsageError

from ..compile import CompiledCircuit
from ..compile.graph import INPUT, PRODUCT
from ..layers import InputLayer, ProductLayer, SumLayer
from .em import edge_flows, em

C = TypeVar("C", bound=CompiledCircuit)

__all__ = ["check_structure", "grow", "prune", "prune_grow"]


def prune(
    circuit: C,
    data: torch.Tensor,
    fraction: float,
    batch_size: int = 512,
    mask: torch.Tensor | None = None,
    check: bool = True,
) -> C:
    """A copy of ``circuit`` without the ``fraction`` of its live sum edges that carry the least flow on ``data``.

    Flows are summed over ``data`` in one pass (EM's E-step,
    :func:`~probcirc.learn.em.edge_flows`) and ranked across all sum layers.
    Every sum node keeps its edge of largest flow, so fewer edges than asked
    may go when nodes have few. ``fraction = 0`` returns an exact copy.
    With ``check``, smoothness, decomposability and normalisation are
    verified afterwards (:func:`check_structure`).

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Bernoulli
        >>> leaves = inputs(0, 4, Bernoulli(), params=torch.tensor([[0.1], [0.2], [0.8], [0.9]]))
        >>> pc = probcirc.compile(summate(leaves, num_nodes=1, params=torch.full((1, 4), 0.25)), dtype=torch.float64)
        >>> pruned = prune(pc, torch.ones(10, 1), 0.5)      # the two leaves that explain x=1 worst go
        >>> pruned.graph().weight.tolist(), pruned.num_edges
        ([0.5, 0.5], 2)
    """
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise UsageError(f"fraction must be in [0, 1), got {fraction!r}")
    new = copy.deepcopy(circuit)
    if fraction == 0:
        return new
    flows = edge_flows(circuit, data, batch_size, mask)
    layers = new._sum_layers
    live = [_live(layer) for layer in layers]
    ranks = []
    for f, m in zip(flows, live):
        r = torch.where(m, f.double(), torch.full_like(f, math.inf, dtype=torch.float64))
        best = r.masked_fill(~m, -math.inf).argmax(-1, keepdim=True)
        ranks.append(r.scatter(-1, best, math.inf).flatten())  # a node's best edge is never cut
    rank = torch.cat(ranks)
    n_cut = min(int(fraction * int(sum(int(m.sum()) for m in live))), int(torch.isfinite(rank).sum()))
    cut = torch.zeros_like(rank, dtype=torch.bool)
    cut[torch.argsort(rank, stable=True)[:n_cut]] = True
    offset = 0
    with torch.no_grad():
        for layer, m in zip(layers, live):
            keep = m & ~cut[offset : offset + m.numel()].view(m.shape)
            offset += m.numel()
            w = layer.weight.double() * keep
            layer.weight.copy_(w / w.sum(-1, keepdim=True))
            layer.edge_mask = keep
    if check:
        check_structure(new)
    return new


def grow(
    circuit: C,
    factor: int = 2,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    check: bool = True,
) -> C:
    """A circuit with ``factor`` copies of every node but the root, parameters perturbed by ``noise``.

    Copy c of a product multiplies copy c of each child (so it stays
    decomposable); each copy of a sum node mixes every copy of its children
    with the original weight divided by ``factor``, and the root mixes every
    copy of its children the same way. Each copied parameter is then
    multiplied by ``exp(noise · z)``, z standard normal drawn from
    ``generator`` (leaves: in their unconstrained form, e.g. log-probabilities
    for categorical leaves), and renormalised. With ``noise = 0`` every
    likelihood is unchanged (up to rounding). Sum layers grow ``factor²`` in
    edges, the other layers ``factor`` in nodes.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Bernoulli
        >>> pc = probcirc.compile(summate(multiply(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli())),
        ...                                num_nodes=1), dtype=torch.float64)
        >>> big = grow(pc, factor=2)
        >>> big.num_nodes, pc.num_nodes
        (13, 7)
        >>> x = torch.tensor([[0, 1], [1, 1]])
        >>> torch.allclose(big.log_prob(x), pc.log_prob(x))
        True
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise UsageError(f"factor must be an integer >= 1, got {factor!r}")
    if not isinstance(noise, (int, float)) or not 0 <= noise < math.inf:
        raise UsageError(f"noise must be a finite number >= 0, got {noise!r}")
    root = circuit.layers[-1]
    if not isinstance(root, SumLayer) or root.stop - root.start != 1:
        raise UsageError("grow needs a circuit whose root is a single sum node; add summate(root, num_nodes=1)")
    f, dev = int(factor), circuit.device
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    copies = torch.zeros(circuit._num_slots, f, dtype=torch.long)  # new slots of every old slot's copies
    layers: list = []
    cursor = 1
    for layer in circuit.layers:
        n = int(layer.stop - layer.start)  # type: ignore[operator]  # ModuleList hides the layer types
        size = 1 if layer is root else n * f
        copies[layer.start : layer.stop] = cursor + torch.arange(n * f).view(n, f)
        layers.append(_grown(layer, copies.to(dev), cursor, f, noise, gen, layer is root))
        cursor += size
    new = type(circuit)(layers, cursor, circuit.num_vars)
    if check:
        check_structure(new)
    return new


def _grown(layer, copies: torch.Tensor, start: int, f: int, noise: float, gen: torch.Generator, is_root: bool):
    """One layer of :func:`grow`: node j becomes nodes ``j·f .. j·f + f - 1``, starting at ``start``."""
    if isinstance(layer, InputLayer):
        params = layer.params.repeat_interleave(f, 0)
        if noise:
            free = layer.dist.to_unconstrained(params.double())
            params = layer.dist.from_unconstrained(free + noise * _normal(free, gen)).to(params.dtype)
        return InputLayer(layer.dist, layer.node_var.repeat_interleave(f), params, start)
    if isinstance(layer, ProductLayer):
        parent = (layer.parent_idx[:, None] * f + torch.arange(f, device=copies.device)).flatten()
        return ProductLayer(parent, copies[layer.child_idx].flatten(), layer.num_nodes * f, start)
    g, n_out, n_in = layer.weight.shape
    out = 1 if is_root else f
    child_idx = copies[layer.child_idx].reshape(g, n_in * f)
    mask = None if layer.edge_mask is None else layer.edge_mask.repeat_interleave(out, 1).repeat_interleave(f, 2)
    w = layer.weight.double().repeat_interleave(out, 1).repeat_interleave(f, 2)
    if noise:
        w = w * (noise * _normal(w, gen)).exp()
    w = w / w.sum(-1, keepdim=True)
    return SumLayer(child_idx, w.to(layer.weight.dtype), mask, start)


def _normal(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Standard normal draws shaped like ``like``, drawn on the CPU so one seed gives one circuit anywhere."""
    return torch.randn(like.shape, generator=gen, dtype=torch.float64, device="cpu").to(like.device)


def _live(layer: SumLayer) -> torch.Tensor:
    if layer.edge_mask is None:
        return torch.ones_like(layer.weight, dtype=torch.bool)
    return layer.edge_mask.bool()


def check_structure(circuit: CompiledCircuit, atol: float = 1e-5) -> None:
    """Raise ValueError unless every sum is smooth and normalised and every product decomposable.

    Scopes are computed bottom-up over :meth:`~probcirc.compile.CompiledCircuit.graph` as
    integer bit sets; the root must cover every variable. About a second per million edges.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Bernoulli
        >>> check_structure(probcirc.compile(summate(multiply(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli())),
        ...                                          num_nodes=1)))
    """
    g = circuit.graph()
    kind, ptr = g.kind.cpu().numpy(), g.child_ptr.cpu().tolist()
    child, var = g.child.cpu().tolist(), g.var.cpu().tolist()
    weight = g.weight.double().cpu()
    totals = torch.zeros(g.num_nodes, dtype=torch.float64).index_add_(
        0, torch.repeat_interleave(torch.arange(g.num_nodes), torch.diff(g.child_ptr.cpu())), weight
    )
    scope = [0] * g.num_nodes
    for v in range(g.num_nodes):
        kids = child[ptr[v] : ptr[v + 1]]
        if kind[v] == INPUT:
            scope[v] = 1 << var[v]
        elif not kids:
            raise ValueError(f"node {v} has no children")
        elif kind[v] == PRODUCT:
            acc = 0
            for c in kids:
                if acc & scope[c]:
                    raise ValueError(f"product node {v} is not decomposable: its children's scopes overlap")
                acc |= scope[c]
            scope[v] = acc
        else:
            scope[v] = scope[kids[0]]
            if any(scope[c] != scope[v] for c in kids):
                raise ValueError(f"sum node {v} is not smooth: its children have different scopes")
            if abs(float(totals[v]) - 1.0) > atol:
                raise ValueError(f"sum node {v}'s weights sum to {float(totals[v]):.6g}, not 1")
    if scope[-1] != (1 << g.num_vars) - 1:
        raise ValueError("the root does not cover every variable")


def prune_grow(
    circuit: C,
    data: torch.Tensor,
    rounds: int = 1,
    fraction: float = 0.75,
    factor: int = 2,
    noise: float = 0.1,
    epochs: int = 1,
    full_batch_epochs: int = 0,
    batch_size: int = 512,
    step_size: float = 0.1,
    pseudocount: float = 0.1,
    generator: torch.Generator | None = None,
    callback: Callable[[int, C, list[float]], None] | None = None,
) -> C:
    """Alternate structure learning with EM: ``rounds`` times prune, grow, then EM epochs.

    Each round prunes ``fraction`` of the live sum edges by flow on ``data``,
    grows every node ``factor`` times with ``noise``, then runs ``epochs``
    mini-batch and ``full_batch_epochs`` full-batch EM epochs (see
    :func:`~probcirc.learn.em`), seeded by the round. ``callback(round, circuit,
    history)`` is called after each round's EM (for evaluation). Returns the
    final circuit; ``circuit`` itself is not changed. In this engine a round
    of prune 75 % and grow x2 keeps the live edge count but multiplies the
    dense layers' compute by ``factor²`` (see the module notes).

    Example:
        >>> import torch, probcirc
        >>> from probcirc.structures import HCLT
        >>> data = torch.randint(0, 2, (64, 4))
        >>> pc = probcirc.compile(HCLT(data, num_latents=2), dtype=torch.float64)
        >>> big = prune_grow(pc, data, rounds=1, fraction=0.5, generator=torch.Generator().manual_seed(0))
        >>> big.num_nodes > pc.num_nodes
        True
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise UsageError(f"rounds must be an integer >= 0, got {rounds!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    for r in range(rounds):
        circuit = grow(prune(circuit, data, fraction, batch_size), factor, noise, generator=gen)
        seed = int(torch.randint(0, 2**31 - 1, (), generator=gen))
        history = em(
            circuit,
            data,
            epochs=epochs,
            full_batch_epochs=full_batch_epochs,
            batch_size=batch_size,
            step_size=step_size,
            pseudocount=pseudocount,
            seed=seed,
        )
        if callback is not None:
            callback(r, circuit, history)
    return circuit
