"""Sensors: anything that maps inputs to per-class and per-concept probabilities; a small torch trainer.

A COLEP sensor set is any callable ``sensors(X)`` returning either one array
``(n, K + C)`` (classes first, then concepts, in the knowledge's order), a pair
``(class_probs (n, K), concept_probs (n, C))``, or a dict with keys
``"classes"`` and ``"concepts"``. Values must lie in [0, 1]; each is the
probability that the corresponding binary variable is 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from probmod.progress import Progress

from ._signatures import with_keywords_of

__all__ = [
    "as_probabilities",
    "MLPSensors",
    "MLPClassifier",
    "random_affine",
    "train_sensors",
    "train_classifier",
    "predict_proba",
]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def as_probabilities(sensors: Callable, X, num_classes: int, num_concepts: int) -> torch.Tensor:
    """Call ``sensors(X)`` and return its readings as a validated float64 tensor ``(n, K + C)``."""
    with torch.no_grad():
        out = sensors(X)
    if isinstance(out, dict):
        if set(out) != {"classes", "concepts"}:
            raise ValueError(f"a sensors dict needs exactly the keys 'classes' and 'concepts', got {sorted(out)}")
        out = (out["classes"], out["concepts"])
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"sensors returned {len(out)} arrays; expected (class_probs, concept_probs)")
        a, b = (torch.as_tensor(np.asarray(o) if not torch.is_tensor(o) else o, dtype=torch.float64) for o in out)
        if b.dim() == 1 and b.numel() == 0:
            b = b.reshape(a.shape[0], 0)
        out = torch.cat([a, b], 1)
    p = torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out).detach().to(torch.float64).cpu()
    want = num_classes + num_concepts
    if p.dim() != 2 or p.shape[1] != want:
        raise ValueError(
            f"sensors must return (n, {want}) probabilities "
            f"({num_classes} classes then {num_concepts} concepts), got {tuple(p.shape)}"
        )
    if not bool(torch.isfinite(p).all()) or bool(((p < 0) | (p > 1)).any()):
        raise ValueError("sensor readings must be probabilities in [0, 1]")
    return p


def _mlp(d_in: int, d_out: int, hidden: Sequence[int]) -> nn.Sequential:
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class _MLPModel(nn.Module):
    """An MLP from ``d_in`` features to ``num_outputs`` logits; subclasses turn logits into probabilities."""

    def __init__(self, d_in: int, num_outputs: int, hidden: Sequence[int] = (64,)):
        super().__init__()
        self.net = _mlp(d_in, num_outputs, hidden)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.as_tensor(x, dtype=torch.float32))


class MLPSensors(_MLPModel):
    """Independent sigmoid outputs, one per class and per concept (``hidden=()`` is logistic regression)."""

    def forward(self, x) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


class MLPClassifier(_MLPModel):
    """A softmax classifier, the single multiclass model behind the standard CP and RSCP baselines."""

    def forward(self, x) -> torch.Tensor:
        return torch.softmax(self.logits(x), -1)


def random_affine(shape: tuple[int, int], degrees: float = 10.0, scale: float = 0.1, shift: float = 2.0) -> Augment:
    """Augmentation that rotates, zooms and shifts flattened ``shape`` images at random.

    Each image is turned about its centre by an angle in ±``degrees``, zoomed
    by a factor in 1 ± ``scale`` and then moved by up to ±``shift`` pixels
    along each axis (bilinear, zero fill). For handwriting these stand in for
    writers the training set lacks, so the sensors lean less on the training
    writers' own style. Pass the result as ``augment=`` to :func:`train_sensors`
    or :func:`train_classifier`; it draws from the trainer's generator, so the
    batches' order and noise change with it, e.g.
    ``train_sensors(X, y, kb, augment=random_affine((28, 28)))``.

    Example:
        >>> import torch
        >>> from probcirc.colep import random_affine
        >>> augment = random_affine((28, 28), degrees=15)
        >>> augment(torch.rand(5, 784), torch.Generator().manual_seed(0)).shape
        torch.Size([5, 784])
    """
    h, w = shape
    if h < 1 or w < 1:
        raise ValueError(f"random_affine needs a positive image shape, got {shape}")

    def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != h * w:
            raise ValueError(f"random_affine({shape}) needs rows of {h * w} values, got shape {tuple(x.shape)}")
        n = x.shape[0]
        u = torch.rand(n, 4, generator=g, dtype=torch.float64) * 2 - 1
        angle, zoom = u[:, 0] * np.deg2rad(degrees), 1 + u[:, 1] * scale
        # A maps an output offset from the centre (pixels) to the input offset it samples: the inverse of turn + zoom
        a = (
            torch.stack(
                [
                    torch.stack([torch.cos(angle), torch.sin(angle)], 1),
                    torch.stack([-torch.sin(angle), torch.cos(angle)], 1),
                ],
                1,
            )
            / zoom[:, None, None]
        )
        t = torch.stack([u[:, 2], u[:, 3]], 1) * shift
        # affine_grid works in [-1, 1] per axis, i.e. pixels scaled by S = diag(2/w, 2/h); sampling at
        # A (o - t) moves the turned content by exactly t pixels
        s_ = torch.tensor([2.0 / w, 2.0 / h], dtype=torch.float64)
        lin = s_[None, :, None] * a / s_[None, None, :]
        trans = -s_[None, :] * (a @ t[:, :, None])[:, :, 0]
        theta = torch.cat([lin, trans[:, :, None]], 2).to(dtype=x.dtype, device=x.device)
        grid = nn.functional.affine_grid(theta, [n, 1, h, w], align_corners=False)
        return nn.functional.grid_sample(x.reshape(n, 1, h, w), grid, align_corners=False).reshape(n, h * w)

    return augment


@dataclass(frozen=True)
class _TrainingOptions:
    """The settings :func:`train_sensors` and :func:`train_classifier` share, as keywords after their own arguments."""

    hidden: Sequence[int] = (64,)
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 128
    noise_sigma: float = 0.0
    weight_decay: float = 1e-4
    seed: int = 0
    augment: Augment | None = None
    progress: bool = False


def _fit(model_cls: type[_MLPModel], num_outputs: int, X, targets: torch.Tensor, loss_fn, opts: _TrainingOptions):
    g = torch.Generator().manual_seed(opts.seed)
    X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed only; global RNG untouched
        torch.manual_seed(opts.seed)
        model = model_cls(X.shape[1], num_outputs, opts.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    n = X.shape[0]
    model.train()
    with Progress(opts.epochs, f"train {type(model).__name__}", "epoch", enabled=opts.progress) as bar:
        for _ in range(opts.epochs):
            perm = torch.randperm(n, generator=g)
            for s in range(0, n, opts.batch_size):
                idx = perm[s : s + opts.batch_size]
                xb = X[idx]
                if opts.augment is not None:
                    xb = opts.augment(xb, g)
                if opts.noise_sigma > 0:
                    xb = xb + opts.noise_sigma * torch.randn(xb.shape, generator=g)
                loss = loss_fn(model.logits(xb), targets[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            bar.update()
    model.eval()
    return model


@with_keywords_of(_TrainingOptions)
def train_sensors(X, y, knowledge, **options) -> MLPSensors:
    """Train one network with a sigmoid output per class and per concept (binary cross-entropy).

    Concept targets come from ``knowledge.concept_classes``. ``noise_sigma > 0``
    adds Gaussian noise to every training batch (augmentation for randomised
    smoothing); ``augment(batch, generator)`` transforms every batch before
    that, e.g. :func:`random_affine`. ``progress=True`` reports epochs on stderr.
    The keywords after ``knowledge`` are those in the signature (``hidden=(64,)``,
    ``epochs=30``, ``lr=1e-3``, ...). Example::

        sensors = train_sensors(X_train, y_train, digits_knowledge(), hidden=(64,), noise_sigma=0.25)
    """
    targets = torch.as_tensor(knowledge.labels(y), dtype=torch.float32)
    return _fit(
        MLPSensors,
        knowledge.num_variables,
        X,
        targets,
        nn.functional.binary_cross_entropy_with_logits,
        _TrainingOptions(**options),
    )


@with_keywords_of(_TrainingOptions)
def train_classifier(X, y, num_classes: int, **options) -> MLPClassifier:
    """Train a softmax classifier (cross-entropy), optionally with Gaussian noise
    and ``augment`` as in :func:`train_sensors`, whose keywords it takes."""
    targets = torch.as_tensor(np.asarray(y), dtype=torch.long)
    return _fit(MLPClassifier, num_classes, X, targets, nn.functional.cross_entropy, _TrainingOptions(**options))


def predict_proba(model: Callable, X, batch_size: int = 4096) -> torch.Tensor:
    """``model(X)`` in float64, batched and without gradients."""
    X = torch.as_tensor(np.asarray(X) if not torch.is_tensor(X) else X, dtype=torch.float32)
    with torch.no_grad():
        return torch.cat(
            [torch.as_tensor(model(X[s : s + batch_size])).to(torch.float64) for s in range(0, len(X), batch_size)]
        )
