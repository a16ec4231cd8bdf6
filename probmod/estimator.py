"""The estimator contract, as scikit-learn defines it, without depending on scikit-learn.

An estimator's ``__init__`` stores its hyperparameters under their own
names and does nothing else; ``fit`` validates them, learns, and sets
fitted attributes whose names end in ``_`` (plus ``n_iter_`` and
``converged_`` for iterative fits) and returns ``self``. With
:class:`Estimator` as a base, ``get_params``/``set_params`` follow from the
``__init__`` signature, so ``sklearn.base.clone`` works and the estimator
fits into pipelines and grid searches.

Example:
    >>> class Scale(Estimator):
    ...     def __init__(self, factor: float = 2.0, random_state=None):
    ...         self.factor = factor
    ...         self.random_state = random_state
    >>> est = Scale(factor=3.0)
    >>> est.get_params()
    {'factor': 3.0, 'random_state': None}
    >>> est.set_params(factor=4.0).factor
    4.0
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .errors import UsageError

__all__ = [
    "Estimator",
    "constructor_args",
    "ConvergenceWarning",
    "NotFittedError",
    "check_random_state",
    "check_is_fitted",
]


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped at its step limit before meeting its tolerance (``converged_`` is False)."""


class NotFittedError(UsageError, AttributeError):
    """A method that needs a fitted estimator was called before ``fit``."""


def constructor_args(cls: type) -> list[str]:
    """The named arguments of ``cls``'s constructor, in signature order (``*args``/``**kwargs`` left out).

    Example:
        >>> class Box:
        ...     def __init__(self, size=1, *rest, label="a", **extra): ...
        >>> constructor_args(Box)
        ['size', 'label']
    """
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class Estimator:
    """Base class giving ``get_params``, ``set_params`` and a readable ``repr`` from ``__init__``'s signature."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return sorted(constructor_args(cls))

    def get_params(self, deep: bool = True) -> dict[str, Any]:  # noqa: ARG002 - sklearn's signature
        """The hyperparameters, as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Estimator:
        """Set hyperparameters by name; returns ``self``.

        Raises:
            UsageError: for a name that is not a hyperparameter of this estimator.
        """
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise UsageError(f"{type(self).__name__} has no parameter {name!r}; valid: {', '.join(sorted(valid))}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = [
            f"{n}={getattr(self, n)!r}"
            for n, p in sig.parameters.items()
            if n != "self" and hasattr(self, n) and not _same(getattr(self, n), p.default)
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except (ValueError, TypeError):  # arrays compare elementwise
        return False


def check_random_state(random_state: None | int | np.random.Generator) -> np.random.Generator:
    """A numpy Generator: fresh entropy for None, seeded for an int, the same object for a Generator.

    Example:
        >>> a = check_random_state(0).integers(1000); b = check_random_state(0).integers(1000)
        >>> bool(a == b)
        True
    """
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, np.random.Generator):
        return random_state
    raise UsageError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}")


def check_is_fitted(est: Any, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``est`` has the fitted ``attribute``."""
    if getattr(est, attribute, None) is None:
        raise NotFittedError(f"this {type(est).__name__} is not fitted yet; call fit first")
