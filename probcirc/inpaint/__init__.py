"""Inpainting with probabilistic circuits, alone or steering a diffusion model.

The steering follows Liu, Niepert & Van den Broeck, ICLR 2024.

An application on the engine's public queries: exact conditional sampling
and MPE for circuit-only completions, and the exact posterior under hard and
soft evidence (:mod:`probcirc.inpaint.posterior`) for steering a diffusers
sampler (:mod:`probcirc.inpaint.steer`). Diffusion models come from
``diffusers`` (the ``inpaint`` extra); a small MNIST DDPM ships with the package.
"""

from .api import METHODS, inpaint
from .masks import MASK_KINDS, check_mask, load_mask, make_mask
from .posterior import evidence_weights, pixel_posterior, posterior_mean
from .steer import Steering, diffuse

__all__ = [
    "MASK_KINDS",
    "METHODS",
    "Steering",
    "check_mask",
    "diffuse",
    "evidence_weights",
    "inpaint",
    "load_mask",
    "make_mask",
    "pixel_posterior",
    "posterior_mean",
]
