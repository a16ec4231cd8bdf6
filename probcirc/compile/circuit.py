"""The compiled, layered tensor circuit: forward, backward (flows) and top-down passes."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from ..distribution import check_mask
from ..inputs import Bernoulli, Binomial, Categorical, Gaussian, InputDist
from ..layers import InputLayer, ProductLayer, SumLayer
from ..nodes import NodeGroup
from .layering import build_layers

FAMILIES: dict[str, type[InputDist]] = {c.__name__: c for c in (Categorical, Bernoulli, Binomial, Gaussian)}


class CompiledCircuit(nn.Module):
    """Layers over one flat, node-major buffer of log-values ``(num_slots, B)``.

    Parameters (sum weights and leaf parameters) are buffers in linear space;
    node values are in log space. Use :func:`probcirc.compile` to build one.
    """

    def __init__(self, layers: list, num_slots: int, num_vars: int):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.num_slots = num_slots
        self.num_vars = num_vars

    @classmethod
    def from_root(cls, root: NodeGroup, seed: int = 0, dtype: torch.dtype = torch.float32):
        if root.num_nodes != 1:
            raise ValueError(f"the root {root.name} must have exactly one node, it has {root.num_nodes}; add summate(root, num_nodes=1)")
        num_vars = max(root.scope) + 1
        if root.scope != frozenset(range(num_vars)):
            missing = sorted(set(range(num_vars)) - root.scope)[:5]
            raise ValueError(f"the root's scope must be variables 0..{num_vars - 1}; it lacks {missing}")
        layers, _, num_slots = build_layers(root, torch.Generator().manual_seed(seed), dtype)
        return cls(layers, num_slots, num_vars)

    # ------------------------------------------------------------ structure
    @property
    def input_layers(self) -> list[InputLayer]:
        return [layer for layer in self.layers if isinstance(layer, InputLayer)]

    @property
    def sum_layers(self) -> list[SumLayer]:
        return [layer for layer in self.layers if isinstance(layer, SumLayer)]

    @property
    def dtype(self) -> torch.dtype:
        return self.input_layers[0].params.dtype

    @property
    def device(self) -> torch.device:
        return self.input_layers[0].params.device

    @property
    def num_edges(self) -> int:
        sums = sum(int(l.edge_mask.sum()) if l.edge_mask is not None else l.weight.numel() for l in self.sum_layers)
        prods = sum(l.child_idx.numel() for l in self.layers if isinstance(l, ProductLayer))
        return sums + prods

    @property
    def num_parameters(self) -> int:
        return sum(l.weight.numel() for l in self.sum_layers) + sum(l.params.numel() for l in self.input_layers)

    # ------------------------------------------------------------- checking
    def prepare(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate a batch ``(B, num_vars)``; return it node-major ``(num_vars, B)`` as floats
        with missing entries zeroed, and the node-major missing mask."""
        x = torch.as_tensor(x, device=self.device)
        if x.dim() != 2 or x.shape[1] != self.num_vars:
            raise ValueError(f"x must have shape (batch, {self.num_vars}) for this circuit's {self.num_vars} variables, got {tuple(x.shape)}")
        mask = check_mask(x, mask)
        missing = torch.zeros_like(x, dtype=torch.bool) if mask is None else mask
        x = x.to(self.dtype).T.contiguous()
        missing = missing.T.contiguous()
        x.masked_fill_(missing, 0.0)
        for layer in self.input_layers:
            layer.check(x, missing)
        return x, missing

    # --------------------------------------------------------------- passes
    def forward_pass(self, x: torch.Tensor, missing: torch.Tensor, max_mode: bool = False) -> torch.Tensor:
        """Log-values of every node, ``(num_slots, B)``; the root is the last slot."""
        mars = torch.empty(self.num_slots, x.shape[1], dtype=self.dtype, device=self.device)
        mars[0] = 0.0
        for layer in self.layers:
            if isinstance(layer, InputLayer):
                layer(mars, x, missing, max_mode)
            else:
                layer(mars, max_mode)
        return mars

    def backward_pass(self, mars: torch.Tensor, root_flow: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Flows of every node ``(num_slots, B)`` and every sum layer's weight gradient.

        With ``root_flow = 1`` a node's flow is the posterior probability that it
        is part of the sample's induced tree, and ``weight · gradient`` are the
        expected edge counts EM needs. With ``root_flow`` set to an upstream
        gradient, the same pass gives the gradients of the log-likelihood.
        """
        flows = torch.zeros_like(mars)
        flows[-1] = root_flow
        grads: dict[int, torch.Tensor] = {}
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            if isinstance(layer, SumLayer):
                grads[i] = layer.backward(mars, flows)
            elif isinstance(layer, ProductLayer):
                layer.backward(mars, flows)
        return flows, [grads[i] for i in sorted(grads)]

    def down(self, mars: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, choose: str, generator=None) -> torch.Tensor:
        """Top-down pass from the root: pick children (``sample`` or ``argmax``) and fill missing values.

        Takes node-major ``x`` and ``missing`` from :meth:`prepare`; returns ``(B, num_vars)``.
        """
        active = torch.zeros(mars.shape, dtype=torch.bool, device=mars.device)
        active[-1] = True
        x = x.clone()
        for layer in reversed(self.layers):
            if isinstance(layer, InputLayer):
                layer.down(active, x, missing, choose, generator)
            else:
                layer.down(active, mars, choose, generator)
        return x.T.contiguous()

    # ------------------------------------------------------------------- io
    def _layer_state(self) -> tuple[dict, dict]:
        attrs = {"num_slots": self.num_slots, "num_vars": self.num_vars, "num_layers": len(self.layers)}
        arrays = {}
        for i, layer in enumerate(self.layers):
            p = f"layers/{i:05d}/"
            arrays[p + "start"] = layer.start
            if isinstance(layer, ProductLayer):
                arrays[p + "num_nodes"] = layer.num_nodes
            for name, buf in layer.named_buffers(recurse=False):
                if buf is not None:
                    arrays[p + name] = buf.detach().cpu().numpy()
            if isinstance(layer, InputLayer):
                key = layer.dist.key()
                arrays[p + "family"] = np.bytes_(key[0])
                arrays[p + "hyper"] = np.bytes_(json.dumps(list(key[1:])))
        return attrs, arrays

    @classmethod
    def _layers_from_state(cls, attrs: dict, arrays: dict) -> tuple[list, int, int]:
        layers = []
        for i in range(int(attrs["num_layers"])):
            p = f"layers/{i:05d}/"
            start = int(arrays[p + "start"])
            t = lambda k: torch.from_numpy(arrays[p + k])  # noqa: E731
            if p + "family" in arrays:
                name = bytes(arrays[p + "family"]).decode()
                if name not in FAMILIES:
                    raise ValueError(f"unknown input family {name!r}")
                hyper = json.loads(bytes(arrays[p + "hyper"]).decode())
                layers.append(InputLayer(FAMILIES[name](*hyper), t("node_var"), t("params"), start))
            elif p + "weight" in arrays:
                mask = t("edge_mask") if p + "edge_mask" in arrays else None
                layers.append(SumLayer(t("child_idx"), t("weight"), mask, start))
            else:
                layers.append(ProductLayer(t("parent_idx"), t("child_idx"), int(arrays[p + "num_nodes"]), start))
        return layers, int(attrs["num_slots"]), int(attrs["num_vars"])
