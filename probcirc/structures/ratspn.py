"""RAT-SPNs: random binary region trees, repeated."""

from __future__ import annotations

import numpy as np

from ..inputs import Categorical, InputDist
from ..nodes import NodeGroup, inputs, multiply, summate


def RAT_SPN(
    num_vars: int,
    num_latents: int,
    depth: int,
    repetitions: int,
    input_dist: InputDist | None = None,
    seed: int = 0,
) -> NodeGroup:
    """A random and tensorised SPN (Peharz et al., 2019).

    Each repetition draws a random permutation of the variables and splits it
    in halves ``depth`` times. A leaf region multiplies one leaf group per
    variable; an inner region multiplies its two halves' sum groups. Products
    are element-wise (Hadamard), as in tensorised circuits, rather than the
    original cross products. The root mixes every repetition.

    Example:
        >>> import probcirc
        >>> pc = probcirc.compile(RAT_SPN(6, num_latents=3, depth=2, repetitions=2))
        >>> pc.num_vars
        6
    """
    if num_vars < 1 or num_latents < 1 or depth < 0 or repetitions < 1:
        raise ValueError("num_vars, num_latents and repetitions must be >= 1 and depth >= 0")
    if 2**depth > num_vars:
        raise ValueError(
            f"depth {depth} splits {num_vars} variables into empty regions; use depth <= {int(np.log2(num_vars))}"
        )
    dist = input_dist or Categorical(2)
    rng = np.random.default_rng(seed)
    k = num_latents

    def region(vars_: np.ndarray, level: int) -> NodeGroup:
        if level == depth:
            leaves = [inputs(int(v), k, dist) for v in vars_]
            prod = multiply(*leaves) if len(leaves) > 1 else leaves[0]
        else:
            half = len(vars_) // 2
            prod = multiply(region(vars_[:half], level + 1), region(vars_[half:], level + 1))
        return summate(prod, num_nodes=k)

    roots = [region(rng.permutation(num_vars), 0) for _ in range(repetitions)]
    return summate(*roots, num_nodes=1)
