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

__all__ = ["CodedPosteriorMean", "evidence_table", "evidence_weights", "pixel_posterior", "posterior_mean"]


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


def pixel_posterior(circuit, weights: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``P(X_j = v | evidence)`` for every pixel j and level v, ``(B, D, K)``, exact.

    ``weights`` ``(B, D, K)`` are the per-pixel evidence likelihoods (see
    :func:`evidence_weights`). Each leaf n over pixel j with value distribution
    θ_n takes the value ``L_n = Σ_v θ_n(v) w_j(v)``; its flow F_n is its share
    of the evidence's probability, and inside it level v has share
    ``θ_n(v) w_j(v) / L_n``, so ``P(X_j = v) ∝ w_j(v) Σ_n (F_n / L_n) θ_n(v)``.
    Both sums are batched matrix products over the pixels.
    """
    weights = torch.as_tensor(weights, dtype=circuit.dtype, device=circuit.device)
    b, d, k = weights.shape
    if d != circuit.num_vars:
        raise ModelMismatchError(f"the images have {d} pixels but the circuit has {circuit.num_vars} variables")
    groups = [_PerPixel(g, k) for g in circuit.leaf_groups]
    out = torch.empty(b, d, k, dtype=circuit.dtype, device=circuit.device)
    with torch.no_grad():
        for s in range(0, b, chunk):
            w = weights[s : s + chunk]
            values = [g.leaf_values(w) for g in groups]  # (n, b) each
            logs = [v.log() for v in values]  # log 0 = -inf: the engine keeps impossible leaves at flow 0
            flows = circuit.forward_with_leaves(_handing_out(logs), flows=True).leaf_flows or ()
            post = torch.zeros(w.shape, dtype=circuit.dtype, device=circuit.device)
            for g, v, f in zip(groups, values, flows):
                ratio = torch.where(v > 0, f / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
                post += g.mix(ratio, d)
            out[s : s + chunk] = post * w
    total = out.sum(-1, keepdim=True)
    if not bool(torch.isfinite(total).all()) or bool((total <= 0).any()):
        raise NumericalError("the evidence has probability 0 under the circuit; widen the soft evidence")
    return out / total


class _PerPixel:
    """One leaf group's value distributions ``(n, K)``, laid out per pixel when every pixel has equally many leaves.

    Then both sums are one batched matmul over pixels (no ``(B, n, K)`` copy); otherwise
    a gather per leaf does the same arithmetic more slowly.
    """

    def __init__(self, group, k: int) -> None:
        if group.dist.num_values is None or group.dist.num_values > k:
            raise ModelMismatchError(f"steering needs discrete leaves over at most {k} levels, found {group.dist!r}")
        pmf = group.dist.pmf(group.params)
        self.pmf = torch.nn.functional.pad(pmf, (0, k - pmf.shape[1]))
        self.var = group.var
        self.order = torch.argsort(group.var, stable=True)
        counts = torch.bincount(group.var)
        per = int(counts.max())
        self.grid = bool((counts[counts > 0] == per).all())
        if self.grid:
            self.pixels = group.var[self.order[::per]]  # (P,) the pixels this group covers
            self.table = self.pmf[self.order].reshape(len(self.pixels), per, k)  # (P, c, K)
            self.inverse = torch.argsort(self.order)

    def leaf_values(self, w: torch.Tensor) -> torch.Tensor:
        """``L_n = Σ_v θ_n(v) w_{j(n)}(v)``, ``(n, B)``."""
        if not self.grid:
            return torch.einsum("nk,bnk->nb", self.pmf, w[:, self.var])
        per_pixel = torch.bmm(self.table, w[:, self.pixels].permute(1, 2, 0))  # (P, c, B)
        return per_pixel.reshape(-1, w.shape[0])[self.inverse]

    def mix(self, ratio: torch.Tensor, d: int) -> torch.Tensor:
        """``Σ_n ratio_n θ_n(v)`` onto each leaf's pixel, ``(B, d, K)``."""
        b = ratio.shape[1]
        out = torch.zeros(b, d, self.pmf.shape[1], dtype=ratio.dtype, device=ratio.device)
        if not self.grid:
            out.index_add_(1, self.var, ratio.T[:, :, None] * self.pmf[None])
            return out
        r = ratio[self.order].reshape(len(self.pixels), -1, b)  # (P, c, B)
        out[:, self.pixels] = torch.bmm(r.transpose(1, 2), self.table).transpose(0, 1)
        return out


def posterior_mean(circuit, weights: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``E[X_j | evidence]`` in levels, ``(B, D)``: the posterior's expected pixel value."""
    post = pixel_posterior(circuit, weights, chunk)
    return post @ torch.arange(post.shape[-1], dtype=post.dtype, device=post.device)


def evidence_table(width: float, num_values: int) -> torch.Tensor:
    """Evidence rows ``(2K, K)``: row q < K a Gaussian bump of ``width`` levels at level q, row K + v the value v."""
    levels = torch.arange(num_values, dtype=torch.float64)
    soft = evidence_weights(
        torch.zeros(1, num_values, dtype=torch.bool), levels[None].long(), levels[None], width, num_values
    )[0]
    return torch.cat([soft, torch.eye(num_values, dtype=torch.float64)])


class CodedPosteriorMean:
    """``E[X_j | evidence]`` when each pixel's evidence is one row of a fixed table: the fast path of steering.

    With evidence ``w_j = table[code_j]``, each leaf's value ``L_n = θ_n · table[code]``
    and its level-weighted value ``M_n = Σ_v v θ_n(v) table[code](v)`` are
    looked up in two ``(n, R)`` tables computed once, so a query costs one
    pass with flows plus gathers: ``E[X_j] = Σ_n (F_n / L_n) M_n / Σ_n F_n``.
    Equal to :func:`posterior_mean` with ``weights = table[codes]``.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.inputs import Categorical
        >>> from probcirc.nodes import inputs, summate
        >>> pc = probcirc.compile(summate(inputs(0, 1, Categorical(4), params=torch.full((1, 4), 0.25)), num_nodes=1))
        >>> mean = CodedPosteriorMean(pc, evidence_table(float("inf"), 4))
        >>> mean(torch.tensor([[0], [4 + 3]]))                        # flat evidence, then X0 = 3 observed
        tensor([[1.5000],
                [3.0000]])
    """

    def __init__(self, circuit, table: torch.Tensor) -> None:
        self.circuit = circuit
        table = torch.as_tensor(table, dtype=torch.float64, device=circuit.device)
        levels = torch.arange(table.shape[1], dtype=torch.float64, device=circuit.device)
        self.tables = []
        for g in circuit.leaf_groups:
            if g.dist.num_values is None or g.dist.num_values > table.shape[1]:
                raise ModelMismatchError(f"steering needs discrete leaves over at most {table.shape[1]} levels")
            pmf = g.dist.pmf(g.params).double()
            pmf = torch.nn.functional.pad(pmf, (0, table.shape[1] - pmf.shape[1]))
            self.tables.append(((pmf @ table.T).to(circuit.dtype), ((pmf * levels) @ table.T).to(circuit.dtype)))

    def __call__(self, codes: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        codes = torch.as_tensor(codes, device=self.circuit.device).long()
        b, d = codes.shape
        if d != self.circuit.num_vars:
            raise ModelMismatchError(
                f"the images have {d} pixels but the circuit has {self.circuit.num_vars} variables"
            )
        out = torch.empty(b, d, dtype=self.circuit.dtype, device=self.circuit.device)
        with torch.no_grad():
            for s in range(0, b, chunk):
                c = codes[s : s + chunk]
                looked = [(lt.gather(1, c[:, g.var].T), mt.gather(1, c[:, g.var].T))
                          for g, (lt, mt) in zip(self.circuit.leaf_groups, self.tables)]  # fmt: skip
                flows = (
                    self.circuit.forward_with_leaves(_handing_out([v.log() for v, _ in looked]), flows=True).leaf_flows
                    or ()
                )
                num = torch.zeros(d, len(c), dtype=self.circuit.dtype, device=self.circuit.device)
                den = torch.zeros_like(num)
                for g, (v, m), f in zip(self.circuit.leaf_groups, looked, flows):
                    ratio = torch.where(v > 0, f / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
                    num.index_add_(0, g.var, ratio * m)
                    den.index_add_(0, g.var, f)
                out[s : s + chunk] = (num / den).T
        if not bool(torch.isfinite(out).all()):
            raise NumericalError("the evidence has probability 0 under the circuit; widen the soft evidence")
        return out


def _handing_out(values: list[torch.Tensor]):
    """A leaf hook returning ``values`` in turn: the engine calls it once per leaf group, in ``leaf_groups`` order."""
    it = iter(values)
    return lambda _group: next(it)
