"""Gaussian mixtures with full covariances and exact marginals and conditionals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from probmod.errors import UsageError

from . import io
from .distribution import Distribution, _sample_shape, check_mask

__all__ = ["ConditionalMixture", "GaussianMixture"]

_LOG_2PI = math.log(2 * math.pi)


@io.register
class GaussianMixture(Distribution):
    """A mixture of K Gaussians in D dimensions, held as weights, means and Cholesky factors.

    Args:
        weights: mixture weights, shape ``(*B, K)``, non-negative, summing to 1.
        means: component means, shape ``(*B, K, D)``.
        covariances: full covariance matrices, shape ``(*B, K, D, D)``, symmetric
            positive definite.
        validate: check the arguments (the default). Turn it off only for
            parameters that are valid by construction.

    ``batch_shape`` is ``B`` (empty for one mixture) and ``event_shape`` is ``(D,)``.
    float32 and float64 are both supported; all parameters share one dtype.

    Raises:
        ValueError: if the shapes disagree, the weights are negative or do not sum
            to 1, or a covariance is not symmetric positive definite.

    Example:
        >>> import torch
        >>> gmm = GaussianMixture(
        ...     weights=torch.tensor([0.3, 0.7]),
        ...     means=torch.tensor([[0.0, 0.0], [3.0, 3.0]]),
        ...     covariances=torch.eye(2).expand(2, 2, 2),
        ... )
        >>> gmm.log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
        >>> x = torch.tensor([[0.5, float("nan")]])
        >>> missing = torch.tensor([[False, True]])
        >>> gmm.log_prob(x, missing).shape      # the NaN is marginalised out
        torch.Size([1])
        >>> gmm.marginal([1]).event_shape
        torch.Size([1])
    """

    def __init__(
        self,
        weights: torch.Tensor,
        means: torch.Tensor,
        covariances: torch.Tensor,
        validate: bool = True,
    ):
        weights, means, covariances = _as_float_tensors(weights, means, covariances)
        if validate:
            _check_shapes(weights, means, covariances)
            _check_weights(weights)
            if not torch.allclose(covariances, covariances.mT, rtol=1e-5, atol=1e-6):
                raise ValueError("covariances must be symmetric")
        scale_tril, info = torch.linalg.cholesky_ex(covariances)
        if validate and bool((info != 0).any()):
            bad = tuple(torch.nonzero(info)[0].tolist())
            raise ValueError(f"covariance {bad} is not positive definite")
        self._set(torch.log(weights), means, scale_tril)

    @classmethod
    def from_cholesky(
        cls,
        logits: torch.Tensor,
        means: torch.Tensor,
        scale_tril: torch.Tensor,
        validate: bool = True,
    ) -> GaussianMixture:
        """Build from unnormalised log weights, means and lower Cholesky factors.

        The logits are normalised with ``log_softmax``; gradients flow through
        every argument, which is what a network that outputs a mixture needs.

        Example:
            >>> import torch
            >>> g = GaussianMixture.from_cholesky(torch.zeros(3), torch.randn(3, 2), torch.eye(2).repeat(3, 1, 1))
            >>> g.weights
            tensor([0.3333, 0.3333, 0.3333])
        """
        logits, means, scale_tril = _as_float_tensors(logits, means, scale_tril)
        if validate:
            _check_shapes(logits, means, scale_tril)
            diag = torch.diagonal(scale_tril, dim1=-2, dim2=-1)
            if not bool((diag > 0).all()) or not bool(torch.isfinite(scale_tril).all()):
                raise ValueError("scale_tril must be finite with a positive diagonal")
            if not torch.equal(scale_tril, torch.tril(scale_tril)):
                raise ValueError("scale_tril must be lower triangular")
        gmm = cls.__new__(cls)
        gmm._set(torch.log_softmax(logits, dim=-1), means, scale_tril)
        return gmm

    def _set(self, logits: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> None:
        self.logits = logits
        self.means = means
        self.scale_tril = scale_tril
        self.batch_shape = means.shape[:-2]
        self.event_shape = means.shape[-1:]

    # ------------------------------------------------------------------ views
    @property
    def weights(self) -> torch.Tensor:
        """Mixture weights, shape ``(*B, K)``."""
        return self.logits.exp()

    @property
    def covariances(self) -> torch.Tensor:
        """Covariance matrices ``L Lᵀ``, shape ``(*B, K, D, D)``."""
        return self.scale_tril @ self.scale_tril.mT

    @property
    def n_components(self) -> int:
        return self.means.shape[-2]

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def to(self, *args, **kwargs) -> GaussianMixture:
        """Move or cast the parameters, like :meth:`torch.Tensor.to`."""
        out = GaussianMixture.__new__(GaussianMixture)
        out._set(*(t.to(*args, **kwargs) for t in (self.logits, self.means, self.scale_tril)))
        return out

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(n_components={self.n_components}, dim={self.dim}, "
            f"batch_shape={tuple(self.batch_shape)}, dtype={self.dtype})"
        )

    # ---------------------------------------------------------------- queries
    def log_prob(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Exact log density of ``x``, shape ``(*S, *B, D)`` -> ``(*S, *B)``.

        With a ``mask`` (True = missing, one per sample), the missing entries
        are integrated out exactly: each sample is scored under the marginal
        over its observed entries. A sample with everything missing scores 0.
        NaN is allowed only where the mask marks an entry missing.

        Raises:
            UsageError: if an observed entry (mask False, or no mask) is NaN.
        """
        x = self._check_x(x)
        mask = check_mask(x, mask)
        _check_observed(x, mask)
        if mask is None or not bool(mask.any()):
            return torch.logsumexp(self.logits + _component_log_prob(x, self.means, self.scale_tril), dim=-1)
        out = x.new_empty(x.shape[:-1])
        for idx, observed, params in self._groups(x, mask):
            logits, means, tril = params
            if not bool(observed.any()):
                out.view(-1)[idx] = 0.0
                continue
            o = observed.nonzero().squeeze(-1)
            sub_tril = torch.linalg.cholesky(_sub_cov(tril, o, o))
            xo = x.reshape(-1, self.dim)[idx][:, o]
            comp = _component_log_prob(xo, means[..., o], sub_tril)
            out.view(-1)[idx] = torch.logsumexp(logits + comp, dim=-1)
        return out

    def sample(self, sample_shape: int | Sequence[int] = (), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw samples of shape ``(*sample_shape, *B, D)``, reproducibly when given a ``generator``."""
        shape = _sample_shape(sample_shape) + self.batch_shape
        probs = self.logits.exp().reshape(-1, self.n_components)
        n = int(np.prod(shape[: len(shape) - len(self.batch_shape)])) if len(shape) > len(self.batch_shape) else 1
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # (prod B, n)
        comp = draws.T.reshape(shape)
        index = comp[..., None, None].expand(*comp.shape, 1, self.dim)
        mean = self.means.expand(*shape, *self.means.shape[-2:]).gather(-2, index).squeeze(-2)
        tril_index = comp[..., None, None, None].expand(*comp.shape, 1, self.dim, self.dim)
        tril = self.scale_tril.expand(*shape, *self.scale_tril.shape[-3:]).gather(-3, tril_index).squeeze(-3)
        eps = torch.randn(*shape, self.dim, dtype=self.dtype, device=self.means.device, generator=generator)
        return mean + (tril @ eps[..., None]).squeeze(-1)

    def marginal(self, vars: Sequence[int]) -> GaussianMixture:
        """The exact marginal over the dimensions ``vars``, in that order."""
        idx = self._check_vars(vars)
        tril = torch.linalg.cholesky(_sub_cov(self.scale_tril, idx, idx))
        out = GaussianMixture.__new__(GaussianMixture)
        out._set(self.logits, self.means[..., idx], tril)
        return out

    def condition(self, x: torch.Tensor, mask: torch.Tensor) -> ConditionalMixture:
        """The exact posterior over the missing entries of each sample given its observed ones.

        Args:
            x: shape ``(N, D)``; entries under the mask are ignored.
            mask: shape ``(N, D)``, True = missing (the entries to infer).

        Returns:
            A :class:`ConditionalMixture` holding, per sample, the posterior weights
            ``(N, K)``, means ``(N, K, D)`` and covariances ``(N, K, D, D)``
            written in the full D-dimensional space: at observed entries the mean
            is the observed value and the covariance rows and columns are zero.
            ``result[i]`` gives sample i's posterior as a GaussianMixture over
            its missing dimensions.

        Example:
            >>> import torch
            >>> g = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.tensor([[[1.0, 0.8], [0.8, 1.0]]]))
            >>> post = g.condition(torch.tensor([[1.0, 0.0]]), torch.tensor([[False, True]]))
            >>> post[0].means      # E[x1 | x0 = 1] = 0.8
            tensor([[0.8000]])
        """
        if self.batch_shape:
            raise NotImplementedError("condition() needs a single mixture (empty batch_shape)")
        x = self._check_x(x)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        mask = check_mask(x, mask)
        if mask is None:
            raise UsageError("condition needs a mask (True = missing) saying which entries to infer")
        _check_observed(x, mask)
        n, k, d = x.shape[0], self.n_components, self.dim
        logw = self.logits.expand(n, k).clone()
        means = torch.where(mask[:, None, :], self.means[None], x[:, None, :]).clone()
        covs = x.new_zeros(n, k, d, d)
        full_cov = self.covariances
        for idx, observed, _ in self._groups(x, mask):
            o, m = observed.nonzero().squeeze(-1), (~observed).nonzero().squeeze(-1)
            if len(o) == 0:
                covs[idx[:, None, None], :, m[:, None], m] = _sub(full_cov, m, m).permute(1, 2, 0)
                continue
            tril_oo = torch.linalg.cholesky(_sub(full_cov, o, o))
            comp = _component_log_prob(x[idx][:, o], self.means[:, o], tril_oo)
            logw[idx] = torch.log_softmax(self.logits + comp, dim=-1)
            if len(m) == 0:
                continue
            s_om = _sub(full_cov, o, m)
            # A = L_oo⁻¹ Σ_om, so Σ_mo Σ_oo⁻¹ Σ_om = Aᵀ A and the gain uses the same solve.
            a = torch.linalg.solve_triangular(tril_oo, s_om, upper=False)
            post_cov = _sub(full_cov, m, m) - a.mT @ a
            resid = x[idx][:, o][:, None, :] - self.means[:, o][None]  # (n_g, K, |o|)
            white = torch.linalg.solve_triangular(tril_oo, resid.permute(1, 2, 0), upper=False)  # (K, |o|, n_g)
            shift = (a.mT @ white).permute(2, 0, 1)  # (n_g, K, |m|)
            means[idx[:, None], :, m] = (self.means[:, m][None] + shift).permute(0, 2, 1)
            covs[idx[:, None, None], :, m[:, None], m] = post_cov.permute(1, 2, 0)
        return ConditionalMixture(logw.exp(), means, covs, mask)

    def mpe(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The most probable completion under the joint with the component, ``(N, D)``.

        Like a circuit's MPE (where sum nodes are the latents), this maximises
        ``p(x_missing, k | x_observed)`` over the missing entries and the component
        k; it is exact for that joint (see :meth:`ConditionalMixture.mpe`). The
        mode of the marginal over x alone has no closed form.

        Example:
            >>> import torch
            >>> means = torch.tensor([[0.0, 0.0], [5.0, 5.0]])
            >>> g = GaussianMixture(torch.tensor([0.4, 0.6]), means, torch.eye(2).repeat(2, 1, 1))
            >>> g.mpe(torch.tensor([[4.0, 0.0]]), torch.tensor([[False, True]]))
            tensor([[4., 5.]])
        """
        x = self._check_x(x)
        if mask is None:
            _check_observed(x, None)
            return x.clone()
        return self.condition(x, mask).mpe()

    @property
    def mean(self) -> torch.Tensor:
        """The mixture's mean, shape ``(*B, D)``."""
        return (self.weights[..., None] * self.means).sum(-2)

    @property
    def variance(self) -> torch.Tensor:
        """The mixture's per-dimension variance, shape ``(*B, D)``."""
        second = (self.weights[..., None] * (self.scale_tril.square().sum(-1) + self.means.square())).sum(-2)
        return (second - self.mean.square()).clamp_min(0)

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        X: torch.Tensor | np.ndarray,
        n_components: int,
        max_iter: int = 200,
        tol: float = 1e-6,
        reg_covar: float = 1e-6,
        seed: int | None = 0,
        progress: bool = False,
    ) -> GaussianMixture:
        """Fit a mixture to ``X`` (shape ``(N, D)``) by EM from a k-means++ start.

        NaN entries are missing values and are handled exactly: the E-step uses
        each sample's marginal over its observed entries and the expected
        sufficient statistics of the missing ones. Stops when the mean
        log-likelihood improves by less than ``tol``.

        Example:
            >>> import torch
            >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
            <...>
            >>> X = torch.cat([torch.randn(200, 2) - 4, torch.randn(200, 2) + 4]).double()
            >>> X[::7, 0] = float("nan")
            >>> g = GaussianMixture.fit(X, 2)
            >>> sorted(round(m) for m in g.means[:, 1].tolist())
            [-4, 4]
        """
        from .gmm_fit import fit_em

        return fit_em(cls, X, n_components, max_iter, tol, reg_covar, seed, progress)

    # ---------------------------------------------------------------- helpers
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x, device=self.means.device)
        if not x.is_floating_point():
            x = x.to(self.dtype)
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must end in the event dimension {self.dim}, got shape {tuple(x.shape)}")
        return x.to(self.dtype)

    def _check_vars(self, vars: Sequence[int]) -> torch.Tensor:
        idx = torch.as_tensor(list(vars), dtype=torch.long, device="cpu")  # checked on the host, then moved
        if idx.numel() == 0 or idx.min() < 0 or idx.max() >= self.dim or len(set(idx.tolist())) != len(idx):
            raise ValueError(f"vars must be distinct indices in [0, {self.dim}), got {list(vars)}")
        return idx.to(self.means.device)

    def _groups(self, x: torch.Tensor, mask: torch.Tensor):
        """Yield (flat sample indices, observed pattern, parameters) per distinct mask row.

        Grouping by pattern keeps each sub-covariance factorisation exact and
        shared by every sample with that pattern.
        """
        flat_mask = mask.reshape(-1, self.dim)
        n = flat_mask.shape[0]
        nb = int(np.prod(self.batch_shape)) if self.batch_shape else 1
        batch_index = torch.arange(n, device=x.device) % nb if nb > 1 else None
        patterns, inverse = torch.unique(flat_mask, dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            idx = (inverse == p).nonzero().squeeze(-1)
            if batch_index is None:
                params = (self.logits, self.means, self.scale_tril)
            else:
                b = batch_index[idx]
                params = (
                    self.logits.reshape(nb, *self.logits.shape[len(self.batch_shape) :])[b],
                    self.means.reshape(nb, *self.means.shape[len(self.batch_shape) :])[b],
                    self.scale_tril.reshape(nb, *self.scale_tril.shape[len(self.batch_shape) :])[b],
                )
            yield idx, ~pattern, params

    # ------------------------------------------------------------------ io
    def _state(self) -> tuple[dict, dict]:
        return {"dtype": str(self.dtype).removeprefix("torch.")}, {
            "weights": self.weights.detach().cpu().numpy(),
            "means": self.means.detach().cpu().numpy(),
            "scale_tril": self.scale_tril.detach().cpu().numpy(),
        }

    @classmethod
    def _from_state(cls, attrs: dict, arrays: dict) -> GaussianMixture:
        dtype = getattr(torch, attrs["dtype"])
        w, m, l = (torch.from_numpy(np.asarray(arrays[k])).to(dtype) for k in ("weights", "means", "scale_tril"))
        return cls.from_cholesky(torch.log(w), m, l)


@dataclass
class ConditionalMixture:
    """Per-sample posterior mixtures returned by :meth:`GaussianMixture.condition`.

    All arrays are written in the full D-dimensional space so that samples with
    different masks share one batched layout: at observed entries the mean is
    the observed value and the covariance rows and columns are zero.

    Attributes:
        weights: ``(N, K)`` posterior component weights.
        means: ``(N, K, D)``.
        covariances: ``(N, K, D, D)``.
        mask: ``(N, D)``, True where the entry was missing (is inferred).
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.weights.shape[0]

    def __getitem__(self, i: int) -> GaussianMixture:
        """Sample ``i``'s posterior as a GaussianMixture over its missing dimensions."""
        m = self.mask[i].nonzero().squeeze(-1)
        if len(m) == 0:
            raise ValueError(f"sample {i} has no missing entries, so no posterior to return")
        cov = self.covariances[i][:, m[:, None], m]
        return GaussianMixture(self.weights[i], self.means[i][:, m], cov, validate=False)

    @property
    def mean(self) -> torch.Tensor:
        """The posterior mean, shape ``(N, D)``, equal to ``x`` at observed entries."""
        mixed = (self.weights[..., None] * self.means).sum(-2)
        return torch.where(self.mask, mixed, self.means[:, 0])

    @property
    def variance(self) -> torch.Tensor:
        """The posterior variance of every entry, shape ``(N, D)``, 0 at observed entries."""
        second = (self.weights[..., None] * (torch.diagonal(self.covariances, dim1=-2, dim2=-1) + self.means**2)).sum(
            -2
        )
        return torch.where(self.mask, (second - self.mean**2).clamp_min(0), torch.zeros_like(second))

    def mpe(self) -> torch.Tensor:
        """The most probable completion under the joint with the component, ``(N, D)``.

        ``max over (k, x_m) of w_k N(x_m; μ_k, Σ_k)`` is attained at ``x_m = μ_k`` for
        the k with the largest ``log w_k - ½ log det Σ_k`` (missing block), so it is exact.
        """
        n = len(self)
        if n == 0:
            return self.means[:, 0].clone()
        tril = torch.linalg.cholesky(self._padded_covariances())
        score = self.weights.log() - torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
        best = score.argmax(-1)
        return self.means[torch.arange(n, device=best.device), best]

    def _padded_covariances(self) -> torch.Tensor:
        """Covariances with a unit diagonal at observed entries: factorisable, and the missing block unchanged."""
        return self.covariances + torch.diag_embed(self.mask.logical_not().to(self.covariances.dtype))[:, None]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x_missing | x_observed) of completions ``x`` ``(N, D)``; their observed entries are ignored.

        Samples are grouped by mask pattern, so each group is one batched mixture.
        """
        x = torch.as_tensor(x, dtype=self.means.dtype, device=self.means.device)
        if x.shape != self.mask.shape:
            raise ValueError(f"x must have shape {tuple(self.mask.shape)}, got {tuple(x.shape)}")
        out = torch.zeros(len(self), dtype=x.dtype, device=x.device)
        patterns, inverse = torch.unique(self.mask, dim=0, return_inverse=True)
        for p, pattern in enumerate(patterns):
            rows, m = (inverse == p).nonzero().squeeze(-1), pattern.nonzero().squeeze(-1)
            if len(m):
                post = GaussianMixture(
                    self.weights[rows],
                    self.means[rows][..., m],
                    self.covariances[rows][..., m[:, None], m],
                    validate=False,
                )
                out[rows] = post.log_prob(x[rows][:, m])
        return out

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One completion per sample, shape ``(N, D)``: observed entries kept, missing ones drawn."""
        n, k, d = self.means.shape
        if n == 0:
            return self.means[:, 0].clone()
        comp = torch.multinomial(self.weights, 1, generator=generator).squeeze(-1)
        rows = torch.arange(n, device=comp.device)
        mean = self.means[rows, comp]
        # Observed rows are zero; a unit diagonal there keeps the factorisation
        # defined, and the mask zeroes their noise.
        tril = torch.linalg.cholesky(self._padded_covariances()[rows, comp])
        eps = torch.randn(n, d, dtype=mean.dtype, device=mean.device, generator=generator) * self.mask
        return mean + (tril @ eps[..., None]).squeeze(-1)


