"""A torch function mode that catches tensors allocated off the circuit's device or dtype, on the CPU alone.

On a CPU-only machine every tensor lands on the CPU, so a query that forgets
``device=`` passes every test and breaks on the first GPU. :class:`DeviceGuard`
does not wait for a second device: while it is active, every factory call
(``torch.zeros``, ``torch.tensor``, ``torch.arange``, ...) made *from a probcirc
file in scope* must say where its tensor goes (``device=``) and, when the
tensor is floating point, in which precision (``dtype=``). ``*_like``,
``new_*`` and ``torch.tensor(t)`` / ``torch.as_tensor(t)`` of a tensor inherit
both and pass. A deliberate CPU tensor says so: ``device="cpu"``.

Each offence is recorded with its ``file:line`` and the guard raises
:class:`DeviceDisciplineError` listing them when its block ends, so a library
``try``/``except`` cannot swallow it. Host synchronisations (``.item()``,
``.tolist()``, ``.numpy()``, ``.cpu()``, ``bool(t)``...) from files in scope are
counted in :attr:`DeviceGuard.syncs`: harmless on the CPU, a stall per call on
a GPU, so tests can assert that a hot path makes none.

Example:
    >>> import torch, probcirc
    >>> from probcirc.inputs import Bernoulli
    >>> from probcirc.nodes import inputs, summate
    >>> from probcirc.testing import DeviceGuard
    >>> pc = probcirc.compile(summate(inputs(0, 2, Bernoulli()), num_nodes=1))
    >>> with DeviceGuard() as guard:  # raises DeviceDisciplineError here if the query left a tensor to defaults
    ...     lp = probcirc.queries.log_prob(pc, torch.tensor([[1.0], [0.0]]))
    >>> guard.violations, sum(guard.syncs.values())  # one host sync: the check that the evidence is 0/1
    ([], 1)
"""

from __future__ import annotations

import linecache
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from types import FrameType

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["DEFAULT_SCOPE", "DeviceDisciplineError", "DeviceGuard", "Violation"]

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../probcirc
_ROOT = os.path.dirname(_PACKAGE)  # paths are shown from here: probcirc/queries/..., tests/...
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))
_HERE = os.path.abspath(__file__)

# What runs per batch on the circuit's device: the engine, its leaves, queries, learners and the
# codec's hot path. Symbolic building (nodes/, structures/), file I/O and the command lines
# legitimately work on the CPU and stay out, and so does colep/reasoning.py for now: it compiles
# its cluster circuits on the host in float64 and keeps them there (no .to(device) yet).
DEFAULT_SCOPE: tuple[str, ...] = (
    "queries/",
    "learn/",
    "compile/",
    "layers/",
    "inputs/",
    "circuit.py",
    "gmm.py",
    "compress/program.py",
    "compress/engine.py",
)

# Factories that pick a device (and, for floats, a dtype) from torch's defaults unless told.
_FACTORIES = {
    torch.empty,
    torch.empty_strided,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.arange,
    torch.eye,
    torch.linspace,
    torch.logspace,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.scalar_tensor,
    torch.tensor,
    torch.as_tensor,
    torch.asarray,
}
# These inherit device and dtype when handed a tensor.
_FROM_DATA = {torch.tensor, torch.as_tensor, torch.asarray}
_SYNCS = {
    torch.Tensor.item,
    torch.Tensor.tolist,
    torch.Tensor.numpy,
    torch.Tensor.cpu,
    torch.Tensor.__bool__,
    torch.Tensor.__int__,
    torch.Tensor.__float__,
    torch.Tensor.__index__,
}
_WATCHED = _FACTORIES | _SYNCS


class DeviceDisciplineError(AssertionError):
    """Raised when code in scope allocated a tensor without ``device=`` (or a float without ``dtype=``)."""


@dataclass(frozen=True)
class Violation:
    """One offending call: where, which factory, and what it left to torch's defaults."""

    file: str
    line: int
    func: str
    missing: str  # "device", "dtype" or "device, dtype"

    def __str__(self) -> str:
        code = linecache.getline(os.path.join(_ROOT, self.file), self.line).strip()
        return f"{self.file}:{self.line}: torch.{self.func} without {self.missing}=  ->  {code}"


class DeviceGuard(TorchFunctionMode):
    """While active, record factory calls from probcirc files in ``scope`` that leave device or dtype to torch.

    ``scope`` lists paths relative to the ``probcirc`` package (a trailing ``/``
    takes a folder); ``files`` adds absolute paths (a test's own module, to show
    the guard at work). ``dtype=False`` checks devices only. The block raises
    :class:`DeviceDisciplineError` at its end when anything was recorded; the
    check costs a set lookup per torch call and a frame look-up per factory call.
    """

    def __init__(self, scope: Iterable[str] = DEFAULT_SCOPE, files: Iterable[str] = (), dtype: bool = True):
        super().__init__()
        self.scope = tuple(scope)
        self.files = {os.path.abspath(f) for f in files}
        self.check_dtype = dtype
        self.violations: list[Violation] = []
        self.syncs: Counter[str] = Counter()  # "probcirc/file.py:line" -> host synchronisations from there
        self._in_scope: dict[str, str | None] = {}

    def _where(self) -> tuple[str, int] | None:
        """The file (from the repository root) and line that made the watched call; None when out of scope."""
        frame: FrameType | None = sys._getframe(2)
        while frame is not None and frame.f_code.co_filename == _HERE:
            frame = frame.f_back
        if frame is None:
            return None
        name = frame.f_code.co_filename
        rel = self._in_scope.get(name, "")
        if rel == "":
            rel = self._in_scope[name] = self._relative(name)
        return None if rel is None else (rel, frame.f_lineno)

    def _relative(self, filename: str) -> str | None:
        path = os.path.abspath(filename)
        if path in self.files:
            return os.path.relpath(path, _ROOT).replace(os.sep, "/")
        if not path.startswith(_PACKAGE + os.sep) or path.startswith(_TORCH):
            return None
        rel = os.path.relpath(path, _PACKAGE).replace(os.sep, "/")
        if any(rel == s or (s.endswith("/") and rel.startswith(s)) for s in self.scope):
            return "probcirc/" + rel
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _WATCHED:  # the common case first: this runs for every torch call
            return func(*args, **kwargs)
        out = func(*args, **kwargs)
        where = self._where()
        if where is None:
            return out
        if func in _SYNCS:
            self.syncs[f"{where[0]}:{where[1]}"] += 1
            return out
        if func in _FROM_DATA and args and isinstance(args[0], torch.Tensor):
            return out
        missing = []
        if kwargs.get("device") is None:
            missing.append("device")
        floating = isinstance(out, torch.Tensor) and out.is_floating_point()
        if self.check_dtype and floating and kwargs.get("dtype") is None:
            missing.append("dtype")
        if missing:
            self.violations.append(Violation(where[0], where[1], func.__name__, ", ".join(missing)))
        return out

    def report(self) -> str:
        """The recorded offences, one line each, most frequent first."""
        counts = Counter(self.violations)
        return "\n".join(f"{v}  (x{n})" if n > 1 else str(v) for v, n in counts.most_common())

    def check(self) -> None:
        """Raise :class:`DeviceDisciplineError` listing every offence recorded so far."""
        if self.violations:
            raise DeviceDisciplineError(
                f"{len(set(self.violations))} tensor allocation(s) left to torch's default device or dtype "
                f"(pass device=/dtype= from the circuit; device='cpu' when the CPU is meant):\n{self.report()}"
            )

    def __exit__(self, exc_type, exc, tb):
        super().__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.check()
        return False
