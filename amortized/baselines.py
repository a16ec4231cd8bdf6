"""The two baselines an amortised posterior is measured against.

* :func:`gmm_vi`: per-data-set variational inference. A K-component GMM
  (initialised at the prior) maximises the reparameterised ELBO with Adam.
  The mixture ELBO is written as Σ_k w_k E_{N_k}[log p(x, z) − log q(x)], with
  reparameterised draws inside each component and the weights entering
  exactly, so no discrete sample needs a gradient.
* :func:`importance_sampling`: self-normalised importance sampling with the
  prior as proposal. To score it by KL and NLL the weighted draws are turned
  into a density, a weighted Gaussian kernel density estimate (itself a GMM,
  one component per draw; Silverman's bandwidth from the effective sample size).

Both run batched over problems: problems are independent, so one optimiser
over the sum of their objectives is the same as one per problem.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from probcirc import GaussianMixture

from . import _gmm
from .tasks import Problems, Task


def _unpack(raw_logdiag: torch.Tensor, off: torch.Tensor, rows, cols) -> torch.Tensor:
    tril = torch.diag_embed(raw_logdiag.exp())
    if len(rows):
        tril = tril.index_put(
            (torch.arange(tril.shape[0])[:, None, None], torch.arange(tril.shape[1])[None, :, None], rows, cols), off
        )
    return tril


def gmm_vi(
    task: Task,
    problems: Problems,
    steps: int = 500,
    lr: float = 0.05,
    n_samples: int = 16,
    n_components: int | None = None,
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
) -> GaussianMixture:
    """Fit one GMM posterior per problem by maximising the ELBO with Adam.

    ``callback(step)``, if given, is called after every Adam step (for progress reports).

    Example:
        >>> import torch
        >>> from amortized.tasks import LinearGaussian
        >>> task = LinearGaussian(dim=1, n_components=2)
        >>> p = task.sample(3, torch.Generator().manual_seed(0))
        >>> gmm_vi(task, p, steps=20).batch_shape
        torch.Size([3])
    """
    gen = torch.Generator().manual_seed(seed)
    prior = problems.prior.to(torch.float64)
    b, k0, d = prior.means.shape
    k = n_components or k0
    rows, cols = torch.tril_indices(d, d, -1)
    # Start at the prior (repeating components if more are asked for), with a
    # small jitter so that equal components can separate.
    rep = torch.arange(k) % k0
    logits = prior.logits[:, rep].clone().requires_grad_()
    means = (prior.means[:, rep] + 0.01 * torch.randn(b, k, d, generator=gen, dtype=torch.float64)).requires_grad_()
    tril0 = prior.scale_tril[:, rep]
    logdiag = torch.log(torch.diagonal(tril0, dim1=-2, dim2=-1)).clone().requires_grad_()
    off = tril0[..., rows, cols].clone().requires_grad_()
    opt = torch.optim.Adam([logits, means, logdiag, off], lr=lr)
    # Cosine decay: at a constant step size the ELBO's sampling noise keeps q jittering around the optimum.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=0.01 * lr)
    obs, mask = problems.observations.double(), problems.obs_mask
    for i in range(steps):
        tril = _unpack(logdiag, off, rows, cols)
        eps = torch.randn(n_samples, b, k, d, generator=gen, dtype=torch.float64)
        x = means + (tril @ eps[..., None])[..., 0]  # (S, B, K, D)
        flat = x.permute(0, 2, 1, 3).reshape(n_samples * k, b, d)
        q = _gmm.make(logits, means, tril)
        f = _gmm.log_prob(prior, flat) + task.log_likelihood(flat, obs, mask) - _gmm.log_prob(q, flat)
        f = f.reshape(n_samples, k, b).mean(0).T  # (B, K)
        elbo = (torch.softmax(logits, -1) * f).sum(-1)
        opt.zero_grad(set_to_none=True)
        (-elbo.sum()).backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(i)
    with torch.no_grad():
        return _gmm.make(logits.detach().clone(), means.detach().clone(), _unpack(logdiag, off, rows, cols).detach())


def importance_sampling(task: Task, problems: Problems, n_samples: int = 1000, seed: int = 0) -> GaussianMixture:
    """Self-normalised importance sampling from the prior, returned as a weighted-KDE GMM.

    Example:
        >>> import torch
        >>> from amortized.tasks import LinearGaussian
        >>> task = LinearGaussian(dim=2, n_components=2)
        >>> p = task.sample(3, torch.Generator().manual_seed(0))
        >>> importance_sampling(task, p, n_samples=100).n_components
        100
    """
    gen = torch.Generator().manual_seed(seed)
    prior = problems.prior.to(torch.float64)
    x = _gmm.sample(prior, n_samples, gen)  # (M, B, D)
    logw = task.log_likelihood(x, problems.observations.double(), problems.obs_mask)
    logw = torch.log_softmax(logw, 0)
    w = logw.exp()
    d = x.shape[-1]
    mean = (w[..., None] * x).sum(0)
    diff = x - mean
    cov = (w[..., None, None] * diff[..., :, None] * diff[..., None, :]).sum(0)  # (B, D, D)
    ess = 1.0 / (w**2).sum(0)
    h2 = (ess * (d + 2) / 4) ** (-2 / (d + 4))
    # A floor tied to the prior's spread keeps a one-draw estimate a proper density.
    _, prior_cov = _gmm.mean_cov(prior)
    kcov = h2[:, None, None] * cov + 1e-4 * prior_cov
    tril = torch.linalg.cholesky(kcov)[:, None].expand(-1, n_samples, d, d)
    return _gmm.make(logw.T.contiguous(), x.permute(1, 0, 2).contiguous(), tril)
