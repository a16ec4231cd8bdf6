"""Diffusion inpainting loops over any diffusers UNet and scheduler, optionally steered by a circuit.

One loop serves three samplers:

* a ``DDPMScheduler`` or ``DDIMScheduler``: after each step the known pixels
  are put back at the noise level of the next step (RePaint's replacement,
  without resampling);
* a ``RePaintScheduler``: RePaint itself (Lugmayr et al. 2022), its
  resampling jumps and replacement done by the scheduler, as diffusers'
  ``RePaintPipeline`` does;
* either of them **steered** (Liu, Niepert & Van den Broeck, ICLR 2024): at the
  early steps (timestep in the top ``fraction`` of the schedule) the model's
  prediction of the clean image x̂0 becomes soft evidence on the missing
  pixels, the circuit computes their exact posterior given that and the known
  pixels as hard evidence, and x̂0 is replaced by
  ``(1 - weight)·x̂0 + weight·E[x | evidence]`` on the missing pixels. The
  scheduler then continues from the mixed x̂0: the noise prediction it is
  given is the one consistent with it, ``(x_t - √ᾱ_t x̂0') / √(1-ᾱ_t)``, so
  any epsilon-predicting scheduler takes the steering without changes.

With ``weight = 0`` the model output is passed on untouched, so the steered
sampler is the plain one, bit for bit, under the same generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from probmod.errors import UsageError

from .posterior import CodedPosteriorMean

__all__ = ["Steering", "diffuse"]


@dataclass(frozen=True)
class Steering:
    """How the circuit steers: ``weight`` of its posterior mean in x̂0, on timesteps in the top ``fraction``
    of the schedule, with soft evidence of standard deviation ``width`` pixel levels around x̂0."""

    weight: float = 0.5
    fraction: float = 0.2
    width: float = 48.0

    def __post_init__(self) -> None:
        if not 0 <= self.weight <= 1:
            raise UsageError(f"steering weight must lie in [0, 1], got {self.weight}")
        if not 0 <= self.fraction <= 1:
            raise UsageError(f"share of steered steps must lie in [0, 1], got {self.fraction}")
        if not self.width > 0:
            raise UsageError(f"soft-evidence width must be > 0 pixel levels, got {self.width}")


def _check_scheduler(scheduler) -> None:
    kind = getattr(getattr(scheduler, "config", None), "prediction_type", "epsilon")
    if kind != "epsilon":
        raise UsageError(f"steering needs a scheduler whose model predicts noise (epsilon), got {kind!r}")


def diffuse(
    unet,
    scheduler,
    original: torch.Tensor,
    known: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    steer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    fraction: float = 0.2,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    eta: float = 1.0,
) -> torch.Tensor:
    """Inpaint ``original`` ``(B, C, H, W)`` in [-1, 1] where ``known`` ``(B, 1|C, H, W)`` is False.

    ``steer(x0_hat, t)`` returns the x̂0 to continue from; it is called on
    timesteps ``t >= (1 - fraction) · num_train_timesteps`` only.
    ``jump_length`` and ``jump_n_sample`` are RePaint's resampling settings,
    used only with a ``RePaintScheduler``. ``eta`` is the DDIM noise share of a
    RePaint or DDIM step: 1 (the default) is ancestral DDPM sampling, as in the
    RePaint paper. At ``eta = 0`` a step is deterministic and re-encodes the old
    x̂0 through the noise prediction, so a changed x̂0 moves ``x_{t-1}`` only by
    ``(√ᾱ_{t-1} - √ᾱ_t ...)``, almost nothing at high noise: steering needs ``eta > 0``.
    """
    from diffusers import DDIMScheduler, RePaintScheduler

    _check_scheduler(scheduler)
    repaint = isinstance(scheduler, RePaintScheduler)
    extra = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    if repaint:
        scheduler.set_timesteps(steps, jump_length, jump_n_sample, original.device)
        scheduler.eta = eta
    else:
        scheduler.set_timesteps(steps, device=original.device)
    mask = known.to(original.dtype).expand_as(original)
    sample = torch.randn(original.shape, generator=generator, device=original.device, dtype=original.dtype)
    timesteps = [int(t) for t in scheduler.timesteps]
    first_steered = (1 - fraction) * scheduler.config.num_train_timesteps
    t_last = timesteps[0] + 1
    for i, t in enumerate(timesteps):
        if repaint and t >= t_last:  # a RePaint jump back up: re-noise, no model call
            sample = scheduler.undo_step(sample, t_last, generator)
            t_last = t
            continue
        with torch.no_grad():
            eps = unet(sample, t).sample
        if steer is not None and t >= first_steered:
            eps = _steered_eps(scheduler, sample, eps, t, steer)
        if repaint:
            sample = scheduler.step(eps, t, sample, original, mask, generator).prev_sample
        else:
            sample = scheduler.step(eps, t, sample, generator=generator, **extra).prev_sample
            prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            sample = mask * _noised(scheduler, original, prev, generator) + (1 - mask) * sample
        t_last = t
    return sample


def _steered_eps(scheduler, sample: torch.Tensor, eps: torch.Tensor, t: int, steer) -> torch.Tensor:
    """The noise prediction whose x̂0 is ``steer(x̂0, t)``."""
    abar = scheduler.alphas_cumprod[t].to(sample.dtype)
    x0 = ((sample - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
    return (sample - abar.sqrt() * steer(x0, t)) / (1 - abar).sqrt()


def _noised(scheduler, original: torch.Tensor, t: int, generator) -> torch.Tensor:
    """``original`` at the noise level of timestep ``t`` (itself once past the last step)."""
    if t < 0:
        return original
    abar = scheduler.alphas_cumprod[t].to(original.dtype)
    noise = torch.randn(original.shape, generator=generator, device=original.device, dtype=original.dtype)
    return abar.sqrt() * original + (1 - abar).sqrt() * noise


def circuit_steer(
    mean_of: CodedPosteriorMean, levels: torch.Tensor, known: torch.Tensor, num_values: int, steering: Steering
):
    """The ``steer`` callable for :func:`diffuse`: mixes the circuit's posterior mean into x̂0 on missing pixels.

    ``mean_of`` holds the circuit and the evidence table (``steering.width``).

    ``levels`` ``(B, D)`` are the images in circuit levels ``[0, num_values)``;
    ``known`` ``(B, D)`` marks the hard evidence. The soft evidence on a missing
    pixel is a Gaussian bump of ``steering.width`` levels at x̂0 rounded to a level.
    """
    top = num_values - 1
    hard = num_values + levels.long().clamp(0, top)
    flat_evidence: list[torch.Tensor] = []  # width = inf: the posterior ignores x̂0, so one query serves every step

    def steer(x0: torch.Tensor, t: int) -> torch.Tensor:  # noqa: ARG001 - the same evidence model at every step
        flat = x0.reshape(x0.shape[0], -1)
        if flat_evidence:
            mean = flat_evidence[0]
        else:
            guess = torch.round((flat.double() + 1) * top / 2).clamp(0, top).long()
            mean = mean_of(torch.where(known, hard, guess)).to(x0.dtype) * 2 / top - 1
            if steering.width == float("inf"):
                flat_evidence.append(mean)
        mixed = torch.where(known, flat, (1 - steering.weight) * flat + steering.weight * mean)
        return mixed.reshape(x0.shape)

    return steer
