"""Chow-Liu trees: pairwise mutual information and a maximum spanning tree (scipy)."""

from __future__ import annotations

import numpy as np
import torch
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree


def mutual_information(
    data: torch.Tensor | np.ndarray, num_bins: int | None = None, max_value: int | None = None
) -> np.ndarray:
    """Pairwise mutual information ``(D, D)`` in nats of discrete data ``(N, D)``.

    With ``num_bins``, values in ``[0, max_value]`` are first binned into that
    many equal-width bins, which keeps the joint tables small for pixels.

    Example:
        >>> x = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1]])
        >>> mi = mutual_information(x)
        >>> bool(mi[0, 1] > mi[0, 2])
        True
    """
    x = np.asarray(data).astype(np.int64)
    if x.ndim != 2:
        raise ValueError(f"data must have shape (N, D), got {x.shape}")
    if num_bins is not None:
        top = int(x.max()) if max_value is None else max_value
        x = np.minimum(x * num_bins // (top + 1), num_bins - 1)
    n, d = x.shape
    k = int(x.max()) + 1
    onehot = np.zeros((n, d * k), dtype=np.float64)
    onehot[np.arange(n)[:, None], np.arange(d) * k + x] = 1.0
    joint = (onehot.T @ onehot / n).reshape(d, k, d, k)  # p(x_i = a, x_j = b)
    marg = np.einsum("iaia->ia", joint)  # p(x_i = a)
    outer = marg[:, :, None, None] * marg[None, None, :, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / outer), 0.0)
    mi = terms.sum(axis=(1, 3))
    np.fill_diagonal(mi, 0.0)
    return np.maximum(mi, 0.0)


def chow_liu_tree(mi: np.ndarray) -> tuple[np.ndarray, int]:
    """Maximum spanning tree of the MI matrix, rooted at its centre.

    Returns ``(parent, root)`` where ``parent[v]`` is v's parent (-1 at the root).
    The centre (a vertex minimising the eccentricity) gives the shallowest
    tree, hence the fewest circuit layers.
    """
    d = mi.shape[0]
    if d == 1:
        return np.array([-1]), 0
    # scipy treats zero weights as missing edges: shift so every pair is an edge.
    weight = (mi.max() + 1.0) - mi
    np.fill_diagonal(weight, 0.0)
    tree = minimum_spanning_tree(weight)
    tree = tree + tree.T
    root = _centre(tree)
    order, pred = breadth_first_order(tree, root, directed=False, return_predecessors=True)
    parent = np.where(pred < 0, -1, pred)
    parent[root] = -1
    return parent.astype(np.int64), int(root)


def _centre(tree) -> int:
    """Middle vertex of a longest path, found by two breadth-first sweeps."""
    a = _farthest(tree, 0)[0]
    b, path = _farthest(tree, a)
    return path[len(path) // 2]


def _farthest(tree, start: int):
    order, pred = breadth_first_order(tree, start, directed=False, return_predecessors=True)
    far = int(order[-1])
    path = [far]
    while path[-1] != start:
        path.append(int(pred[path[-1]]))
    return far, path
