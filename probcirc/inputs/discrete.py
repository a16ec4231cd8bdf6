"""Discrete leaves: categorical, Bernoulli and binomial."""

from __future__ import annotations

import math

import torch

from .base import InputDist, check_integers, keep_where_empty


class Categorical(InputDist):
    """A categorical leaf over ``{0, ..., num_cats - 1}``; parameters are the probabilities.

    Example:
        >>> import torch
        >>> d = Categorical(3)
        >>> d.log_prob(torch.tensor([[0.2, 0.3, 0.5]]), torch.tensor([[2.0, 0.0]])).exp()
        tensor([[0.5000, 0.2000]])
    """

    def __init__(self, num_cats: int):
        if not isinstance(num_cats, int) or num_cats < 2:
            raise ValueError(f"num_cats must be an integer >= 2, got {num_cats!r}")
        self.num_cats = self.num_params = self.num_values = num_cats

    def _hyper(self) -> tuple:
        return (self.num_cats,)

    def init_params(self, n, generator):
        p = torch.rand(n, self.num_cats, generator=generator, dtype=torch.float64, device=generator.device) + 0.5
        return p / p.sum(-1, keepdim=True)

    def check_params(self, params):
        _check_simplex(params, "Categorical probabilities")

    def check_values(self, x):
        check_integers(x, 0, self.num_cats - 1, "Categorical")

    def _index(self, params, x):
        # An expanded (not copied) index: one row of values serves every leaf of a variable.
        return x.long().clamp(0, self.num_cats - 1).expand(*params.shape[:-1], x.shape[-1])

    def log_prob(self, params, x):
        # The log of the table, then a gather: exact zeros give -inf, never NaN.
        return params.log().gather(-1, self._index(params, x))

    def mode(self, params):
        return params.argmax(-1).to(params.dtype)

    def sample(self, params, generator):
        return torch.multinomial(params, 1, generator=generator).squeeze(-1).to(params.dtype)

    def stats(self, params, x, observed, flows):
        counts = torch.zeros_like(params)
        all_observed = bool(observed.all())
        counts.scatter_add_(-1, self._index(params, x), flows if all_observed else flows * observed)
        if all_observed:
            return counts
        return counts + (flows * ~observed).sum(-1, keepdim=True) * params

    def stat_seen(self, x, observed):
        # A value that no sample shows gets no count, unless the variable is missing somewhere
        # (then every value gets its expected share).
        seen = torch.zeros(*x.shape[:-1], self.num_cats, dtype=torch.bool, device=x.device)
        seen.scatter_(-1, self._index(seen, x), True)
        return seen | ~observed.all(-1, keepdim=True)

    def m_step(self, stats, params, pseudocount):
        total = stats.sum(-1) + pseudocount
        return keep_where_empty((stats + pseudocount / self.num_cats).div_(total[..., None]), params, total)

    def pmf(self, params):
        return params

    def to_unconstrained(self, params):
        return params.log()

    def from_unconstrained(self, free):
        return torch.softmax(free, -1)


class _OneProbability(InputDist):
    """Shared parts of families with one success probability per node."""

    num_params = 1

    def init_params(self, n, generator):
        return torch.rand(n, 1, generator=generator, dtype=torch.float64, device=generator.device) * 0.6 + 0.2

    def check_params(self, params):
        if params.shape[-1] != 1 or bool(((params < 0) | (params > 1)).any()):
            raise ValueError(f"{type(self).__name__} parameters must be one probability in [0, 1] per node")

    def _trials(self) -> int:
        return 1

    def stats(self, params, x, observed, flows):
        successes = torch.where(observed, x, self._trials() * params[..., :1])
        return torch.stack([(flows * successes).sum(-1), flows.sum(-1) * self._trials()], -1)

    def m_step(self, stats, params, pseudocount):
        total = stats[..., 1] + pseudocount
        return keep_where_empty(((stats[..., 0] + pseudocount / 2) / total)[..., None], params, total)

    def to_unconstrained(self, params):
        return torch.logit(params)

    def from_unconstrained(self, free):
        return torch.sigmoid(free)


class Bernoulli(_OneProbability):
    """A Bernoulli leaf over ``{0, 1}``; the parameter is P(x = 1)."""

    num_values = 2

    def check_values(self, x):
        check_integers(x, 0, 1, "Bernoulli")

    def log_prob(self, params, x):
        p = params[..., :1]
        return torch.where(x > 0.5, torch.log(p), torch.log1p(-p))

    def mode(self, params):
        return (params[..., 0] > 0.5).to(params.dtype)

    def sample(self, params, generator):
        return torch.bernoulli(params[..., 0], generator=generator)

    def pmf(self, params):
        # [1 - p, p] directly: exp(log p) would not give p back bit for bit
        p = params[..., :1]
        return torch.cat([1 - p, p], -1)


class Binomial(_OneProbability):
    """A binomial leaf with ``total_count`` trials; the parameter is the success probability."""

    def __init__(self, total_count: int):
        if not isinstance(total_count, int) or total_count < 1:
            raise ValueError(f"total_count must be a positive integer, got {total_count!r}")
        self.total_count = total_count
        self.num_values = total_count + 1

    def _hyper(self) -> tuple:
        return (self.total_count,)

    def _trials(self) -> int:
        return self.total_count

    def check_values(self, x):
        check_integers(x, 0, self.total_count, "Binomial")

    def log_prob(self, params, x):
        p, n = params[..., :1], self.total_count
        log_choose = math.lgamma(n + 1.0) - torch.lgamma(x + 1) - torch.lgamma(n - x + 1)
        # xlogy keeps 0·log 0 = 0 at the boundary probabilities.
        return log_choose + torch.xlogy(x, p) + torch.xlogy(n - x, 1 - p)

    def mode(self, params):
        return torch.floor((self.total_count + 1) * params[..., 0]).clamp(max=self.total_count)

    def sample(self, params, generator):
        count = torch.full_like(params[..., 0], float(self.total_count))
        return torch.binomial(count, params[..., 0], generator=generator)


def _check_simplex(params, what):
    if bool((params < 0).any()) or not bool(torch.isfinite(params).all()):
        raise ValueError(f"{what} must be finite and non-negative")
    total = params.sum(-1)
    if not torch.allclose(total, torch.ones_like(total), atol=1e-4):
        raise ValueError(f"{what} must sum to 1 per node, got sums like {total.flatten()[0].item():.6g}")
