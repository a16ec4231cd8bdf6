"""The circuit's exact posterior over pixel values given hard evidence on some pixels and soft evidence on the rest.

A smooth, decomposable circuit is multilinear in its leaves, so weighting each
leaf's value distribution by per-pixel evidence ``w_j(v)`` and renormalising
gives exactly ``p(x) Π_j w_j(x_j) / Z``. Hard evidence on pixel j is the
indicator of its value; soft evidence is any non-negative weight vector. One
upward pass with those leaf values (the engine's public leaf hook,
:meth:`~probcirc.compile.CompiledCircuit.forward_with_leaves`) and its flows
give every pixel's posterior at once: the same algebra as
:func:`probcirc.queries.soft_evidence`, for any discrete leaf family.

Example:
    >>> import torch, probcirc
    >>> from probcirc.inputs import Categorical
    >>> from probcirc.nodes import inputs, multiply, summate
    >>> eye = torch.eye(3, dtype=torch.float64)
    >>> a = inputs(0, 3, Categorical(3), params=eye)
    >>> b = inputs(1, 3, Categorical(3), params=eye)
    >>> pc = probcirc.compile(summate(multiply(a, b), num_nodes=1), dtype=torch.float64)  # X0 = X1, uniform
    >>> w = torch.ones(1, 2, 3, dtype=torch.float64)
    >>> w[0, 0] = torch.tensor([0.0, 1.0, 0.0])                   # X0 = 1 observed
    >>> pixel_posterior(pc, w)[0, 1]
    tensor([0., 1., 0.], dtype=torch.float64)
"""

from __future__ import annotations

import torch

from probmod.errors import ModelMismatchError, NumericalError

__all__ = ["evidence_weights", "pixel_posterior", "posterior_mean"]


def evidence_weights(
    known: torch.Tensor, values: torch.Tensor, guess: torch.Tensor, width: float, num_values: int
) -> torch.Tensor:
    """Per-pixel evidence ``(B, D, K)``: one-hot ``values`` where ``known``, a Gaussian bump at ``guess`` elsewhere.

    ``values`` are integer pixel levels in ``[0, K)``; ``guess`` is a real-valued
    level (for instance the diffusion model's current prediction) and ``width``
    the bump's standard deviation in levels. ``width = inf`` gives flat weights:
    no soft evidence, the plain conditional given the known pixels.

    Example:
        >>> known, values, guess = torch.tensor([[True, False]]), torch.tensor([[2, 0]]), torch.tensor([[0.0, 1.2]])
        >>> w = evidence_weights(known, values, guess, 0.5, 3)
        >>> w[0, 0].tolist(), int(w[0, 1].argmax())
        ([0.0, 0.0, 1.0], 1)
    """
    levels = torch.arange(num_values, dtype=guess.dtype, device=guess.device)
    if width == float("inf"):
        soft = torch.ones(*guess.shape, num_values, dtype=guess.dtype, device=guess.device)
    else:
        z2 = ((levels - guess[..., None]) / width) ** 2
        soft = torch.exp(-0.5 * (z2 - z2.amin(-1, keepdim=True)))  # the nearest level at 1: no underflow to all zeros
    hard = torch.nn.functional.one_hot(values.long().clamp(0, num_values - 1), num_values).to(guess.dtype)
    return torch.where(known[..., None], hard, soft)


def pixel_posterior(circuit, weights: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """``P(X_j = v | evidence)`` for every pixel j and level v, ``(B, D, K)``, exact.

    ``weights`` ``(B, D, K)`` are the per-pixel evidence likelihoods (see
    :func:`evidence_weights`). Each leaf n over pixel j with value distribution
    θ_n takes the value ``L_n = Σ_v θ_n(v) w_j(v)``; a leaf's flow is its share
    of the evidence's probability, and inside the leaf value v has share
    ``θ_n(v) w_j(v) / L_n``.
    """
    weights = torch.as_tensor(weights, dtype=circuit.dtype, device=circuit.device)
    b, d, k = weights.shape
    if d != circuit.num_vars:
        raise ModelMismatchError(f"the images have {d} pixels but the circuit has {circuit.num_vars} variables")
    pmfs = []
    for g in circuit.leaf_groups:
        if g.dist.num_values is None or g.dist.num_values > k:
            raise ModelMismatchError(f"steering needs discrete leaves over at most {k} levels, found {g.dist!r}")
        pmf = g.dist.pmf(g.params)
        pmfs.append(torch.nn.functional.pad(pmf, (0, k - pmf.shape[1])))
    out = torch.empty(b, d, k, dtype=circuit.dtype, device=circuit.device)
    with torch.no_grad():
        for s in range(0, b, chunk):
            w = weights[s : s + chunk]
            parts = [pmf[None] * w[:, g.var] for g, pmf in zip(circuit.leaf_groups, pmfs)]  # (b, n, K)
            values = [p.sum(-1) for p in parts]
            logs = [v.T.log() for v in values]  # log 0 = -inf: the engine keeps impossible leaves at flow 0
            flows = circuit.forward_with_leaves(_handing_out(logs), flows=True).leaf_flows or ()
            post = torch.zeros(w.shape, dtype=circuit.dtype, device=circuit.device)
            for g, p, v, f in zip(circuit.leaf_groups, parts, values, flows):
                share = p / v.clamp_min(torch.finfo(circuit.dtype).tiny)[..., None]
                post.index_add_(1, g.var, f.T[..., None] * share)
            out[s : s + chunk] = post
    total = out.sum(-1, keepdim=True)
    if not bool(torch.isfinite(total).all()) or bool((total <= 0).any()):
        raise NumericalError("the evidence has probability 0 under the circuit; widen the soft evidence")
    return out / total


def posterior_mean(circuit, weights: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """``E[X_j | evidence]`` in levels, ``(B, D)``: the posterior's expected pixel value."""
    post = pixel_posterior(circuit, weights, chunk)
    return post @ torch.arange(post.shape[-1], dtype=post.dtype, device=post.device)


def _handing_out(values: list[torch.Tensor]):
    """A leaf hook returning ``values`` in turn: the engine calls it once per leaf group, in ``leaf_groups`` order."""
    it = iter(values)
    return lambda _group: next(it)
