"""Kept for compatibility: the interface now lives in :mod:`probmod.distribution`."""

from probmod.distribution import Conditional, Distribution, _sample_shape, check_mask

__all__ = ["Distribution", "Conditional", "check_mask", "_sample_shape"]
