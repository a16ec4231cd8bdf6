"""TensorCircuit: a compiled circuit with the Distribution interface, and ``compile``."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from probmod.errors import FormatError

from . import io, queries
from .compile import CompiledCircuit
from .distribution import Distribution, _sample_shape, check_mask
from .nodes import NodeGroup


@io.register
class TensorCircuit(CompiledCircuit, Distribution):
    """A probabilistic circuit compiled into layers, usable as a ``torch.nn.Module``.

    Every query is exact and batched. ``mask[b, d] = True`` marks variable d
    of sample b as missing. Build one with :func:`compile`.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Bernoulli
        >>> prods = [multiply(inputs(0, 1, Bernoulli()), inputs(1, 1, Bernoulli())) for _ in range(3)]
        >>> pc = probcirc.compile(summate(*prods, num_nodes=1), dtype=torch.float64)
        >>> x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])
        >>> float(pc.log_prob(x).exp().sum())
        1.0
        >>> pc.log_prob(torch.tensor([[1, 0]]), torch.tensor([[False, True]])).shape
        torch.Size([1])
    """

    def __init__(self, layers: list, num_slots: int, num_vars: int):
        super().__init__(layers, num_slots, num_vars)
        self.event_shape = torch.Size([num_vars])
        self.batch_shape = torch.Size()

    @property
    def support(self) -> str:
        return "per-variable, given by the leaf families"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return queries.log_prob(self, x, mask)

    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x_observed) per sample, ``(B,)``; missing entries are summed out exactly."""
        return queries.log_prob(self, x, mask)

    @property
    def is_discrete(self) -> bool:
        """Whether every leaf family is discrete (then samples are integers)."""
        return all(g.dist.num_values is not None for g in self.leaf_groups)

    def sample(self, sample_shape: int | Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Unconditional samples of shape ``sample_shape + (num_vars,)``.

        Discrete circuits return ``torch.long``, others the circuit's dtype. With
        ``generator`` every draw comes from it, never from torch's global generator.

        Example:
            >>> import torch, probcirc
            >>> from probcirc.nodes import inputs, summate
            >>> from probcirc.inputs import Bernoulli
            >>> pc = probcirc.compile(summate(inputs(0, 2, Bernoulli()), num_nodes=1))
            >>> draws = pc.sample((2, 3), generator=torch.Generator().manual_seed(0))
            >>> draws.shape, draws.dtype
            (torch.Size([2, 3, 1]), torch.int64)
        """
        shape = _sample_shape(sample_shape)
        n = int(np.prod(shape)) if shape else 1
        draws = queries.sample(self, n, generator=generator).reshape(*shape, self.num_vars)
        return draws.long() if self.is_discrete else draws

    def sample_conditional(
        self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Complete each sample's missing entries with an exact draw from p(x_missing | x_observed)."""
        return queries.sample(self, x=x, mask=mask, generator=generator)

    def conditional(self, x: torch.Tensor, mask: torch.Tensor | None, targets: Sequence[int]) -> torch.Tensor:
        """P(X_t = v | x_observed) for every target t and value v, ``(B, T, V)``."""
        return queries.conditional(self, x, mask, targets)

    def mpe(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Most probable completion under the joint with the latent (sum-node) variables."""
        return queries.mpe(self, x, mask)

    def marginal(self, vars: Sequence[int]) -> MarginalCircuit:
        """The exact marginal over ``vars`` (in that order): the other variables are summed out."""
        return MarginalCircuit(self, vars)

    def condition(self, x: torch.Tensor, mask: torch.Tensor) -> ConditionalCircuit:
        """Each sample's exact posterior over its missing entries given its observed ones."""
        return ConditionalCircuit(self, x, mask)

    # ------------------------------------------------------------------ io
    def _state(self) -> tuple[dict, dict]:
        attrs, arrays = self._layer_state()
        attrs["dtype"] = str(self.dtype).removeprefix("torch.")
        return attrs, arrays

    @classmethod
    def _from_state(cls, attrs: dict, arrays: dict) -> TensorCircuit:
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(str(attrs.get("dtype")))
        if dtype is None:
            raise FormatError(f"attribute dtype must be float32 or float64, got {attrs.get('dtype')!r}")
        layers, num_slots, num_vars = cls._layers_from_state(attrs, arrays)
        return cls(layers, num_slots, num_vars).to(dtype)

    def fingerprint(self) -> str:
        """SHA-256 of the structure and parameters: equal fingerprints mean equal models."""
        attrs, arrays = self._state()
        h = hashlib.sha256(repr(sorted(attrs.items())).encode())
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
        return h.hexdigest()


class MarginalCircuit(Distribution):
    """A circuit's marginal over some of its variables; every query is still exact.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Bernoulli
        >>> pc = probcirc.compile(summate(multiply(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli())), num_nodes=1))
        >>> m = pc.marginal([1])
        >>> float(m.log_prob(torch.tensor([[0.0], [1.0]])).exp().sum())  # doctest: +ELLIPSIS
        1.0...
    """

    def __init__(self, circuit: TensorCircuit, vars: Sequence[int]):
        vars = [int(v) for v in vars]
        if not vars or len(set(vars)) != len(vars) or min(vars) < 0 or max(vars) >= circuit.num_vars:
            raise ValueError(f"vars must be distinct indices in [0, {circuit.num_vars}), got {vars}")
        self.circuit = circuit
        self.vars = torch.tensor(vars, device=circuit.device)
        self.event_shape = torch.Size([len(vars)])

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(x, device=self.circuit.device)
        if x.dim() != 2 or x.shape[1] != len(self.vars):
            raise ValueError(f"x must have shape (batch, {len(self.vars)}), got {tuple(x.shape)}")
        full = torch.zeros(x.shape[0], self.circuit.num_vars, dtype=x.dtype, device=x.device)
        full[:, self.vars] = x
        hidden = torch.ones(full.shape, dtype=torch.bool, device=x.device)
        hidden[:, self.vars] = False if mask is None else check_mask(x, mask)
        return full, hidden

    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.circuit.log_prob(*self._embed(x, mask))

    def sample(self, sample_shape: int | Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples of shape ``sample_shape + (len(vars),)``: the circuit's draws, restricted to ``vars``."""
        return self.circuit.sample(sample_shape, generator)[..., self.vars]

    def mpe(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The most probable completion of ``x`` (shape ``(B, len(vars))``), jointly with the latents."""
        full, hidden = self._embed(x, mask)
        return self.circuit.mpe(full, hidden)[:, self.vars].to(torch.as_tensor(x, device=full.device).dtype)


class ConditionalCircuit:
    """Per-sample posteriors p(x_missing | x_observed) of a circuit, returned by :meth:`TensorCircuit.condition`.

    Like :class:`~probcirc.gmm.ConditionalMixture`, it follows the
    :class:`~probmod.distribution.Conditional` protocol (``mean`` and
    ``variance`` are properties) and values live in the full D-variable
    layout: observed entries are fixed to the evidence. Every query is exact;
    the posterior is the circuit with the evidence plugged in, so nothing is
    copied.

    Example:
        >>> import torch, probcirc
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> from probcirc.inputs import Bernoulli
        >>> two = multiply(inputs(0, 2, Bernoulli()), inputs(1, 2, Bernoulli()))   # a mixture of 2 products
        >>> pc = probcirc.compile(summate(two, num_nodes=1), dtype=torch.float64)
        >>> post = pc.condition(torch.tensor([[1, 0]]), torch.tensor([[False, True]]))   # x0 = 1 seen, x1 missing
        >>> round(float(post.log_prob(torch.tensor([[1, 0]])).exp() + post.log_prob(torch.tensor([[1, 1]])).exp()), 12)
        1.0
        >>> post.mean.shape, isinstance(post, probcirc.Conditional)
        (torch.Size([1, 2]), True)
    """

    def __init__(self, circuit: TensorCircuit, x: torch.Tensor, mask: torch.Tensor):
        x = torch.as_tensor(x, device=circuit.device)
        if x.dim() != 2 or x.shape[1] != circuit.num_vars:
            raise ValueError(f"x must have shape (batch, {circuit.num_vars}), got {tuple(x.shape)}")
        mask = check_mask(x, mask)
        if mask is None:
            raise ValueError("condition needs a mask (True = missing) saying which entries to infer")
        self.circuit, self.evidence, self.mask = circuit, x, mask
        self.log_evidence = circuit.log_prob(x, mask)  # log p(x_observed), (B,)

    def __len__(self) -> int:
        return self.evidence.shape[0]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_missing | x_observed) of completions ``x`` ``(B, D)``; their observed entries are ignored."""
        x = torch.as_tensor(x, device=self.evidence.device)
        if x.shape != self.evidence.shape:
            raise ValueError(f"x must have the evidence's shape {tuple(self.evidence.shape)}, got {tuple(x.shape)}")
        full = torch.where(self.mask, x.to(self.evidence.dtype), self.evidence)
        return self.circuit.log_prob(full) - self.log_evidence

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One exact completion per sample, ``(B, D)``: observed entries kept, missing ones drawn."""
        return self.circuit.sample_conditional(self.evidence, self.mask, generator=generator)

    def marginals(self, targets: Sequence[int]) -> torch.Tensor:
        """P(X_t = v | x_observed) for every target variable t and value v, ``(B, T, V)``."""
        return self.circuit.conditional(self.evidence, self.mask, targets)

    def mpe(self) -> torch.Tensor:
        """The most probable completion under the joint with the latent variables (see :meth:`TensorCircuit.mpe`)."""
        return self.circuit.mpe(self.evidence, self.mask)

    @functools.cached_property
    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        return queries.posterior_moments(self.circuit, self.evidence, self.mask)  # one pass serves mean and variance

    @property
    def mean(self) -> torch.Tensor:
        """The posterior mean, ``(B, D)``, equal to the evidence at observed entries (least-squares imputation)."""
        return self._moments[0]

    @property
    def variance(self) -> torch.Tensor:
        """The posterior variance of every entry, ``(B, D)``, 0 at observed entries."""
        return self._moments[1]


def compile(root: NodeGroup, seed: int = 0, dtype: torch.dtype = torch.float32) -> TensorCircuit:
    """Compile a symbolic circuit into a layered :class:`TensorCircuit`.

    Node groups are layered by depth (inputs at 0, products one above their
    deepest child, sums at their children's level) and each layer gets padded
    index tensors. Parameters not given on the groups are drawn with ``seed``.

    Raises:
        ValueError: if the root has more than one node or does not cover variables 0..D-1.
    """
    base = CompiledCircuit.from_root(root, seed, dtype)
    return TensorCircuit(list(base.layers), base._num_slots, base.num_vars)
