"""Hidden Chow-Liu trees: a Chow-Liu tree over the variables, with a latent per variable."""

from __future__ import annotations

import numpy as np
import torch

from ..inputs import Categorical, InputDist
from ..learn.chow_liu import chow_liu_tree, mutual_information
from ..nodes import NodeGroup, inputs, multiply, summate


def HCLT(
    data: torch.Tensor | np.ndarray,
    num_latents: int,
    input_dist: InputDist | None = None,
    num_bins: int | None = None,
    max_structure_samples: int = 5000,
    seed: int = 0,
) -> NodeGroup:
    """Build the symbolic HCLT of ``data`` ``(N, D)``, discrete values.

    Each variable v gets a latent z_v with ``num_latents`` states and a leaf
    group P(x_v | z_v). The latents follow the Chow-Liu tree of the data
    (pairwise mutual information, maximum spanning tree, rooted at its
    centre): P(z_child | z_parent) is a ``num_latents x num_latents`` sum group.
    The structure is learned from at most ``max_structure_samples`` rows,
    binned into ``num_bins`` levels when given.

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
    parent, root = chow_liu_tree(mutual_information(x, num_bins))
    children: list[list[int]] = [[] for _ in parent]
    for v, p in enumerate(parent):
        if p >= 0:
            children[p].append(v)
    k = num_latents
    latent: dict[int, NodeGroup] = {}
    for v in _post_order(children, root):
        leaf = inputs(v, k, dist)
        ups = [summate(latent[c], num_nodes=k) for c in children[v]]
        latent[v] = multiply(leaf, *ups) if ups else leaf
    return summate(latent[root], num_nodes=1)


def _post_order(children: list[list[int]], root: int) -> list[int]:
    order, stack = [], [root]
    while stack:
        v = stack.pop()
        order.append(v)
        stack.extend(children[v])
    return order[::-1]
