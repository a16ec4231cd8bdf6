"""Test helpers shipped with the library (docs/gpu.md, "Device discipline")."""

from .device import DeviceDisciplineError, DeviceGuard

__all__ = ["DeviceDisciplineError", "DeviceGuard"]
