"""Per-variable conditionals P(X_t = v | x_observed) from one forward and one backward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import backend
from ..compile import CompiledCircuit


@backend.exact()
def conditional(
    circuit: CompiledCircuit,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    targets: Sequence[int],
    batch_chunk: int = 256,
) -> torch.Tensor:
    """The full distribution of each target given the observed entries, ``(B, T, V)``.

    Targets are treated as missing whatever the mask says. A smooth and
    decomposable circuit is linear in the leaves of any one variable, so
    ``p(x_o, X_t = v) = Σ_n ∂p/∂L_n · L_n(v)`` over the leaves n of t, and the
    backward pass's flows give ``∂p/∂L_n / p`` for all targets at once.
    ``V`` is the largest number of values among the targets' leaf families.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, summate
        >>> from probcirc.inputs import Categorical
        >>> leaf = inputs(0, 1, Categorical(3), params=torch.tensor([[0.2, 0.3, 0.5]]))
        >>> pc = probcirc.compile(summate(leaf, num_nodes=1), dtype=torch.float64)
        >>> conditional(pc, torch.zeros(1, 1), None, [0])
        tensor([[[0.2000, 0.3000, 0.5000]]], dtype=torch.float64)
    """
    groups = _target_groups(circuit, targets)[2]
    for g in groups:
        if g.dist.num_values is None:
            raise NotImplementedError(
                f"conditional() needs discrete leaves; target leaves are {g.dist!r}: "
                "use conditional_moments() for continuous ones"
            )
    v = max(g.dist.num_values for g in groups)
    res = _leaf_flow_sums(circuit, x, mask, targets, lambda dist, params: dist.pmf(params), v, batch_chunk)
    return res / res.sum(-1, keepdim=True)


@backend.exact()
def conditional_moments(
    circuit: CompiledCircuit,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    targets: Sequence[int],
    batch_chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E[X_t | x_observed] and Var[X_t | x_observed] for every target, ``(B, T)`` each, for any leaf family.

    The same linearity as :func:`conditional`: the flows of a target's
    leaves weight their means and second moments. For Gaussian leaves this is
    the exact posterior mean (the least-squares imputation) and variance.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Gaussian
        >>> a = inputs(0, 2, Gaussian(), params=torch.tensor([[-1.0, 0.5], [1.0, 0.5]]))
        >>> b = inputs(1, 2, Gaussian(), params=torch.tensor([[-3.0, 1.0], [3.0, 1.0]]))
        >>> pc = probcirc.compile(summate(multiply(a, b), num_nodes=1), dtype=torch.float64)  # two clusters
        >>> mean, var = conditional_moments(pc, torch.tensor([[1.0, 0.0]]), torch.tensor([[False, True]]), [1])
        >>> round(float(mean), 1), round(float(var), 1)       # x0 = 1 points at the second cluster
        (3.0, 1.0)
    """
    res = _leaf_flow_sums(circuit, x, mask, targets, _moments, 2, batch_chunk)
    mean = res[..., 0]
    return mean, (res[..., 1] - mean * mean).clamp_min(0)


@backend.exact()
def posterior_moments(
    circuit: CompiledCircuit, x: torch.Tensor, mask: torch.Tensor, batch_chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of every entry given each sample's observed ones, ``(B, D)`` each.

    Unlike :func:`conditional_moments`, nothing beyond ``mask`` is summed out:
    each missing entry is conditioned on all of its sample's observed
    entries. Observed entries come back as they are, with variance 0.
    """
    x = torch.as_tensor(x, device=circuit.device)
    res = _leaf_flow_sums(circuit, x, mask, range(circuit.num_vars), _moments, 2, batch_chunk, force_missing=False)
    mean = torch.where(mask, res[..., 0], x.to(res.dtype))
    return mean, torch.where(mask, (res[..., 1] - res[..., 0] ** 2).clamp_min(0), torch.zeros_like(mean))


def _moments(dist, params):
    m1, m2 = dist.moments(params)
    return torch.stack([m1, m2], -1)


def _target_groups(circuit: CompiledCircuit, targets: Sequence[int]):
    """(targets, position of each variable among them or -1, leaf groups reading any target)."""
    targets = [int(t) for t in targets]
    if not targets or min(targets) < 0 or max(targets) >= circuit.num_vars or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be distinct variable indices in [0, {circuit.num_vars}), got {targets}")
    position = torch.full((circuit.num_vars,), -1, dtype=torch.long, device=circuit.device)
    position[torch.tensor(targets, device=circuit.device)] = torch.arange(len(targets), device=circuit.device)
    return targets, position, [g for g in circuit.leaf_groups if bool((position[g.var] >= 0).any())]


def _leaf_flow_sums(
    circuit, x, mask, targets, per_leaf, width: int, batch_chunk: int, force_missing: bool = True
) -> torch.Tensor:
    """``Σ_n flow_n · per_leaf(n)`` over each target's leaves, ``(B, T, width)``.

    A smooth and decomposable circuit is linear in the leaves of one variable,
    and with that variable summed out its leaves' flows sum to 1 per sample.
    ``force_missing`` sums the targets out in every sample; without it the
    result means something only where the mask already sums a target out.
    """
    targets, position, _ = _target_groups(circuit, targets)
    x = torch.as_tensor(x, device=circuit.device)
    mask = torch.zeros(x.shape, dtype=torch.bool, device=circuit.device) if mask is None else mask.clone()
    if force_missing and mask.shape == x.shape and x.dim() == 2:
        mask[:, targets] = True
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_chunk):
            flows = circuit.forward_with_leaves(
                lambda g: None, x[s : s + batch_chunk], mask[s : s + batch_chunk], flows=True
            ).leaf_flows
            res = torch.zeros(flows[0].shape[1], len(targets), width, dtype=circuit.dtype, device=circuit.device)
            for g, f in zip(circuit.leaf_groups, flows):
                sel = (position[g.var] >= 0).nonzero().squeeze(-1)
                if len(sel):
                    values = per_leaf(g.dist, g.params[sel])  # (n_sel, width of this family)
                    res[..., : values.shape[1]].index_add_(1, position[g.var[sel]], f[sel].T[:, :, None] * values)
            out.append(res)
    return torch.cat(out) if out else torch.zeros(0, len(targets), width, dtype=circuit.dtype, device=circuit.device)
