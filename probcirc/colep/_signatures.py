"""Signatures that take the keywords of another callable through ``**options``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def with_keywords_of(source: Callable) -> Callable[[F], F]:
    """Complete the signature of a function that passes ``**options`` on: ``source``'s defaulted parameters
    join it as keyword-only ones, so that ``help()``, the docs and IDEs list them.

    The function itself still receives ``**options``; it hands them to
    ``source`` (or to whatever checks them), which rejects an unknown name.

    Example:
        >>> def fit(x, lr=0.1, steps=5): ...
        >>> @with_keywords_of(fit)
        ... def fit_twice(x, y, **options): return fit(x, **options), fit(y, **options)
        >>> inspect.signature(fit_twice)
        <Signature (x, y, *, lr=0.1, steps=5)>
    """

    def complete(fn: F) -> F:
        sig = inspect.signature(fn)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        shared = [
            p.replace(kind=p.KEYWORD_ONLY)
            for p in inspect.signature(source).parameters.values()
            if p.default is not p.empty and p.name not in sig.parameters
        ]
        fn.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
        return fn

    return complete
