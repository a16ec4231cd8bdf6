"""Triton kernels for the layered circuit (float32; CUDA, or the CPU interpreter for tests).

The kernels mirror the torch path of :mod:`probcirc.layers` on the same
node-major buffers ``mars``/``flows`` of shape ``(num_slots, B)``:

- :func:`sum_forward`, :func:`sum_backward`: the sum layer as log-sum-exp
  (max-subtract, exp, ``tl.dot`` over blocks of children, log), dense or
  block-sparse (blocks without an edge are skipped);
- :func:`product_forward`, :func:`product_backward`: segment sums over
  edge lists sorted once per layer (CSR by parent, CSC by child), so shared
  children are reduced deterministically, without atomics;
- :func:`categorical_forward`, :func:`categorical_stats`: categorical leaves
  and their expected counts (a one-hot matrix product per variable);
- :func:`em_update`, :func:`categorical_m_step`: the smoothed EM update.

Nothing here imports Triton until a kernel is used; :func:`available` and
:func:`require_triton` probe it. Select the kernels with
:func:`probcirc.set_backend`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

MIN_TRITON = (3, 6)


def _version(v: str) -> tuple[int, int]:
    parts = (v.split("+")[0].split(".") + ["0", "0"])[:2]
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in parts)  # type: ignore[return-value]


@functools.cache
def _probe() -> str | None:
    """None when Triton is usable here, else why not (one sentence)."""
    try:
        import triton
        import triton.language as tl
    except Exception as exc:  # ImportError, or a broken install
        return f"Triton does not import ({type(exc).__name__}: {exc}); install probmod[gpu] (triton>=3.6)"
    if _version(triton.__version__) < MIN_TRITON:
        return f"Triton {triton.__version__} is too old; the kernels need Triton >= {'.'.join(map(str, MIN_TRITON))}"
    import inspect

    missing = [
        name
        for name in ("load", "store", "dot", "max", "sum", "exp", "log", "where", "program_id", "trans")
        if not hasattr(tl, name)
    ]
    if missing:
        return f"Triton {triton.__version__} lacks triton.language.{', '.join(missing)}"
    try:
        params: Mapping[str, inspect.Parameter] = inspect.signature(tl.dot).parameters
    except (TypeError, ValueError):
        params = {}
    if "input_precision" not in params:
        return (
            f"Triton {triton.__version__}: tl.dot has no input_precision argument (needed for exact float32 products)"
        )
    return None


def available() -> bool:
    """Whether Triton imports and has every feature the kernels use."""
    return _probe() is None


def require_triton() -> None:
    """Raise RuntimeError with the reason when the kernels cannot run."""
    why = _probe()
    if why is not None:
        raise RuntimeError(f"the Triton backend is unavailable: {why}")


_EXPORTS = {
    "sum_forward": "sum_layer",
    "sum_backward": "sum_layer",
    "em_update": "em",
    "product_forward": "product_layer",
    "product_backward": "product_layer",
    "categorical_forward": "categorical",
    "categorical_stats": "categorical",
    "categorical_m_step": "em",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        require_triton()
        import importlib

        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["available", "require_triton", *_EXPORTS]
