"""``inpaint``: fill in the missing pixels of images with a circuit alone, or with a diffusion model it steers."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probmod.errors import ModelMismatchError, UsageError
from probmod.progress import Progress

from ..queries import mpe, sample
from .masks import check_mask
from .posterior import CodedPosteriorMean, evidence_table
from .steer import Steering, circuit_steer, diffuse

__all__ = ["METHODS", "inpaint"]

#: what ``method`` may be: circuit alone (``sample``, ``mpe``) or with a diffusion model
METHODS = ("sample", "mpe", "steered", "repaint", "replace")


def inpaint(
    images: np.ndarray,
    known_mask: np.ndarray,
    circuit: Any,
    diffusion: Any = None,
    method: str | None = None,
    steering: Steering | None = None,
    steps: int = 20,
    jump_length: int = 5,
    jump_n_sample: int = 2,
    eta: float = 1.0,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Completed copies of ``images`` ``(N, H, W)`` uint8, where ``known_mask`` (``(H, W)`` or ``(N, H, W)``,
    True = known) is False.

    ``circuit`` is a compiled circuit (or a model holding one as ``.circuit``)
    over the ``H·W`` pixels with discrete leaves over ``K`` levels; pixels are
    mapped to levels ``round(p·(K-1)/255)``. ``diffusion`` is a
    :class:`~probcirc.inpaint.diffusion.Diffusion` or a ``(unet, scheduler)``
    pair from diffusers (pixel space, epsilon prediction, images in [-1, 1]).

    ``method``:

    * ``"sample"`` (default without ``diffusion``): an exact draw from the
      circuit's ``p(missing | known)``; ``"mpe"``: the circuit's most probable
      completion;
    * ``"steered"`` (default with ``diffusion``): the diffusion sampler steered
      by the circuit (see :mod:`probcirc.inpaint.steer`); ``"repaint"``: the
      diffusion model alone through diffusers' ``RePaintScheduler`` with
      ``jump_length``/``jump_n_sample`` resampling; ``"replace"``: the
      given scheduler with known-pixel replacement only. ``eta`` is the noise
      share of RePaint and DDIM steps (1 = ancestral sampling, as RePaint).

    Steered sampling runs on a RePaint scheduler built from the model's own
    schedule when ``jump_n_sample > 1``, so its only extra work over
    ``"repaint"`` is the circuit. Known pixels are returned as given.

    Example:
        >>> import numpy as np, torch, probcirc
        >>> from probcirc.inputs import Categorical
        >>> from probcirc.nodes import inputs, multiply, summate
        >>> eye = torch.eye(256)
        >>> leaves = [inputs(v, 256, Categorical(256), params=eye) for v in range(4)]
        >>> pc = probcirc.compile(summate(multiply(*leaves), num_nodes=1))   # all four pixels equal
        >>> img = np.array([[[7, 0], [0, 0]]], dtype=np.uint8)
        >>> inpaint(img, np.array([[True, False], [False, False]]), pc, method="mpe")
        array([[[7, 7],
                [7, 7]]], dtype=uint8)
    """
    circuit = getattr(circuit, "circuit", circuit)
    images = np.asarray(images)
    if images.ndim != 3:
        raise UsageError(f"images must be (N, H, W) grey images, got shape {images.shape}")
    n, h, w = images.shape
    known = np.broadcast_to(check_mask(np.asarray(known_mask), (h, w)), images.shape)
    if circuit.num_vars != h * w:
        raise ModelMismatchError(f"the images have {h * w} pixels ({h}x{w}) but the circuit has {circuit.num_vars}")
    method = method or ("steered" if diffusion is not None else "sample")
    if method not in METHODS:
        raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method in ("steered", "repaint", "replace") and diffusion is None:
        raise UsageError(f"method {method!r} needs a diffusion model")
    k = _num_levels(circuit)
    levels = np.rint(images.astype(np.float64) * (k - 1) / 255).astype(np.int64).reshape(n, h * w)
    gen = torch.Generator().manual_seed(seed)
    steering = steering or Steering()
    mean_of = None
    if method == "steered" and steering.weight > 0:  # the circuit's lookup tables, once for all batches
        mean_of = CodedPosteriorMean(circuit, evidence_table(steering.width, k))
    out = np.empty_like(images, dtype=np.uint8)
    with Progress(n, f"inpaint ({method})", "img", enabled=progress) as bar:
        for s in range(0, n, batch_size):
            sl = slice(s, s + batch_size)
            lv, kn = torch.from_numpy(levels[sl]), torch.from_numpy(known[sl].reshape(-1, h * w).copy())
            if method in ("sample", "mpe"):
                filled = _circuit_only(circuit, lv, kn, method, gen)
                pixels = filled.double() * 255 / (k - 1)
            else:
                steer = None if mean_of is None else circuit_steer(mean_of, lv, kn, k, steering)
                unit = _run_diffusion(
                    diffusion, images[sl], kn, method, steer, steering, steps, jump_length, jump_n_sample, gen, eta
                )
                pixels = (unit.double().reshape(len(lv), -1) + 1) * 127.5
            done = np.clip(np.rint(pixels.numpy()), 0, 255).astype(np.uint8).reshape(-1, h, w)
            out[sl] = np.where(known[sl], images[sl], done)
            bar.update(len(lv))
    return out


def _num_levels(circuit) -> int:
    counts = {g.dist.num_values for g in circuit.leaf_groups}
    if None in counts:
        raise ModelMismatchError("inpainting needs a circuit with discrete leaves (pixel levels)")
    return int(max(counts))


def _circuit_only(
    circuit, levels: torch.Tensor, known: torch.Tensor, method: str, gen: torch.Generator
) -> torch.Tensor:
    x = levels.to(circuit.dtype)
    if method == "mpe":
        return mpe(circuit, x, ~known)
    return sample(circuit, x=x, mask=~known, generator=gen)


def _run_diffusion(diffusion, images, known, method, steer, steering, steps, jump_length, jump_n_sample, gen, eta):
    from .diffusion import to_unit

    unet, scheduler = (diffusion.unet, diffusion.scheduler) if hasattr(diffusion, "unet") else diffusion
    if method == "repaint" or (method == "steered" and jump_n_sample > 1):
        scheduler = _repaint_scheduler(scheduler)
    original = to_unit(images)
    mask = known.reshape(original.shape)
    fraction = steering.fraction
    return diffuse(unet, scheduler, original, mask, steps, gen, steer, fraction, jump_length, jump_n_sample, eta)


def _repaint_scheduler(scheduler):
    """A ``RePaintScheduler`` with the same training schedule as ``scheduler`` (itself if it is one)."""
    from diffusers import RePaintScheduler

    if isinstance(scheduler, RePaintScheduler):
        return scheduler
    cfg = scheduler.config
    return RePaintScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        trained_betas=cfg.get("trained_betas"),
        clip_sample=cfg.get("clip_sample", True),
    )
