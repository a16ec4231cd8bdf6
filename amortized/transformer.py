"""The Distribution Transformer: a GMM prior and a set of observations in, a GMM posterior out.

Whittle, Ziomek, Rawling and Osborne (2025). Each prior component is one
token, each observation is one token; a decoder stack lets components attend
to each other and to the observations, and every output token is read back as
one posterior component.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn

from probcirc import GaussianMixture
from probmod import io
from probmod.errors import FormatError, NumericalError, UsageError

from . import _gmm
from ._init_args import init_args

__all__ = ["DistributionTransformer"]

# Log-scale updates are clamped so that no input, however extreme, yields a
# zero or infinite Cholesky diagonal.
_LOG_SCALE_CLAMP = 15.0
_LOGIT_FLOOR = -50.0


def _mlp(n_in: int, d_model: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, d_model), nn.GELU(), nn.Linear(d_model, d_model))


def _mlp_weights(mlp: nn.Sequential) -> tuple[torch.Tensor, ...]:
    first, last = cast(nn.Linear, mlp[0]), cast(nn.Linear, mlp[2])
    return first.weight, first.bias, last.weight, last.bias


def _layer_weights(layer: nn.TransformerDecoderLayer) -> tuple:
    """The tensors of one pre-norm decoder layer, in the order :func:`_decoder_layer` reads them."""
    d = layer.self_attn.embed_dim
    sa, ca = layer.self_attn, layer.multihead_attn
    return (
        layer.norm1.weight,
        layer.norm1.bias,
        layer.norm2.weight,
        layer.norm2.bias,
        layer.norm3.weight,
        layer.norm3.bias,
        sa.in_proj_weight,
        sa.in_proj_bias,
        sa.out_proj.weight,
        sa.out_proj.bias,
        ca.in_proj_weight[:d],
        ca.in_proj_bias[:d],
        ca.in_proj_weight[d:],
        ca.in_proj_bias[d:],
        ca.out_proj.weight,
        ca.out_proj.bias,
        layer.linear1.weight,
        layer.linear1.bias,
        layer.linear2.weight,
        layer.linear2.bias,
        sa.num_heads,
        layer.norm1.eps,
    )


def _embed(w: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    f = nn.functional
    return f.linear(f.gelu(f.linear(x, w[0], w[1])), w[2], w[3])


def _decoder_layer(w: tuple, x: torch.Tensor, mem: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """``layer(x, mem, memory_key_padding_mask=~allowed)`` for a pre-norm, dropout-free GELU layer.

    ``w = _layer_weights(layer)``.

    The same arithmetic as torch's module without its per-module dispatch and
    attribute lookups, which dominate the cost of one small posterior.
    """
    (n1w, n1b, n2w, n2b, n3w, n3b, sw, sb, sow, sob, qw, qb, kvw, kvb, cow, cob, l1w, l1b, l2w, l2b, h, eps) = w
    f = nn.functional
    n, lq, d = x.shape
    lk = mem.shape[1]
    # (n, L, parts·d) -> (parts, n, h, L, d/h): one view and one permute instead of a split per part
    y = f.layer_norm(x, (d,), n1w, n1b, eps)
    q, k, v = f.linear(y, sw, sb).view(n, lq, 3, h, d // h).permute(2, 0, 3, 1, 4)
    x = x + f.linear(f.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, lq, d), sow, sob)
    y = f.layer_norm(x, (d,), n2w, n2b, eps)
    q = f.linear(y, qw, qb).view(n, lq, h, d // h).transpose(1, 2)
    k, v = f.linear(mem, kvw, kvb).view(n, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
    att = f.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    x = x + f.linear(att.transpose(1, 2).reshape(n, lq, d), cow, cob)
    y = f.layer_norm(x, (d,), n3w, n3b, eps)
    return x + f.linear(f.gelu(f.linear(y, l1w, l1b)), l2w, l2b)


@io.register
class DistributionTransformer(nn.Module):
    """Maps a Gaussian-mixture prior and observations to a Gaussian-mixture posterior.

    Args:
        dim: dimension D of the latent variable.
        n_components: number K of mixture components, in the prior and the posterior.
        obs_dim: width of one observation token (task-defined, e.g. ``(z)`` or ``(t, outcome)``).
        d_model: width of the token embeddings.
        n_layers: number of decoder layers (component self-attention, then
            cross-attention to the observations, then a feed-forward block).
        n_heads: attention heads; must divide ``d_model``.
        d_ff: feed-forward width (default ``4 * d_model``).
        task: name of the task family the model is trained for (stored with the weights).
        task_config: that task's settings, a JSON-serialisable dict (stored with the weights).

    Conventions:
        * ``observations`` has shape ``(*B, N, obs_dim)``; ``obs_mask`` has shape
          ``(*B, N)`` and, as everywhere in probmod, ``True`` marks an entry as
          **missing**: padding that the model ignores. ``obs_mask=None`` means
          all N observations are present; ``observations=None`` (or ``N = 0``)
          means there are none and the model updates the prior on nothing.
        * A learned "null" observation token is always present. It keeps
          attention defined when every observation is masked, and the share of
          attention it receives tells the network how many observations there are.
        * No positional encoding is used anywhere: permuting the prior's
          components permutes the posterior's, and the order of observations
          does not matter.
        * Each output token is an *update* of its input component: a weight
          logit offset, a mean shift ``L δ`` in the component's own scale, and a
          factor ``L M`` with ``M`` lower triangular with a positive diagonal.
          The network therefore starts out as the identity map (posterior = prior)
          and its output is always a valid mixture.

    Example:
        >>> import torch
        >>> from probcirc import GaussianMixture
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> model = DistributionTransformer(dim=2, n_components=3, obs_dim=2, d_model=32, n_layers=1, n_heads=2)
        >>> prior = GaussianMixture(torch.full((5, 3), 1 / 3), torch.randn(5, 3, 2), torch.eye(2).expand(5, 3, 2, 2))
        >>> obs = torch.randn(5, 4, 2)
        >>> mask = torch.tensor([[False] * 4, [False, False, True, True]] + [[True] * 4] * 3)
        >>> post = model(prior, obs, mask)
        >>> tuple(post.batch_shape), post.n_components, bool(torch.allclose(post.weights.sum(-1), torch.ones(5)))
        ((5,), 3, True)
    """

    # registered buffers and the training record, declared so type checkers see tensors, not Modules
    _tril_rows: torch.Tensor
    _tril_cols: torch.Tensor
    training_info: dict[str, Any]

    def __init__(
        self,
        dim: int,
        n_components: int,
        obs_dim: int,
        d_model: int = 64,
        n_layers: int = 3,
        n_heads: int = 4,
        d_ff: int | None = None,
        task: str | None = None,
        task_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        for name, value in (
            ("dim", dim),
            ("n_components", n_components),
            ("obs_dim", obs_dim),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("n_heads", n_heads),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if d_model % n_heads:
            raise UsageError(f"n_heads ({n_heads}) must divide d_model ({d_model})")
        self.dim, self.n_components, self.obs_dim = dim, n_components, obs_dim
        self.d_model, self.n_layers, self.n_heads = d_model, n_layers, n_heads
        self.d_ff = d_ff or 4 * d_model
        self.task, self.task_config = task, dict(task_config or {})
        n_tril = dim * (dim - 1) // 2
        self.n_token = 1 + 2 * dim + n_tril
        self.register_buffer("_tril_rows", torch.tril_indices(dim, dim, -1)[0], persistent=False)
        self.register_buffer("_tril_cols", torch.tril_indices(dim, dim, -1)[1], persistent=False)

        self.embed_component = _mlp(self.n_token, d_model)
        self.embed_observation = _mlp(obs_dim, d_model)
        self.null_observation = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(
                d_model, n_heads, self.d_ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, self.n_token)
        # Zero head: the untrained model returns the prior unchanged.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        prior: GaussianMixture,
        observations: torch.Tensor | None = None,
        obs_mask: torch.Tensor | None = None,
    ) -> GaussianMixture:
        """The posterior mixture for each prior in the batch given its observations.

        Args:
            prior: a :class:`~probcirc.GaussianMixture` with ``batch_shape`` ``B``
                (or empty, then broadcast over the observations' batch),
                ``n_components == K`` and ``dim == D``.
            observations: ``(*B, N, obs_dim)``, or ``None`` for no observations.
            obs_mask: ``(*B, N)`` bool, ``True`` = padding / absent observation.

        Returns:
            A GaussianMixture with the same batch shape, K components and dimension D.
            An empty batch (``B = 0``) gives an empty mixture batch, as torch modules do.

        Raises:
            UsageError: (a ``ValueError``) on a prior of the wrong dimension or
                component count, a non-finite prior or observation, or
                observations or a mask of the wrong shape.
            NumericalError: (an ``ArithmeticError``) when finite but extreme
                inputs (say ``1e200``) overflow the network's arithmetic; the
                message gives the largest magnitudes seen so they can be rescaled.
        """
        logits, means, tril = self._check_prior(prior)
        batch = logits.shape[:-1]
        obs, pad = self._check_observations(observations, obs_mask, batch, means)
        if obs.shape[:-2] != batch:  # an unbatched prior shared by a batch of data sets
            batch = obs.shape[:-2]
            logits, means, tril = (t.expand(*batch, *t.shape[-k:]) for t, k in ((logits, 1), (means, 2), (tril, 3)))
        nb = int(np.prod(batch)) if len(batch) else 1
        k, d = self.n_components, self.dim
        logits, means, tril = logits.reshape(nb, k), means.reshape(nb, k, d), tril.reshape(nb, k, d, d)
        n_obs = obs.shape[-2]
        obs, pad = obs.reshape(nb, n_obs, self.obs_dim), pad.reshape(nb, n_obs)

        dtype = self.head.weight.dtype
        logits = torch.log_softmax(logits, -1).clamp_min(_LOGIT_FLOOR)
        w = self._weights()
        h = _embed(w["component"], self._tokens(logits, means, tril).to(dtype))
        mem = torch.cat([self.null_observation.expand(nb, 1, -1), _embed(w["observation"], obs.to(dtype))], 1)
        # No mask at all when nothing is padded: the common real-time case, and cheaper.
        allowed = torch.cat([pad.new_zeros(nb, 1), pad], 1).logical_not()[:, None, None, :] if bool(pad.any()) else None
        for lw in w["layers"]:
            h = _decoder_layer(lw, h, mem, allowed)
        nw, nb_, hw, hb, eps = w["out"]
        out = nn.functional.linear(nn.functional.layer_norm(h, (self.d_model,), nw, nb_, eps), hw, hb).to(means.dtype)

        d_logit, d_mean, d_logdiag, d_off = out.split([1, d, d, self.n_token - 1 - 2 * d], -1)
        new_logits = logits + d_logit.squeeze(-1)
        new_means = means + (tril @ d_mean[..., None]).squeeze(-1)
        m = torch.diag_embed(d_logdiag.clamp(-_LOG_SCALE_CLAMP, _LOG_SCALE_CLAMP).exp())
        if d > 1:
            off = torch.zeros_like(m)
            off[..., self._tril_rows, self._tril_cols] = d_off
            m = m + off
        new_tril = tril @ m
        _check_finite(new_logits, new_means, new_tril, inputs=(means, tril, obs))
        shape = lambda t, n: t.reshape(*batch, *t.shape[-n:])  # noqa: E731
        return _gmm.make(shape(new_logits, 1), shape(new_means, 2), shape(new_tril, 3))

    def _weights(self) -> dict:
        """Every tensor the forward pass reads, gathered once.

        Gathering costs about as much as the arithmetic of one small
        posterior, so it is cached while gradients are off (inference); with
        gradients on it is rebuilt per call so autograd sees the parameters.
        ``_apply`` (``.to``, ``.double``, ...) drops the cache, since it may
        swap the parameters' storage.
        """
        cached = self.__dict__.get("_weight_cache")
        if cached is not None and not torch.is_grad_enabled():
            return cached
        w = {
            "component": _mlp_weights(self.embed_component),
            "observation": _mlp_weights(self.embed_observation),
            "layers": [_layer_weights(cast(nn.TransformerDecoderLayer, layer)) for layer in self.layers],
            "out": (self.norm.weight, self.norm.bias, self.head.weight, self.head.bias, self.norm.eps),
        }
        self.__dict__["_weight_cache"] = None if torch.is_grad_enabled() else w
        return w

    def _apply(self, fn, *args, **kwargs):
        self.__dict__["_weight_cache"] = None
        return super()._apply(fn, *args, **kwargs)

    def _tokens(self, logits: torch.Tensor, means: torch.Tensor, tril: torch.Tensor) -> torch.Tensor:
        log_diag = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1))
        lower = tril[..., self._tril_rows, self._tril_cols]
        return torch.cat([logits[..., None], means, log_diag, lower], -1)

    def _check_prior(self, prior: GaussianMixture):
        if not isinstance(prior, GaussianMixture):
            raise TypeError(f"prior must be a probcirc.GaussianMixture, got {type(prior).__name__}")
        if prior.dim != self.dim:
            raise UsageError(f"prior has dimension {prior.dim} but the model was built for dim={self.dim}")
        if prior.n_components != self.n_components:
            raise UsageError(
                f"prior has {prior.n_components} components but the model was built for "
                f"n_components={self.n_components}"
            )
        logits, means, tril = _gmm.params(prior)
        diag = torch.diagonal(tril, dim1=-2, dim2=-1)
        if not (bool(torch.isfinite(means).all()) and bool(torch.isfinite(tril).all()) and bool((diag > 0).all())):
            raise UsageError("prior must have finite means and Cholesky factors with a positive diagonal")
        return logits, means, tril

    def _check_observations(self, obs, mask, batch, like):
        if obs is None:
            obs = like.new_zeros(*batch, 0, self.obs_dim)
        obs = torch.as_tensor(obs)
        if not obs.is_floating_point():
            obs = obs.to(like.dtype)
        if obs.dim() < 2 or obs.shape[-1] != self.obs_dim:
            raise UsageError(
                f"observations must have shape (*batch, N, obs_dim={self.obs_dim}), got {tuple(obs.shape)}"
            )
        if len(batch) and obs.shape[:-2] != batch:
            raise UsageError(
                f"observations have batch shape {tuple(obs.shape[:-2])} but the prior has batch shape {tuple(batch)}"
            )
        if mask is None:
            mask = torch.zeros(obs.shape[:-1], dtype=torch.bool, device=obs.device)
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise UsageError(f"obs_mask must have dtype torch.bool (True = padding), got {mask.dtype}")
        if mask.shape != obs.shape[:-1]:
            raise UsageError(f"obs_mask has shape {tuple(mask.shape)}, expected {tuple(obs.shape[:-1])}")
        if not bool(torch.isfinite(obs[~mask]).all()):
            raise UsageError("observations must be finite (no NaN or infinity) where obs_mask is False")
        # Padding may hold NaN; zero it so it cannot leak through the embedding.
        obs = torch.where(mask[..., None], torch.zeros((), dtype=obs.dtype), obs)
        return obs, mask

    # ------------------------------------------------------------------ config / io
    def config(self) -> dict[str, Any]:
        """The constructor arguments, enough to rebuild the architecture."""
        return init_args(self)

    def _state(self) -> tuple[dict, dict]:
        import json

        cfg = self.config()
        attrs = {k: v for k, v in cfg.items() if k not in ("task", "task_config")}
        attrs["task"] = self.task or ""
        attrs["task_config"] = json.dumps(self.task_config)
        attrs["training"] = json.dumps(getattr(self, "training_info", {}))
        arrays = {f"state/{k}": v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        return attrs, arrays

    @classmethod
    def _from_state(cls, attrs: dict, arrays: dict) -> DistributionTransformer:
        import json

        from .modelfile import architecture, check_state, task_config

        # Sizes and settings are checked before anything is built: a file is untrusted input.
        cfg = architecture(attrs)
        state = {k.removeprefix("state/"): np.asarray(v) for k, v in arrays.items()}
        check_state(cfg, {k: v.shape for k, v in state.items()})
        task, config = task_config(attrs)
        try:
            training = json.loads(attrs.get("training", "{}"))
        except (TypeError, ValueError) as err:
            raise FormatError(f"model file: training record is not valid JSON ({err})") from None
        model = cls(**cfg, task=task, task_config=config)
        model.training_info = training if isinstance(training, dict) else {}
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        model.eval()
        return model


def _check_finite(
    logits: torch.Tensor, means: torch.Tensor, tril: torch.Tensor, inputs: tuple[torch.Tensor, ...]
) -> None:
    """Refuse to return a posterior that overflowed: finite inputs can still be too large for the arithmetic."""
    # One scalar carries every entry (NaN and inf propagate through sums, and the log of a zero
    # diagonal is -inf): a few operations instead of one reduction per tensor, on the batch-1 hot path.
    total = logits.sum() + means.sum() + tril.sum() + torch.diagonal(tril, dim1=-2, dim2=-1).log().sum()
    if not bool(torch.isfinite(total)):
        big = max((float(t.abs().max()) for t in inputs if t.numel()), default=0.0)
        raise NumericalError(
            f"the posterior is not finite: inputs too extreme for the network (largest |value| "
            f"{big:.3g} among prior means, prior scales and observations); rescale the problem"
        )
