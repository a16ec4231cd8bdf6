"""Small random circuits with explicit parameters, and an independent reference evaluator.

The reference walks the symbolic graph recursively in float64 numpy with its
own leaf formulas (scipy), sharing no code with the compiled layers.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from scipy import stats

import probcirc
from probcirc.inputs import Bernoulli, Binomial, Categorical, Gaussian
from probcirc.nodes import InputNodes, ProdNodes, SumNodes, inputs, multiply, summate
from probcirc.structures import HCLT, PD, RAT_SPN

FAMILIES = {"categorical": Categorical(3), "bernoulli": Bernoulli(), "binomial": Binomial(3)}


def randomize(root, seed: int, zero_fraction: float = 0.0):
    """Give every group explicit random parameters (some exact zeros if asked)."""
    rng = np.random.default_rng(seed)
    for g in root.topological():
        if isinstance(g, SumNodes):
            w = rng.gamma(1.0, size=(g.num_nodes, g.num_inputs))
            if g.edges is not None:
                w = w * g.edges.numpy()
            if zero_fraction:
                keep = w * (rng.random(w.shape) > zero_fraction)
                w = np.where(keep.sum(1, keepdims=True) > 0, keep, w)
            g.params = torch.tensor(w / w.sum(1, keepdims=True))
        elif isinstance(g, InputNodes):
            d = g.dist
            if isinstance(d, Categorical):
                p = rng.gamma(1.0, size=(g.num_nodes, d.num_cats))
                if zero_fraction:
                    p = p * (rng.random(p.shape) > zero_fraction)
                    p[:, 0] += 0.05
                g.params = torch.tensor(p / p.sum(1, keepdims=True))
            elif isinstance(d, Gaussian):
                g.params = torch.tensor(np.stack([rng.normal(size=g.num_nodes), rng.uniform(0.5, 1.5, g.num_nodes)], 1))
            else:
                g.params = torch.tensor(rng.uniform(0.05, 0.95, (g.num_nodes, 1)))
    return root


def dag(dist) -> SumNodes:
    """Hand-made DAG: shared children, a sum of sums, and sums over children at different depths."""
    leaf = [inputs(v, 2, dist) for v in range(4)]
    a = summate(multiply(leaf[0], leaf[1]), num_nodes=2)
    b = summate(multiply(leaf[2], leaf[3]), num_nodes=2)
    deep = summate(multiply(summate(multiply(leaf[0], leaf[1]), num_nodes=2), b), num_nodes=2)
    ab = multiply(a, b)
    mixed = summate(
        ab, deep, num_nodes=3, edges=torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 1]], dtype=torch.bool)
    )
    sum_of_sums = summate(mixed, num_nodes=2)
    return summate(sum_of_sums, multiply(a, b), num_nodes=1)


def structures(dist, seed=0):
    """(name, symbolic root) for each structure over small numbers of variables."""
    values = dist.num_values or 2
    data = np.random.default_rng(seed).integers(0, values, (200, 4))
    data[:, 1] = data[:, 0]  # some dependence for the Chow-Liu tree
    return [
        ("hclt", HCLT(data, num_latents=3, input_dist=dist)),
        ("pd", PD((2, 2), num_latents=2, input_dist=dist)),
        ("ratspn", RAT_SPN(4, num_latents=2, depth=1, repetitions=2, input_dist=dist, seed=seed)),
        ("dag", dag(dist)),
    ]


def compiled(root, seed=0, **kw):
    return probcirc.compile(randomize(root, seed, **kw), dtype=torch.float64)


# ------------------------------------------------------------------- reference
def leaf_pmf(g: InputNodes, value: float) -> np.ndarray:
    p = g.params.numpy()
    d = g.dist
    if isinstance(d, Categorical):
        return p[:, int(value)]
    if isinstance(d, Bernoulli):
        return stats.bernoulli(p[:, 0]).pmf(int(value))
    if isinstance(d, Binomial):
        return stats.binom(d.total_count, p[:, 0]).pmf(int(value))
    return stats.norm(p[:, 0], p[:, 1]).pdf(value)


def leaf_max(g: InputNodes) -> np.ndarray:
    d = g.dist
    return np.max([leaf_pmf(g, v) for v in range(d.num_values)], axis=0)


def reference(root, x, missing=None, max_product=False) -> float:
    """p(x_observed) (or the max-product value) of one sample, by recursion on the symbolic graph."""
    missing = np.zeros(len(x), bool) if missing is None else np.asarray(missing)
    memo = {}

    def value(g):
        if g.id in memo:
            return memo[g.id]
        if isinstance(g, InputNodes):
            if missing[g.var]:
                out = leaf_max(g) if max_product else np.ones(g.num_nodes)
            else:
                out = leaf_pmf(g, x[g.var])
        elif isinstance(g, ProdNodes):
            out = np.prod([value(c) for c in g.children], axis=0)
        else:
            child = np.concatenate([value(c) for c in g.children])
            w = g.params.numpy()
            out = (w * child).max(1) if max_product else w @ child
        memo[g.id] = out
        return out

    return float(value(root)[0])


def all_assignments(num_vars, num_values):
    return np.array(list(itertools.product(range(num_values), repeat=num_vars)), dtype=float)
