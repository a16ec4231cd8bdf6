"""Rebuilding a compiled circuit's layers from stored arrays, checked before anything is allocated.

A model file is untrusted input: every declared size (the number of layers,
nodes and variables) must agree with the arrays actually stored, and every
index must point at a node computed earlier, or loading fails with a
:class:`~probmod.errors.FormatError` instead of allocating what a few bytes
declare or reading out of bounds later.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from probmod.errors import FormatError

from ..inputs import InputDist
from ..layers import InputLayer, ProductLayer, SumLayer


def layers_from_state(attrs: dict, arrays: dict, families: dict[str, type[InputDist]]) -> tuple[list, int, int]:
    """Return ``(layers, num_slots, num_vars)`` from :meth:`CompiledCircuit._layer_state`'s output.

    Raises:
        FormatError: if a declared size disagrees with the stored arrays, an index is out of
            range or not topological, or a field has the wrong shape or dtype.
    """
    num_layers = _count(attrs, "num_layers")
    stored = {k.split("/")[1] for k in arrays if k.startswith("layers/") and k.count("/") >= 2}
    if num_layers != len(stored) or num_layers == 0:
        raise FormatError(f"the file declares {num_layers} layers but stores {len(stored)}")
    num_vars = _count(attrs, "num_vars")
    layers, next_slot = [], 1
    for i in range(num_layers):
        p = f"layers/{i:05d}/"
        start = _scalar(arrays, p + "start")
        if start != next_slot:
            raise FormatError(f"layer {i} starts at node {start}, expected {next_slot}: the layers must be contiguous")
        if p + "family" in arrays:
            layer: InputLayer | SumLayer | ProductLayer = _input_layer(arrays, p, start, num_vars, families)
        elif p + "weight" in arrays:
            layer = _sum_layer(arrays, p, start)
        else:
            layer = _product_layer(arrays, p, start)
        layers.append(layer)
        next_slot = layer.stop
    num_slots = _count(attrs, "num_slots")
    if num_slots != next_slot:
        raise FormatError(f"the file declares {num_slots} slots but its layers hold {next_slot}")
    if not isinstance(layers[0], InputLayer):
        raise FormatError("the first layer must be an input layer")
    seen = torch.cat([l.node_var for l in layers if isinstance(l, InputLayer)]).unique()
    if len(seen) != num_vars:
        raise FormatError(f"the file declares {num_vars} variables but its leaves read {len(seen)}")
    return layers, num_slots, num_vars


def _count(attrs: dict, key: str) -> int:
    value = attrs.get(key)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 2**40:
        raise FormatError(f"attribute {key} must be a non-negative integer, got {value!r}")
    return int(value)


def _scalar(arrays: dict, key: str) -> int:
    a = _array(arrays, key, 0)
    if a.dtype.kind not in "iu":
        raise FormatError(f"{key} must be an integer, got dtype {a.dtype}")
    return int(a)


def _array(arrays: dict, key: str, ndim: int, kind: str | None = None) -> np.ndarray:
    if key not in arrays:
        raise FormatError(f"{key} is missing")
    a = np.asarray(arrays[key])
    if a.ndim != ndim:
        raise FormatError(f"{key} must have {ndim} dimensions, got shape {a.shape}")
    if kind == "int" and a.dtype.kind not in "iu":
        raise FormatError(f"{key} must hold integers, got dtype {a.dtype}")
    if kind == "float" and a.dtype not in (np.float32, np.float64):
        raise FormatError(f"{key} must hold float32 or float64, got dtype {a.dtype}")
    if kind == "bool" and a.dtype != np.bool_:
        raise FormatError(f"{key} must hold booleans, got dtype {a.dtype}")
    return a


def _text(arrays: dict, key: str) -> str:
    raw = arrays.get(key)
    if isinstance(raw, np.ndarray) and raw.ndim == 0:
        raw = raw.item()
    if not isinstance(raw, bytes) or len(raw) > 4096:
        raise FormatError(f"{key} must be a short byte string")
    return raw.decode(errors="replace")


def _indices(arrays: dict, key: str, ndim: int, low: int, high: int) -> torch.Tensor:
    """An index array with every entry in ``[low, high)``."""
    a = _array(arrays, key, ndim, "int")
    if a.size and (int(a.min()) < low or int(a.max()) >= high):
        raise FormatError(f"{key} holds indices outside [{low}, {high}): the file is corrupt")
    return torch.from_numpy(a.astype(np.int64))


def _input_layer(arrays, p, start, num_vars, families) -> InputLayer:
    name = _text(arrays, p + "family")
    if name not in families:
        raise FormatError(f"{p}family: unknown input family {name!r}")
    try:
        hyper = json.loads(_text(arrays, p + "hyper"))
        dist = families[name](*hyper)
    except (ValueError, TypeError, UnicodeDecodeError) as err:
        raise FormatError(f"{p}hyper: invalid {name} settings ({err})") from None
    node_var = _indices(arrays, p + "node_var", 1, 0, num_vars)
    params = _array(arrays, p + "params", 2, "float")
    if params.shape != (len(node_var), dist.num_params) or not len(node_var):
        raise FormatError(f"{p}params must have shape ({len(node_var)}, {dist.num_params}), got {params.shape}")
    try:
        dist.check_params(torch.from_numpy(params))
    except ValueError as err:
        raise FormatError(f"{p}params: {err}") from None
    return InputLayer(dist, node_var, torch.from_numpy(params), start)


def _sum_layer(arrays, p, start) -> SumLayer:
    weight = _array(arrays, p + "weight", 3, "float")
    g, _, n_in = weight.shape
    if not weight.size:
        raise FormatError(f"{p}weight is empty")
    if not np.isfinite(weight).all() or (weight < 0).any():
        raise FormatError(f"{p}weight must be finite and non-negative")
    child_idx = _indices(arrays, p + "child_idx", 2, 1, start)
    if tuple(child_idx.shape) != (g, n_in):
        raise FormatError(
            f"{p}child_idx must have shape ({g}, {n_in}) to match the weights, got {tuple(child_idx.shape)}"
        )
    mask = None
    if p + "edge_mask" in arrays:
        mask = torch.from_numpy(_array(arrays, p + "edge_mask", 3, "bool"))
        if mask.shape != weight.shape:
            raise FormatError(f"{p}edge_mask must have the weights' shape {weight.shape}, got {tuple(mask.shape)}")
    return SumLayer(child_idx, torch.from_numpy(weight), mask, start)


def _product_layer(arrays, p, start) -> ProductLayer:
    num_nodes = _scalar(arrays, p + "num_nodes")
    child_idx = _indices(arrays, p + "child_idx", 1, 1, start)
    # every product has at least one child, so a layer has no more nodes than edges
    if not 0 < num_nodes <= len(child_idx):
        raise FormatError(f"{p}num_nodes is {num_nodes} for {len(child_idx)} edges")
    parent_idx = _indices(arrays, p + "parent_idx", 1, 0, num_nodes)
    if parent_idx.shape != child_idx.shape:
        raise FormatError(f"{p}parent_idx and child_idx must have the same length")
    if bool((torch.bincount(parent_idx, minlength=num_nodes) == 0).any()):
        raise FormatError(f"{p}parent_idx leaves a product without children")
    return ProductLayer(parent_idx, child_idx, num_nodes, start)
