"""The arguments an object was built with, read back from its ``__init__`` signature."""

from __future__ import annotations

from typing import Any

from probmod.estimator import constructor_args


def init_args(obj: object) -> dict[str, Any]:
    """``{name: obj.name}`` for every named argument of ``type(obj)``'s constructor, tuples as lists.

    The constructor must store each argument under its own name (a property
    will do); tuples become lists so that the result survives a JSON round trip
    unchanged and compares equal to a reloaded copy.

    Example:
        >>> class Box:
        ...     def __init__(self, size=(1, 2), label="a"):
        ...         self.size, self.label = size, label
        >>> init_args(Box())
        {'size': [1, 2], 'label': 'a'}
    """
    return {name: _jsonable(getattr(obj, name)) for name in constructor_args(type(obj))}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
