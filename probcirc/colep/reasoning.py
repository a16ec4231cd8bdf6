"""Reasoning circuits: each knowledge cluster compiled into an exact probabilistic circuit.

For a cluster over variables μ = (μ_1..μ_m) ∈ {0,1}^m with rules h of weight w_h,

    F(μ) = Π_j π_j^μ_j (1-π_j)^(1-μ_j) · exp(Σ_h w_h 1[μ ⊨ h]),
    π̃_j = Σ_{μ: μ_j=1} F(μ) / Σ_μ F(μ).

The rule factor R(μ) = exp(Σ_h w_h 1[μ ⊨ h]) is compiled into a smooth,
decomposable circuit over indicator leaves whose root computes R(μ)/Z for
every complete μ (Z = Σ_μ R(μ); see :class:`ClusterCircuit` for the two
structures, flat enumeration and vertex-cover conditioning). The sensors'
readings enter as soft (virtual) evidence: leaf n over variable j with
Bernoulli parameter θ_n takes the value θ_n π_j + (1-θ_n)(1-π_j), which for an
indicator of μ_j is π_j^μ_j (1-π_j)^(1-μ_j). Because the circuit is smooth and
decomposable, its value is then multilinear in the leaves and equals
Σ_μ (R(μ)/Z) Π_j π_j^μ_j (1-π_j)^(1-μ_j) = Σ_μ F(μ)/Z. One backward pass gives
every leaf's flow (its share of that sum); summing the flows of variable j's
leaves weighted by their share of value 1 gives π̃_j for all j at once (1/Z
cancels). No approximation is involved.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import torch

import probcirc
from probcirc.inputs import Bernoulli
from probcirc.nodes import NodeGroup, inputs, multiply, summate
from probcirc.queries import soft_evidence

from .knowledge import (
    MAX_CIRCUIT_NODES,
    Cluster,
    Knowledge,
    KnowledgeLimitError,
    circuit_nodes,
    cover_of,
    min_vertex_cover,
)

#: Most box vertices one bound query enumerates per sample (2^22); more is refused, not attempted.
MAX_VERTICES = 1 << 22

__all__ = ["ClusterCircuit", "Reasoner", "min_vertex_cover"]


class ClusterCircuit:
    """The compiled reasoning circuit of one cluster (see the module docstring).

    ``corrected(p)`` maps sensor probabilities ``(B, m)`` of the cluster's
    variables (in ``cluster.variables`` order) to the corrected ``(B, m)``.

    ``structure="cover"`` (default) conditions on a minimum vertex cover K of
    the rule graph: given an assignment κ of K, every rule touches at most one
    free variable, so the free variables are independent and each becomes one
    sum node over its two indicator leaves, with weights ∝ its rules' factor
    given κ. The root mixes the 2^|K| branches with weights ∝ the rules inside
    K times the branch's free normalisers. Size O(2^|K|·m) instead of
    O(2^m·m); a star of class ⇒ concept rules has |K| = 1.
    ``structure="enumerate"`` builds one product per joint state (2^m).
    Both represent the same normalised distribution ∝ exp(Σ_h w_h 1[μ ⊨ h]).
    A one-hot group (exclusive classes, ``cluster.one_hot``) is always
    conditioned on, as its K admissible states rather than 2^K, which also
    gives the other states their zero mass.

    A circuit of more than ``max_nodes`` nodes (:func:`circuit_nodes`) is
    refused with :class:`KnowledgeLimitError` before anything is built.
    """

    def __init__(self, cluster: Cluster, structure: str = "cover", max_nodes: int = MAX_CIRCUIT_NODES):
        if structure not in ("cover", "enumerate"):
            raise ValueError(f"structure must be 'cover' or 'enumerate', got {structure!r}")
        nodes = circuit_nodes(cluster, structure)
        if nodes > max_nodes:
            raise KnowledgeLimitError(
                f"cluster {cluster.name!r} needs a reasoning circuit of {nodes} nodes, over max_nodes={max_nodes}; "
                "split the cluster or raise the limit"
            )
        self.cluster = cluster
        self.variables = cluster.variables
        self.structure = structure
        m = len(self.variables)
        local = {v: i for i, v in enumerate(self.variables)}
        self.one_hot = tuple(local[v] for v in cluster.one_hot)
        # rules as (body, body_positive, head, head_positive, weight) in local indices
        self.rules = [
            (local[r.body.var], r.body.positive, local[r.head.var], r.head.positive, r.weight) for r in cluster.rules
        ]
        # The one-hot group is always conditioned on (K states, not 2^K); the cover handles the other rules.
        cover = cover_of(cluster, structure)
        self.cover = cover
        conditioned = self.one_hot + cover
        free = [j for j in range(m) if j not in conditioned]
        cover_states = torch.tensor(list(itertools.product([0, 1], repeat=len(cover))), dtype=torch.float64).reshape(
            2 ** len(cover), len(cover)
        )
        if self.one_hot:
            hot = torch.eye(len(self.one_hot), dtype=torch.float64)
            branches = torch.cat([hot.repeat_interleave(len(cover_states), 0), cover_states.repeat(len(hot), 1)], 1)
        else:
            branches = cover_states
        nb = branches.shape[0]

        def score(mu: dict[int, torch.Tensor]) -> torch.Tensor:
            """Σ w·1[rule satisfied] over the rules whose variables are all in ``mu``."""
            total = torch.zeros(nb, dtype=torch.float64)
            for a, ap, c, cp, w in self.rules:
                if a in mu and c in mu:
                    body = mu[a] if ap else 1 - mu[a]
                    head = mu[c] if cp else 1 - mu[c]
                    total = total + w * (1 - body * (1 - head))
            return total

        kappa = {v: branches[:, i] for i, v in enumerate(conditioned)}
        base = score(kappa)  # rules among the conditioned variables
        log_root = base.clone()
        children: list[NodeGroup] = [
            inputs(v, nb, Bernoulli(), params=branches[:, i : i + 1].clone(), name=f"{cluster.name}/k{v}")
            for i, v in enumerate(conditioned)
        ]
        for j in free:
            lf = torch.stack(
                [score({**kappa, j: torch.full((nb,), float(val), dtype=torch.float64)}) - base for val in (0, 1)], 1
            )
            log_root = log_root + torch.logsumexp(lf, 1)
            leaf = inputs(
                j, 2, Bernoulli(), params=torch.tensor([[0.0], [1.0]], dtype=torch.float64), name=f"{cluster.name}/x{j}"
            )
            children.append(summate(leaf, num_nodes=nb, params=torch.softmax(lf, 1), name=f"{cluster.name}/s{j}"))
        root = summate(
            multiply(*children), num_nodes=1, params=torch.softmax(log_root, 0)[None, :], name=f"{cluster.name}/root"
        )
        self.pc = probcirc.compile(root, dtype=torch.float64)

    def corrected(self, p: torch.Tensor) -> torch.Tensor:
        return soft_evidence(self.pc, p)[0]

    def corrected_bounds(self, lo: torch.Tensor, hi: torch.Tensor, targets=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact min and max of π̃ over the box ``[lo, hi]`` (``(B, m)`` each), for local ``targets`` (default all).

        π̃_t is, in each coordinate π_k with the others fixed, a ratio of two
        affine functions with a positive denominator, hence monotone in π_k,
        so its extremes over a box lie at vertices (docs/colep.md). For a
        one-hot target the directions of the one-hot coordinates are known
        (π̃_t rises with π_t and falls with every other class's reading), so
        only the 2^f vertices of the f remaining coordinates are visited.
        Otherwise all 2^m vertices are.
        """
        m = len(self.variables)
        targets = list(range(m)) if targets is None else list(targets)
        lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
        hot = [t for t in targets if t in self.one_hot]
        rest = [t for t in targets if t not in self.one_hot]
        bmin = torch.empty(lo.shape[0], len(targets), dtype=torch.float64)
        bmax = torch.empty_like(bmin)
        if rest:
            a, b = self._vertex_extremes(lo, hi, list(range(m)), {})
            cols = [targets.index(t) for t in rest]
            bmin[:, cols], bmax[:, cols] = a[:, rest], b[:, rest]
        free = [j for j in range(m) if j not in self.one_hot]
        for t in hot:
            # minimum: own reading low, rival classes high; maximum: the reverse
            down = {k: (k != t) for k in self.one_hot}
            a, _ = self._vertex_extremes(lo, hi, free, down)
            _, b = self._vertex_extremes(lo, hi, free, {k: not v for k, v in down.items()})
            bmin[:, targets.index(t)], bmax[:, targets.index(t)] = a[:, t], b[:, t]
        return bmin, bmax

    def _vertex_extremes(self, lo: torch.Tensor, hi: torch.Tensor, free: list[int], fixed_high: dict[int, bool]):
        """Min and max of every π̃ over the vertices that vary ``free`` and pin ``fixed_high`` (True: upper end)."""
        m = len(self.variables)
        if len(free) > MAX_VERTICES.bit_length() - 1:
            raise KnowledgeLimitError(
                f"bounds over cluster {self.cluster.name!r} would visit 2^{len(free)} box vertices per sample, "
                f"over the limit of {MAX_VERTICES}; split the cluster"
            )
        corners = torch.zeros(2 ** len(free), m, dtype=torch.bool)
        if free:
            # bit i of row r is free[i]'s end, built arithmetically (itertools.product would make 2^f Python tuples)
            bits = torch.arange(len(free) - 1, -1, -1)
            corners[:, free] = (torch.arange(len(corners))[:, None] >> bits & 1).bool()
        for k, high in fixed_high.items():
            corners[:, k] = high
        # bound the (samples × vertices) batch to 2^18 rows: several samples per batch, or a sample's vertices in parts
        step, part = max(1, 2**18 // len(corners)), min(len(corners), 2**18)
        mins, maxs = [], []
        for s in range(0, lo.shape[0], step):
            lo_s, hi_s = lo[s : s + step, None, :], hi[s : s + step, None, :]
            vmin = torch.full((lo_s.shape[0], m), torch.inf, dtype=torch.float64)
            vmax = torch.full_like(vmin, -torch.inf)
            for c in range(0, len(corners), part):
                qv = torch.where(corners[None, c : c + part], hi_s, lo_s)
                vals = self.corrected(qv.reshape(-1, m)).reshape(qv.shape[0], qv.shape[1], m)
                vmin, vmax = torch.minimum(vmin, vals.amin(1)), torch.maximum(vmax, vals.amax(1))
            mins.append(vmin)
            maxs.append(vmax)
        return torch.cat(mins), torch.cat(maxs)


class Reasoner:
    """All clusters of a knowledge base, mixed with weights β.

    Component 0 is the sensors' own reading; component r ≥ 1 is cluster r's
    reasoning circuit, which passes through the variables outside the
    cluster unchanged. The corrected probability of variable j is
    ``Σ_r β_r π̃_j^(r)``. ``beta`` starts uniform over the clusters (β_0 = 0)
    and :meth:`fit_beta` estimates it on labelled data.
    """

    def __init__(self, knowledge: Knowledge, include_sensor: bool = True):
        self.knowledge = knowledge
        self.circuits = [ClusterCircuit(c, max_nodes=knowledge.max_circuit_nodes) for c in knowledge.compiled_clusters]
        self.include_sensor = include_sensor
        self.beta = self._uniform_beta()

    def _uniform_beta(self) -> torch.Tensor:
        r = len(self.circuits)
        beta = torch.zeros(r + 1, dtype=torch.float64)
        if r:
            beta[1:] = 1.0 / r
        else:
            beta[0] = 1.0
        return beta

    def fresh(self) -> Reasoner:
        """A copy sharing the compiled circuits, with the initial (uniform) β."""
        out = copy.copy(self)
        out.beta = self._uniform_beta()
        return out

    @property
    def num_components(self) -> int:
        return len(self.circuits) + 1

    def components(self, p: torch.Tensor) -> torch.Tensor:
        """Every component's corrected probabilities, ``(B, R+1, V)``."""
        p = torch.as_tensor(p, dtype=torch.float64)
        out = p[:, None, :].repeat(1, self.num_components, 1)
        for r, c in enumerate(self.circuits):
            idx = torch.tensor(c.variables)
            out[:, r + 1, idx] = c.corrected(p[:, idx])
        return out

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """Mixed corrected probabilities ``(B, V)``.

        Σ_r β_r π̃^(r) is accumulated cluster by cluster as p + Σ_r β_r (π̃^(r) - p) on the
        cluster's variables (β sums to 1), so memory stays O(B·V) however many clusters there are.
        """
        p = torch.as_tensor(p, dtype=torch.float64)
        out = p * self.beta.sum()
        for r, c in enumerate(self.circuits):
            idx = torch.tensor(c.variables)
            out[:, idx] += self.beta[r + 1] * (c.corrected(p[:, idx]) - p[:, idx])
        return out

    def bounds(self, lo: torch.Tensor, hi: torch.Tensor, variables=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sound bounds ``(B, len(variables))`` on the mixed corrected probabilities over the sensor box ``[lo, hi]``.

        ``variables`` are global indices (default: all). Each component's
        bounds are exact; the mixture's bound is Σ_r β_r bound_r, sound because
        β ≥ 0. It is also exact for classes when the classes are exclusive and
        no concept sits in two clusters: every component is then extreme at the
        same class readings (own low, rivals high) and the concept readings
        separate by cluster.
        """
        lo = torch.as_tensor(lo, dtype=torch.float64)
        hi = torch.as_tensor(hi, dtype=torch.float64)
        variables = list(range(lo.shape[1])) if variables is None else [int(v) for v in variables]
        sel = torch.tensor(variables, dtype=torch.long)
        clo = lo[:, None, sel].repeat(1, self.num_components, 1)
        chi = hi[:, None, sel].repeat(1, self.num_components, 1)
        for r, c in enumerate(self.circuits):
            local = {v: i for i, v in enumerate(c.variables)}
            cols = [i for i, v in enumerate(variables) if v in local]
            if not cols:
                continue
            idx = torch.tensor(c.variables)
            a, b = c.corrected_bounds(lo[:, idx], hi[:, idx], [local[variables[i]] for i in cols])
            clo[:, r + 1, cols] = a
            chi[:, r + 1, cols] = b
        return torch.einsum("brv,r->bv", clo, self.beta), torch.einsum("brv,r->bv", chi, self.beta)

    def fit_beta(self, p: torch.Tensor, y, steps: int = 200, lr: float = 0.05) -> torch.Tensor:
        """β minimising the binary cross-entropy of the corrected class probabilities.

        ``p`` are sensor probabilities ``(n, V)``, ``y`` class labels. β lives
        on the simplex (softmax parametrisation); with ``include_sensor=False``
        β_0 stays 0.
        """
        comp = self.components(p)[:, :, : self.knowledge.num_classes].detach()
        y = torch.as_tensor(np.asarray(y), dtype=torch.long)
        target = torch.zeros(len(y), self.knowledge.num_classes, dtype=torch.float64)
        target[torch.arange(len(y)), y] = 1.0
        logits = torch.zeros(self.num_components, dtype=torch.float64, requires_grad=True)
        keep = torch.ones(self.num_components, dtype=torch.bool)
        if not self.include_sensor and self.num_components > 1:
            keep[0] = False
        opt = torch.optim.Adam([logits], lr=lr)
        for _ in range(steps):
            beta = torch.softmax(logits.masked_fill(~keep, -torch.inf), 0)
            mix = torch.einsum("brk,r->bk", comp, beta).clamp(1e-12, 1 - 1e-12)
            loss = torch.nn.functional.binary_cross_entropy(mix, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.beta = torch.softmax(logits.detach().masked_fill(~keep, -torch.inf), 0)
        return self.beta
