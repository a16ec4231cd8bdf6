"""Kept for compatibility: model files are handled by :mod:`probmod.io`."""

from probmod.io import *  # noqa: F403 - the same public names
from probmod.io import _REGISTRY, __all__  # noqa: F401
