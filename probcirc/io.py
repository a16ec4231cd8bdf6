"""Kept for compatibility: model files are handled by :mod:`probmod.io`."""

from probmod.io import *  # noqa: F403 - the same public names
from probmod.io import __all__, _REGISTRY  # noqa: F401
