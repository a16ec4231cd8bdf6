"""Poon-Domingos structures: recursive axis-aligned splits of an image."""

from __future__ import annotations

from collections.abc import Sequence

from ..inputs import Categorical, InputDist
from ..nodes import NodeGroup, inputs, multiply, summate


def PD(
    shape: tuple[int, int],
    num_latents: int,
    input_dist: InputDist | None = None,
    split_step: int | Sequence[int] = 1,
) -> NodeGroup:
    """A Poon-Domingos circuit over an image of ``shape = (H, W)`` (variables in row-major order).

    Every rectangle is a sum group of ``num_latents`` nodes over all ways of
    cutting it in two along a multiple of ``split_step`` (or of 1 when the
    rectangle is narrower than the step); each cut is an element-wise product
    of the two halves. Rectangles are shared between parents, so the circuit
    is a DAG. Pixels are leaf groups.

    Example:
        >>> import probcirc
        >>> pc = probcirc.compile(PD((2, 2), num_latents=2, input_dist=probcirc.inputs.Bernoulli()))
        >>> pc.num_vars
        4
    """
    h, w = shape
    if h < 1 or w < 1 or num_latents < 1:
        raise ValueError(f"shape and num_latents must be positive, got {shape} and {num_latents}")
    steps = (split_step, split_step) if isinstance(split_step, int) else tuple(split_step)
    dist = input_dist or Categorical(256)
    k = num_latents
    memo: dict[tuple[int, int, int, int], NodeGroup] = {}

    def cuts(lo: int, hi: int, step: int) -> list[int]:
        found = [c for c in range(lo + 1, hi) if (c - lo) % step == 0]
        return found or list(range(lo + 1, hi))

    def region(r0: int, r1: int, c0: int, c1: int, top: bool = False) -> NodeGroup:
        key = (r0, r1, c0, c1)
        if key in memo:
            return memo[key]
        if r1 - r0 == 1 and c1 - c0 == 1:
            node: NodeGroup = inputs(r0 * w + c0, k, dist)
        else:
            parts = [multiply(region(r0, c, c0, c1), region(c, r1, c0, c1)) for c in cuts(r0, r1, steps[0])]
            parts += [multiply(region(r0, r1, c0, c), region(r0, r1, c, c1)) for c in cuts(c0, c1, steps[1])]
            node = summate(*parts, num_nodes=1 if top else k)
        memo[key] = node
        return node

    root = region(0, h, 0, w, top=True)
    return root if root.num_nodes == 1 else summate(root, num_nodes=1)
