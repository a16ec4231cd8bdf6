"""L2 projected gradient descent (PGD) attacks, for evaluating prediction sets under perturbation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["pgd_l2", "sensor_loss", "classifier_loss"]


def pgd_l2(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    X,
    y,
    eps: float,
    steps: int = 20,
    step_size: float | None = None,
    clip: tuple[float, float] | None = (0.0, 1.0),
    batch_size: int = 1024,
) -> torch.Tensor:
    """Maximise ``loss_fn(x_adv, y)`` (per-sample losses) over the L2 ball of radius ``eps`` around each x.

    Each step moves along the normalised gradient by ``step_size`` (default
    2.5·eps/steps), projects back onto the ball and clips to ``clip``. Returns
    float32 ``(n, d)`` adversarial inputs with ||x_adv - x||_2 ≤ eps.
    """
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if eps <= 0:
        return X.clone()
    step_size = step_size or 2.5 * eps / steps
    out = []
    for s in range(0, len(X), batch_size):
        x0, yb = X[s : s + batch_size], y[s : s + batch_size]
        x = x0.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            loss = loss_fn(x, yb).sum()
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                g = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                x = x + step_size * g
                d = x - x0
                d = d * (eps / d.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
                x = x0 + d
                if clip is not None:
                    x = x.clamp(*clip)
        out.append(x.detach())
    return torch.cat(out)


def sensor_loss(sensors: Callable, knowledge) -> Callable:
    """Summed binary cross-entropy of every class and concept sensor against the true labels.

    ``sensors`` must be differentiable in torch (e.g. :class:`MLPSensors`).
    """
    table = torch.as_tensor(knowledge.labels(np.arange(knowledge.num_classes)), dtype=torch.float32)

    def loss(x, y):
        p = sensors(x).clamp(1e-6, 1 - 1e-6)
        t = table[y]
        return -(t * p.log() + (1 - t) * (1 - p).log()).sum(1)

    return loss


def classifier_loss(model: Callable) -> Callable:
    """Cross-entropy of a softmax classifier (``model(x) -> (n, K)`` probabilities)."""

    def loss(x, y):
        return -model(x).clamp_min(1e-12).log().gather(1, y[:, None]).squeeze(1)

    return loss
