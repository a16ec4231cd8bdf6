"""The compiled, layered tensor circuit: forward, backward (flows) and top-down passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import backend
from ..distribution import check_mask
from ..inputs import Bernoulli, Binomial, Categorical, Gaussian, InputDist
from ..layers import InputLayer, ProductLayer, SumLayer, Tape
from ..nodes import NodeGroup
from .graph import INPUT, PRODUCT, SUM, CircuitGraph, LeafGroup, LeafPass
from .layering import build_layers
from .state import layers_from_state

FAMILIES: dict[str, type[InputDist]] = {c.__name__: c for c in (Categorical, Bernoulli, Binomial, Gaussian)}


class CompiledCircuit(nn.Module):
    """Layers over one flat, node-major buffer of log-values ``(num_slots, B)``.

    Parameters (sum weights and leaf parameters) are buffers in linear space;
    node values are in log space. Use :func:`probcirc.compile` to build one.
    """

    def __init__(self, layers: list, num_slots: int, num_vars: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self._num_slots = num_slots
        self.num_vars = num_vars
        # Found once here, not during a pass (a GPU would stall on the count).
        self._one_parent_each = _one_parent_each(self.layers, num_slots)

    @classmethod
    def from_root(cls, root: NodeGroup, seed: int = 0, dtype: torch.dtype = torch.float32):
        if root.num_nodes != 1:
            raise ValueError(
                f"the root {root.name} must have exactly one node, it has {root.num_nodes}; "
                "add summate(root, num_nodes=1)"
            )
        num_vars = max(root.scope) + 1
        if root.scope != frozenset(range(num_vars)):
            missing = sorted(set(range(num_vars)) - root.scope)[:5]
            raise ValueError(f"the root's scope must be variables 0..{num_vars - 1}; it lacks {missing}")
        layers, _, num_slots = build_layers(root, torch.Generator().manual_seed(seed), dtype)
        return cls(layers, num_slots, num_vars)

    # ------------------------------------------------------------ structure
    # Layers, slots and buffers are the engine's business: applications use
    # graph(), leaf_groups and forward_with_leaves(), which hide the layout.
    @property
    def _input_layers(self) -> list[InputLayer]:
        return [layer for layer in self.layers if isinstance(layer, InputLayer)]

    @property
    def _sum_layers(self) -> list[SumLayer]:
        return [layer for layer in self.layers if isinstance(layer, SumLayer)]

    @property
    def dtype(self) -> torch.dtype:
        return self._input_layers[0].params.dtype

    @property
    def device(self) -> torch.device:
        return self._input_layers[0].params.device

    @property
    def num_nodes(self) -> int:
        """Number of nodes (inputs, products and sums)."""
        return self._num_slots - 1

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_edges(self) -> int:
        sums = sum(int(l.edge_mask.sum()) if l.edge_mask is not None else l.weight.numel() for l in self._sum_layers)
        prods = sum(l.child_idx.numel() for l in self.layers if isinstance(l, ProductLayer))
        return sums + prods

    @property
    def num_parameters(self) -> int:
        return sum(l.weight.numel() for l in self._sum_layers) + sum(l.params.numel() for l in self._input_layers)

    @property
    def leaf_groups(self) -> tuple[LeafGroup, ...]:
        """The input nodes grouped by leaf family (see :class:`~probcirc.compile.graph.LeafGroup`)."""
        return tuple(
            LeafGroup(l.dist, torch.arange(l.start - 1, l.stop - 1, device=l.node_var.device), l.node_var, l.params)
            for l in self._input_layers
        )

    def graph(self) -> CircuitGraph:
        """The circuit as plain nodes and weighted edges (see :class:`~probcirc.compile.graph.CircuitGraph`).

        Example:
            >>> import torch, probcirc
            >>> from probcirc.nodes import inputs, summate
            >>> from probcirc.inputs import Bernoulli
            >>> pc = probcirc.compile(
            ...     summate(inputs(0, 2, Bernoulli()), num_nodes=1, params=torch.tensor([[0.25, 0.75]]))
            ... )
            >>> g = pc.graph()
            >>> g.num_nodes, g.children(2).tolist(), g.weight.tolist()
            (3, [0, 1], [0.25, 0.75])
        """
        dev, n = self.device, self.num_nodes
        kind = torch.zeros(n, dtype=torch.int8, device=dev)
        var = torch.full((n,), -1, dtype=torch.long, device=dev)
        parents, kids, weights = [], [], []
        for layer in self.layers:
            # node id = slot - 1: slot 0 is the engine's constant
            if isinstance(layer, InputLayer):
                kind[layer.start - 1 : layer.stop - 1] = INPUT
                var[layer.start - 1 : layer.stop - 1] = layer.node_var
            elif isinstance(layer, ProductLayer):
                kind[layer.start - 1 : layer.stop - 1] = PRODUCT
                parents.append(layer.parent_idx + layer.start - 1)
                kids.append(layer.child_idx - 1)
                weights.append(torch.ones(layer.child_idx.numel(), dtype=self.dtype, device=dev))
            else:
                assert isinstance(layer, SumLayer)  # the only other kind of layer
                g, n_out, n_in = layer.weight.shape
                kind[layer.start - 1 : layer.stop - 1] = SUM
                node = (layer.start - 1 + torch.arange(g * n_out, device=dev)).view(g, n_out, 1).expand(g, n_out, n_in)
                child = (layer.child_idx - 1).view(g, 1, n_in).expand(g, n_out, n_in)
                keep = (
                    layer.weight.new_ones(layer.weight.shape, dtype=torch.bool)
                    if layer.edge_mask is None
                    else layer.edge_mask.bool()
                )
                parents.append(node[keep])
                kids.append(child[keep])
                weights.append(layer.weight.detach()[keep])
        ep, ec, ew = (
            torch.cat(t) if t else torch.zeros(0, dtype=d, device=dev)
            for t, d in ((parents, torch.long), (kids, torch.long), (weights, self.dtype))
        )
        order = torch.sort(ep, stable=True).indices  # grouped by parent, each in its layer's edge order
        child_ptr = torch.zeros(n + 1, dtype=torch.long, device=dev)
        child_ptr[1:] = torch.cumsum(torch.bincount(ep, minlength=n), 0)
        return CircuitGraph(kind, child_ptr, ec[order], ew[order], var, self.leaf_groups, self.num_vars)

    # ------------------------------------------------------------- checking
    def _prepare(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a batch ``(B, num_vars)``; return it node-major ``(num_vars, B)`` as floats
        with missing entries zeroed, and the node-major missing mask."""
        x = torch.as_tensor(x, device=self.device)
        if x.dim() != 2 or x.shape[1] != self.num_vars:
            raise ValueError(
                f"x must have shape (batch, {self.num_vars}) for this circuit's {self.num_vars} variables, "
                f"got {tuple(x.shape)}"
            )
        mask = check_mask(x, mask)
        missing = torch.zeros_like(x, dtype=torch.bool) if mask is None else mask
        x = x.to(self.dtype).T.contiguous()
        missing = missing.T.contiguous()
        x.masked_fill_(missing, 0.0)
        for layer in self._input_layers:
            layer.check(x, missing)
        return x, missing

    # --------------------------------------------------------------- passes
    def forward_with_leaves(
        self,
        leaf_fn: Callable[[LeafGroup], torch.Tensor | None],
        x: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        flows: bool = False,
    ) -> LeafPass:
        """One upward pass with leaf log-values supplied by ``leaf_fn``; optionally the leaves' flows.

        ``leaf_fn(group)`` gets each :class:`~probcirc.compile.graph.LeafGroup` in
        turn and returns the log-values of its nodes, ``(n, B)`` in the group's
        order, or ``None`` to evaluate them at the evidence ``x`` (with ``mask``)
        as :meth:`log_prob` would. Soft evidence, virtual evidence and the codec
        plug in here; everything above the leaves is the engine's own pass.

        Example:
            >>> import torch, probcirc
            >>> from probcirc.nodes import inputs, summate
            >>> from probcirc.inputs import Bernoulli
            >>> mix = summate(inputs(0, 2, Bernoulli()), num_nodes=1, params=torch.tensor([[0.25, 0.75]]))
            >>> every_leaf_one = lambda group: torch.zeros(len(group.nodes), 1)
            >>> out = probcirc.compile(mix).forward_with_leaves(every_leaf_one, flows=True)
            >>> out.log_value, out.leaf_flows[0].flatten()
            (tensor([0.]), tensor([0.2500, 0.7500]))
        """
        if x is not None:
            x, missing = self._prepare(x, mask)
        values = [leaf_fn(g) for g in self.leaf_groups]
        given = [v for v in values if v is not None]
        if x is None and len(given) < len(values):
            raise ValueError("leaf_fn returned None for a leaf group, so x (the evidence to evaluate it at) is needed")
        b = x.shape[1] if x is not None else given[0].shape[-1]
        mars = torch.empty(self._num_slots, b, dtype=self.dtype, device=self.device)
        mars[0] = 0.0
        inputs = iter(values)
        for layer in self.layers:
            if not isinstance(layer, InputLayer):
                layer(mars)
                continue
            v = next(inputs)
            if v is None:
                layer(mars, x, missing)
            elif tuple(v.shape) != (layer.stop - layer.start, b):
                raise ValueError(
                    f"leaf_fn must return ({layer.stop - layer.start}, {b}) log-values "
                    f"for {layer.dist!r}, got {tuple(v.shape)}"
                )
            else:
                mars[layer.start : layer.stop] = v
        if not flows:
            return LeafPass(mars[-1].clone())
        f, _ = self._backward_pass(mars, torch.ones(b, dtype=self.dtype, device=self.device))
        return LeafPass(mars[-1].clone(), tuple(f[l.start : l.stop] for l in self._input_layers))

    def _forward_pass(
        self,
        x: torch.Tensor,
        missing: torch.Tensor,
        max_mode: bool = False,
        out: torch.Tensor | None = None,
        tape: Tape | None = None,
    ) -> torch.Tensor:
        """Log-values of every node, ``(num_slots, B)``; the root is the last slot.

        ``out`` (contiguous, ``(num_slots, B)``) receives them instead of fresh memory: a training
        loop passes the same buffer every batch, since freshly mapped pages cost a page fault each.
        A ``tape`` keeps what the sum layers' backward pass would recompute (pass it on to
        :meth:`_backward_pass`).
        """
        mars = torch.empty(self._num_slots, x.shape[1], dtype=self.dtype, device=self.device) if out is None else out
        mars[0] = 0.0
        if x.shape[1] == 0:  # an empty batch: nothing to compute (and no kernel launch on 0 columns)
            return mars
        if tape is not None and not max_mode:
            tape.start(sum(l.tape_numel(x.shape[1]) for l in self._sum_layers), self.dtype, self.device)
        for layer in self.layers:
            if isinstance(layer, InputLayer):
                layer(mars, x, missing, max_mode)
            elif isinstance(layer, SumLayer) and tape is not None:
                layer(mars, max_mode, tape)
            else:
                layer(mars, max_mode)
        return mars

    def _backward_pass(
        self, mars: torch.Tensor, root_flow: torch.Tensor, out: torch.Tensor | None = None, tape: Tape | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Flows of every node ``(num_slots, B)`` and every sum layer's weight gradient.

        With ``root_flow = 1`` a node's flow is the posterior probability that it
        is part of the sample's induced tree, and ``weight · gradient`` are the
        expected edge counts EM needs. With ``root_flow`` set to an upstream
        gradient, the same pass gives the gradients of the log-likelihood.
        ``out`` (shaped like ``mars``) is zeroed and receives the flows, as in :meth:`_forward_pass`,
        and ``tape`` is the one the forward pass filled (its contents are used up).
        """
        # When every node has one parent edge, each flow is written once, by its parent, before it is
        # read: written rather than added to zeros, the slots-by-batch buffer need not be zeroed first.
        write = mars.shape[1] > 0 and not backend.use_triton(mars) and self._one_parent_each
        if out is None:
            flows = torch.empty_like(mars) if write else torch.zeros_like(mars)
        else:
            flows = out if write else out.zero_()
        flows[0] = 0.0  # the constant slot: nobody's child
        flows[-1] = root_flow
        if mars.shape[1] == 0:
            return flows, [torch.zeros_like(l.weight) for l in self._sum_layers]
        grads: dict[int, torch.Tensor] = {}
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if isinstance(layer, SumLayer):
                grads[i] = layer.backward(mars, flows, tape, write)
            elif isinstance(layer, ProductLayer):
                layer.backward(mars, flows, write)
        return flows, [grads[i] for i in sorted(grads)]

    def _down(
        self, mars: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, choose: str, generator=None
    ) -> torch.Tensor:
        """Top-down pass from the root: pick children (``sample`` or ``argmax``) and fill missing values.

        Takes node-major ``x`` and ``missing`` from :meth:`_prepare`; returns ``(B, num_vars)``.
        """
        active = torch.zeros(mars.shape, dtype=torch.bool, device=mars.device)
        active[-1] = True
        x = x.clone()
        if x.shape[1] == 0:
            return x.T.contiguous()
        for layer in reversed(self.layers):
            if isinstance(layer, InputLayer):
                layer.down(active, x, missing, choose, generator)
            else:
                assert isinstance(layer, (ProductLayer, SumLayer))
                layer.down(active, mars, choose, generator)
        return x.T.contiguous()

    # ------------------------------------------------------------------- io
    def _layer_state(self) -> tuple[dict, dict]:
        attrs = {"num_slots": self._num_slots, "num_vars": self.num_vars, "num_layers": len(self.layers)}
        arrays: dict[str, Any] = {}
        for i, layer in enumerate(self.layers):
            p = f"layers/{i:05d}/"
            arrays[p + "start"] = layer.start
            if isinstance(layer, ProductLayer):
                arrays[p + "num_nodes"] = layer.num_nodes
            # state_dict: the persistent buffers only (the layers' derived index lists are rebuilt on load).
            for name, buf in layer.state_dict(keep_vars=True).items():
                arrays[p + name] = buf.detach().cpu().numpy()
            if isinstance(layer, InputLayer):
                key = layer.dist.key()
                arrays[p + "family"] = np.bytes_(key[0])
                arrays[p + "hyper"] = np.bytes_(json.dumps(list(key[1:])))
        return attrs, arrays

    @classmethod
    def _layers_from_state(cls, attrs: dict, arrays: dict) -> tuple[list, int, int]:
        return layers_from_state(attrs, arrays, FAMILIES)


def _one_parent_each(layers, num_slots: int) -> bool:
    """Whether every slot but the constant one and the root is the child of exactly one edge list entry."""
    count = torch.zeros(num_slots, dtype=torch.long, device="cpu")
    for layer in layers:
        if isinstance(layer, (SumLayer, ProductLayer)):
            children = layer.child_idx.reshape(-1).cpu()
            count.index_add_(0, children, torch.ones_like(children))
    return bool((count[1:-1] == 1).all()) and int(count[0]) == int(count[-1]) == 0
