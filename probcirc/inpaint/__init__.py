"""Inpainting with probabilistic circuits, alone or steering a diffusion model.

The steering follows Liu, Niepert & Van den Broeck, ICLR 2024.

An application on the engine's public queries: exact conditional sampling
and MPE for circuit-only completions, and the exact posterior under hard and
soft evidence (:mod:`probcirc.inpaint.posterior`) for steering a diffusers
sampler (:mod:`probcirc.inpaint.steer`). Diffusion models come from
``diffusers`` (the ``inpaint`` extra); a small MNIST DDPM ships with the package.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # diffusers is imported lazily below; it must never reach for the hub

from .api import METHODS, inpaint  # noqa: E402 - after the environment is set
from .masks import MASK_KINDS, check_mask, load_mask, make_mask  # noqa: E402
from .posterior import evidence_weights, pixel_posterior, posterior_mean  # noqa: E402
from .steer import Steering, diffuse  # noqa: E402

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
