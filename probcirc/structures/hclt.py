"""Hidden Chow-Liu trees: a Chow-Liu tree over the variables, with a latent per variable."""

from __future__ import annotations

import numpy as np
import torch

from ..inputs import Categorical, InputDist
from ..learn.chow_liu import chow_liu_tree, mutual_information
from ..nodes import NodeGroup, inputs, multiply, summate

#: Most entries of the (D·levels)² joint-count table built for mutual information.
_MI_TABLE_LIMIT = 4e7


def HCLT(
    data: torch.Tensor | np.ndarray,
    num_latents: int,
    input_dist: InputDist | None = None,
    num_bins: int | None = None,
    max_structure_samples: int = 5000,
    seed: int = 0,
    init: str = "clusters",
) -> NodeGroup:
    """Build the symbolic HCLT of ``data`` ``(N, D)``, discrete values.

    Each variable v gets a latent z_v with ``num_latents`` states and a leaf
    group P(x_v | z_v). The latents follow the Chow-Liu tree of the data
    (pairwise mutual information, maximum spanning tree, rooted at its
    centre): P(z_child | z_parent) is a ``num_latents x num_latents`` sum group.
    The structure is learned from at most ``max_structure_samples`` rows,
    binned into ``num_bins`` levels when given. By default the values are
    binned only when the pairwise tables would not fit in memory (for MNIST's
    784 pixels of 256 levels: 8 bins).

    ``init="clusters"`` (categorical leaves only) starts EM from a k-means
    clustering of those rows into ``num_latents`` clusters: latent state j of
    every variable gets cluster j's smoothed histogram, and the tree's
    transitions favour staying in the same cluster, so training starts from
    a mixture of products fitted to the data instead of from noise.
    ``init="random"`` leaves the parameters to :func:`probcirc.compile`.

    Example:
        >>> import torch, probcirc
        >>> data = torch.randint(0, 2, (100, 5))
        >>> pc = probcirc.compile(HCLT(data, num_latents=4))
        >>> pc.log_prob(data[:3]).shape
        torch.Size([3])
    """
    x = np.asarray(data)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"data must have shape (N >= 2, D), got {x.shape}")
    if num_latents < 1:
        raise ValueError(f"num_latents must be >= 1, got {num_latents}")
    if max_structure_samples < len(x):
        rows = np.random.default_rng(seed).choice(len(x), max_structure_samples, replace=False)
        x = x[rows]
    dist = input_dist or Categorical(max(2, int(np.asarray(data).max()) + 1))
    levels = int(x.max()) + 1
    if num_bins is None and (x.shape[1] * levels) ** 2 > _MI_TABLE_LIMIT:
        # The pairwise joint tables grow as (D·levels)²; bin so they stay in memory.
        num_bins = max(2, int(np.sqrt(_MI_TABLE_LIMIT)) // x.shape[1])
    parent, root = chow_liu_tree(mutual_information(x, num_bins))
    children: list[list[int]] = [[] for _ in parent]
    for v, p in enumerate(parent):
        if p >= 0:
            children[p].append(v)
    if init not in ("clusters", "random"):
        raise ValueError(f"init must be 'clusters' or 'random', got {init!r}")
    k = num_latents
    leaf_params = transition = root_params = None
    if init == "clusters" and isinstance(dist, Categorical):
        leaf_params, root_params = _cluster_init(x, k, dist.num_cats, seed)
        transition = torch.full((k, k), 0.2 / k, dtype=torch.float64) + 0.8 * torch.eye(k, dtype=torch.float64)
    latent: dict[int, NodeGroup] = {}
    for v in _post_order(children, root):
        leaf = inputs(v, k, dist, params=None if leaf_params is None else leaf_params[v])
        ups = [summate(latent[c], num_nodes=k, params=transition) for c in children[v]]
        latent[v] = multiply(leaf, *ups) if ups else leaf
    return summate(latent[root], num_nodes=1, params=root_params)


def _cluster_init(x: np.ndarray, k: int, num_cats: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-variable, per-cluster smoothed histograms ``(D, k, C)`` and cluster weights ``(1, k)``."""
    gen = torch.Generator().manual_seed(seed)
    pts = torch.as_tensor(x, dtype=torch.float32)
    centres = pts[torch.randperm(len(pts), generator=gen)[:k]].clone()
    for _ in range(10):
        assign = torch.cdist(pts, centres).argmin(1)
        for j in range(k):
            members = pts[assign == j]
            if len(members):
                centres[j] = members.mean(0)
    assign = torch.cdist(pts, centres).argmin(1)
    n, d = x.shape
    counts = torch.zeros(d, k, num_cats, dtype=torch.float64)
    values = torch.as_tensor(x, dtype=torch.long).clamp(0, num_cats - 1)
    index = (assign[:, None] * num_cats + values).T  # (D, N): cluster-major category index per variable
    counts.view(d, -1).scatter_add_(1, index, torch.ones(d, n, dtype=torch.float64))
    # Smooth towards the variable's overall histogram so unseen values keep some mass.
    overall = counts.sum(1, keepdim=True) / n
    leaf = counts + 1.0 * overall + 0.01
    sizes = torch.bincount(assign, minlength=k).double() + 1.0
    return leaf / leaf.sum(-1, keepdim=True), (sizes / sizes.sum())[None]


def _post_order(children: list[list[int]], root: int) -> list[int]:
    order, stack = [], [root]
    while stack:
        v = stack.pop()
        order.append(v)
        stack.extend(children[v])
    return order[::-1]
