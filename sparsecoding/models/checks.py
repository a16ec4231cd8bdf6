"""Checks shared by the six models: parameter values, memory estimates and size strings.

:func:`parse_size` reads ``max_memory``; :func:`memory_estimate` is what
:meth:`~sparsecoding.models.base.SparseCodingModel.check_memory` compares with
it before anything large is allocated. Parameter checks live on the models
(:meth:`~sparsecoding.models.base.SparseCodingModel.check_params`) and use the
small helpers here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from probmod.errors import UsageError

from ..truncation import n_multi_states

__all__ = ["format_size", "memory_estimate", "parse_size", "require"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgt]i?)?b?\s*$", re.IGNORECASE)


def parse_size(size: Any, name: str = "max_memory") -> float:
    """Bytes from a number or a string such as ``"4GiB"``, ``"512M"`` or ``"2e9"``; None means no limit (inf).

    Example:
        >>> parse_size("4GiB") == 4 * 2**30, parse_size("1.5G"), parse_size(None)
        (True, 1500000000.0, inf)
    """
    if size is None:
        return math.inf
    if isinstance(size, (int, float, np.integer, np.floating)) and not isinstance(size, bool):
        value = float(size)
    else:
        m = _SIZE.match(str(size))
        if not m:
            raise UsageError(f"{name} must be a number of bytes or a size such as '4GiB' or '512M', got {size!r}")
        value = float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
    if not value > 0:
        raise UsageError(f"{name} must be positive, got {size!r}")
    return value


def format_size(n: float) -> str:
    """Bytes as a short human-readable string (binary units).

    Example:
        >>> format_size(3 * 2**30)
        '3.0 GiB'
    """
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def memory_estimate(model, N: int, D: int, ranks: int = 1, fitting: bool = True) -> dict[str, float]:
    """Bytes one rank needs for ``model`` on N points of D dimensions, by part (an estimate that errs high).

    * ``tables``: the state templates of the truncated E-step (the singleton
      table alone is ``(1 + H V) x H``) and ``W``, ``WᵀW`` per chunk;
    * ``chunk``: one chunk's log-joints and posteriors (``B x states``) and
      the model's per-state slot arrays (``B x states x slots``);
    * ``reduction`` (fit only): the per-chunk statistics this rank keeps, the
      reduction tree's nodes that ``Allreduce`` combines (about ``2 log2(chunks)``
      rows of statistics) and the parameter history (one row per step).
    """
    H, Hp, gamma = int(model.H), model._Hprime, model._gamma
    V = len(model.nonzero_values())
    B = max(1, min(int(model.chunk_size), int(N)))
    single, multi = 1 + H * V, n_multi_states(Hp, gamma, V)
    f8 = 8.0
    tables = f8 * (single * H + multi * Hp + 3 * D * H + 2 * H * H)
    chunk = f8 * B * (6 * (single + multi) + 2 * model.work_per_point(H, Hp, D, single, multi) + 4 * D)
    out = {"tables": tables, "chunk": chunk, "reduction": 0.0}
    if fitting:
        C = math.ceil(int(N) / B)
        stats = model.stat_size(H, D) + V + 2
        history = int(model.steps) * (model.param_size(H, D) + 5)
        tree = 2 * (2 * max(1, C - 1).bit_length() + 2)  # the tree's cover nodes (sent and received), partial sums
        out["reduction"] = f8 * (stats * (math.ceil(C / max(1, ranks)) + tree) + history)
    return out


def require(ok: bool, message: str, error: type[Exception] = UsageError) -> None:
    """Raise ``error(message)`` unless ``ok``."""
    if not ok:
        raise error(message)