# ---------------------------------------------------------------------------
def _as_float_tensors(*ts):
    # Lists and arrays join the tensors' device (the CPU when none is a tensor).
    device = next((t.device for t in ts if isinstance(t, torch.Tensor)), torch.device("cpu"))
    ts = [torch.as_tensor(t, device=device) for t in ts]
    dtype = torch.promote_types(ts[0].dtype, torch.float32) if not ts[0].is_floating_point() else ts[0].dtype
    for t in ts[1:]:
        if t.is_floating_point():
            dtype = torch.promote_types(dtype, t.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    return [t.to(dtype) for t in ts]


def _check_shapes(weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> None:
    if means.dim() < 2:
        raise ValueError(f"means must have shape (*B, K, D), got {tuple(means.shape)}")
    *b, k, d = means.shape
    if tuple(weights.shape) != (*b, k):
        raise ValueError(
            f"weights must have shape {(*b, k)} to match means {tuple(means.shape)}, got {tuple(weights.shape)}"
        )
    if tuple(covs.shape) != (*b, k, d, d):
        raise ValueError(f"covariances must have shape {(*b, k, d, d)} to match means, got {tuple(covs.shape)}")
    if not all(bool(torch.isfinite(t).all()) for t in (means, covs)):
        raise ValueError("means and covariances must be finite")


def _check_weights(weights: torch.Tensor) -> None:
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError("weights must be finite and non-negative")
    tol = 1e-5 if weights.dtype == torch.float32 else 1e-10
    total = weights.sum(-1)
    if not torch.allclose(total, torch.ones_like(total), atol=tol * weights.shape[-1], rtol=0):
        raise ValueError(f"weights must sum to 1 over the last axis, got sums {total.flatten()[:4].tolist()}")


def _check_observed(x: torch.Tensor, mask: torch.Tensor | None) -> None:
    """NaN means missing only where the mask says so; anywhere else it is a mistake worth naming."""
    bad = torch.isnan(x) if mask is None else torch.isnan(x) & ~mask
    if bool(bad.any()):
        where = tuple(bad.nonzero()[0].tolist())
        hint = "pass mask=torch.isnan(x)" if mask is None else "set the mask True there"
        raise UsageError(f"x{list(where)} is NaN but observed; to treat it as missing, {hint}")


def _sub(mat: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return mat[..., rows[:, None], cols]


def _sub_cov(tril: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Σ[rows, cols] from the Cholesky factor, without forming all of Σ."""
    return tril[..., rows, :] @ tril[..., cols, :].mT


def _component_log_prob(x: torch.Tensor, means: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
    """log N(x; μ_k, L_k L_kᵀ) for every component: ``(..., D)`` -> ``(..., K)``."""
    d = means.shape[-1]
    diff = x[..., None, :] - means  # (*S, *B, K, D)
    # The samples become the right-hand sides of one solve per component, so
    # the factors are never broadcast over the samples (memory S·D, not S·D²).
    lead = diff.shape[: diff.dim() - means.dim()]
    rhs = diff.reshape(math.prod(lead), *diff.shape[len(lead) :]).movedim(0, -1)  # (*B, K, D, S); S may be 0
    white = torch.linalg.solve_triangular(tril, rhs, upper=False)
    maha = white.square().sum(-2).movedim(-1, 0).reshape(*lead, *diff.shape[len(lead) : -1])
    half_logdet = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (d * _LOG_2PI + maha) - half_logdet
