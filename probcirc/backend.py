"""Which code computes the layers: the torch path or the Triton kernels.

``set_backend("auto")`` (the default) runs the Triton kernels of
:mod:`probcirc.kernels` on float32 CUDA tensors when Triton imports, and the
torch path everywhere else. ``"torch"`` always uses the torch path.
``"triton"`` always uses the kernels; on CPU tensors that is only possible
under the Triton interpreter (``TRITON_INTERPRET=1``, used by the tests).

Matrix products run in exact float32 (``input_precision="ieee"``) unless a
training loop opts into an approximate mode with :func:`approximate`; exact
queries and the codec wrap themselves in :func:`exact`, which always wins.

Example:
    >>> import probcirc
    >>> probcirc.set_backend("torch")
    >>> probcirc.backend.get_backend()
    'torch'
    >>> probcirc.set_backend("auto")
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch

BACKENDS = ("auto", "torch", "triton")
PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")

_backend = "auto"
_state = threading.local()


def set_backend(name: str) -> None:
    """Select the backend: ``"auto"``, ``"torch"`` or ``"triton"`` (see the module docstring)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "triton":
        from . import kernels

        kernels.require_triton()
    _backend = name


def get_backend() -> str:
    """The backend set by :func:`set_backend` (``"auto"`` unless changed)."""
    return _backend


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def use_triton(t: torch.Tensor) -> bool:
    """Whether the layers computing on tensor ``t`` go through the Triton kernels.

    Raises a ValueError naming the fix when the backend is ``"triton"`` but the
    tensor cannot be handled (CPU without the interpreter, or not float32).
    """
    if _backend == "torch":
        return False
    if _backend == "auto":
        if not t.is_cuda or t.dtype != torch.float32:
            return False
        from . import kernels

        return kernels.available()
    if t.dtype != torch.float32:
        raise ValueError(
            f"the Triton kernels compute in float32, but this circuit is {t.dtype}; "
            "compile it with dtype=torch.float32 or call probcirc.set_backend('auto')"
        )
    if not t.is_cuda and not interpreting():
        raise ValueError(
            "backend 'triton' needs CUDA tensors (move the circuit with .to('cuda')), or TRITON_INTERPRET=1 "
            "to run the kernels on the CPU through the Triton interpreter (slow; for tests)"
        )
    return True


def matmul_precision() -> str:
    """The precision of the sum layers' matrix products now: one of :data:`PRECISIONS`."""
    if getattr(_state, "exact", 0):
        return "ieee"
    return getattr(_state, "precision", "ieee")


@contextlib.contextmanager
def approximate(mode: str = "tf32"):
    """Let the Triton sum-layer kernels use approximate matrix products inside the block.

    ``"tf32"`` keeps 10 mantissa bits of each factor, ``"bf16"`` keeps 7; the
    sums are still accumulated in float32. The factors lie in [0, 1] (weights
    and max-scaled exponentials), so each product carries a relative error of
    about 5e-4 (tf32) or 4e-3 (bf16), and so does each sum node's value
    before its log: fine for training by EM or SGD, never for exact queries,
    which wrap themselves in :func:`exact`. ``"tf32x3"`` splits each factor
    into two tf32 parts and runs three tensor-core products, close to float32
    accuracy (not bit-identical to it). On the torch path only ``"bf16"`` has an
    effect, on the CPU (:func:`bmm`).
    """
    if mode not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {mode!r}")
    old = getattr(_state, "precision", "ieee")
    _state.precision = mode
    try:
        yield
    finally:
        _state.precision = old


def bmm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``torch.bmm`` for the sum layers' torch path, in the precision :func:`matmul_precision` allows.

    Under ``"bf16"`` on the CPU, oneDNN may round the float32 factors to bfloat16 (AMX or
    AVX512-BF16 units, about 2.5x faster at 256 latents) and still accumulates and returns
    float32: each product carries a relative error of about 1e-3. The switch is torch's
    process-wide float32 matmul precision, set only around this product (threads that run
    exact queries at the same moment could see it). Other modes and devices: plain float32.
    """
    if matmul_precision() != "bf16" or a.device.type != "cpu" or a.dtype != torch.float32:
        return torch.bmm(a, b, out=out)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        return torch.bmm(a, b, out=out)
    finally:
        torch.set_float32_matmul_precision(old)


@contextlib.contextmanager
def exact():
    """Force exact float32 matrix products inside the block, even within :func:`approximate`."""
    _state.exact = getattr(_state, "exact", 0) + 1
    try:
        yield
    finally:
        _state.exact -= 1
