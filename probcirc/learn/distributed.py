"""Data-parallel learning on ``torch.distributed``: chunks, exact sums, and the process group.

Results never depend on the number of ranks. Every mini-batch is cut into
chunks of a fixed number of rows, in a fixed order (:func:`chunk_rows`), and
chunk ``c`` is computed by rank ``c mod world``. A chunk's statistics depend
only on its rows (same shapes, same code, one thread per rank), never on the
rank that computes them. The chunks' statistics are then added *exactly*
(:class:`ExactSum`): each tensor is turned into fixed point (integers held in float64) with one
scale that every rank derives from the same numbers (the largest magnitude of
any chunk, shared by an all-reduce in which each chunk's entry comes from one
rank only and so is exact), and integers add the same in any order. One rank
runs the very same arithmetic with no collective, so 1, 2 or 64 ranks give the
same bytes.

The process group comes from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, ``LOCAL_RANK``), on gloo
for CPU tensors and NCCL for CUDA ones (:func:`init_from_env`). A collective
that fails, because another rank died or stalled past the timeout, raises
:class:`PeerLostError` with one line naming the rank and the operation.

Example:
    >>> import torch
    >>> [c.tolist() for c in chunk_rows(torch.arange(5), 2)]
    [[0, 1], [2, 3], [4]]
    >>> parts = {0: [torch.tensor([0.1, 1e-3])], 1: [torch.tensor([0.2, 2e-3])]}
    >>> totals, ll = ExactSum().run(parts, {0: torch.tensor(-1.0), 1: torch.tensor(-2.0)}, 2, [(2,)])
    >>> [round(v, 6) for v in totals[0].tolist()], float(ll)
    ([0.3, 0.003], -3.0)
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist

from probmod.errors import InputError, UsageError

__all__ = [
    "CHUNK_SIZE",
    "ExactSum",
    "PeerLostError",
    "chunk_rows",
    "init_from_env",
    "is_main",
    "rank",
    "shutdown",
    "world_size",
]

#: rows per chunk: the unit of work a rank computes; results depend on it, never on the rank count
CHUNK_SIZE = 512
#: seconds a collective waits for the other ranks before giving up
DEFAULT_TIMEOUT = 300.0
#: fixed-point headroom: every sum of chunks' integers stays below 2**_BITS, so float64 adds them exactly
_BITS = 52
#: the largest scale, 2**126, finite in float32 (statistics below 2**-74 keep fewer bits)
_MAX_SHIFT = 126


class PeerLostError(InputError, ConnectionError):
    """Another rank died or stalled past the collective timeout (its share of the data cannot be read)."""


def world_size(group=None) -> int:
    """Ranks in ``group`` (the default group), or 1 when no process group is initialised."""
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def rank(group=None) -> int:
    """This process's rank in ``group``, or 0 when no process group is initialised."""
    return dist.get_rank(group) if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def init_from_env(timeout: float = DEFAULT_TIMEOUT, device: str | torch.device = "cpu") -> bool:
    """Join the process group torchrun describes in the environment; return whether there is more than one rank.

    Without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``) nothing is initialised and
    the caller runs alone. The backend is NCCL for a CUDA ``device`` (each rank
    takes GPU ``LOCAL_RANK``) and gloo otherwise. ``timeout`` bounds every
    collective, so a rank whose peer died exits instead of waiting forever.
    """
    if not timeout > 0:
        raise UsageError(f"--dist-timeout must be > 0 seconds, got {timeout}")
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return world_size() > 1
    if not dist.is_available():  # pragma: no cover - torch built without distributed
        raise UsageError(f"WORLD_SIZE={world} but this torch has no torch.distributed")
    device = torch.device(device)
    kwargs: dict[str, torch.device] = {}
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout), **kwargs)  # type: ignore[arg-type]
    except (RuntimeError, ValueError) as e:
        raise PeerLostError(f"could not join the {world} ranks ({backend}): {_first_line(e)}") from None
    return True


def shutdown() -> None:
    """Leave the process group (no-op when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def chunk_rows(idx: torch.Tensor, chunk_size: int = CHUNK_SIZE) -> list[torch.Tensor]:
    """``idx`` cut into consecutive chunks of ``chunk_size`` rows (the last may be shorter)."""
    if chunk_size < 1:
        raise UsageError(f"chunk_size must be >= 1, got {chunk_size}")
    return [idx[s : s + chunk_size] for s in range(0, len(idx), chunk_size)]


class ExactSum:
    """Sums of per-chunk tensors that are the same bytes on every rank and for every rank count.

    :meth:`mine` says which chunks this rank computes; :meth:`run` takes their
    tensors (any float dtype) and one float64 scalar each, and returns every
    rank the float64 totals over all chunks and the chunk-ordered sum of the
    scalars. Two collectives per call: a small float64 all-reduce (each
    chunk's row written by one rank, the others adding zeros, so exact) and one
    float64 all-reduce of the fixed-point tensors.

    A chunk's tensor ``t`` becomes the integers ``round(t * 2**(52 - e))``
    (computed in ``t``'s own dtype, which is exact), with ``2**e`` above the
    tensor's largest magnitude in any chunk times the number of chunks. Any
    partial sum of them is then an integer below ``2**53``, which float64
    holds exactly, so every order of addition (on one rank or across ranks)
    gives the same bytes. Entries keep ``2**-52`` of that bound, finer than
    the float32 statistics they come from.
    A tensor holding inf or NaN in any chunk sums to all NaN: a diverged run.
    """

    def __init__(self, group=None) -> None:
        self.group = group
        self.world = world_size(group)
        self.rank = rank(group)
        self._bufs: dict[str, torch.Tensor] = {}

    def mine(self, num_chunks: int) -> range:
        """The chunks this rank computes: ``rank, rank + world, ...``."""
        return range(self.rank, num_chunks, self.world)

    def run(
        self,
        parts: Mapping[int, Sequence[torch.Tensor]],
        scalars: dict[int, torch.Tensor],
        num_chunks: int,
        shapes: Sequence[tuple[int, ...]],
        device: torch.device | str = "cpu",
        support: Sequence[torch.Tensor | None] | None = None,
        support_dtype: torch.dtype = torch.float64,
        compact: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Totals (one per entry of ``shapes``) and the chunk-ordered sum of ``scalars``.

        The totals are float64 views of buffers that the next call overwrites: copy what must
        outlive them. With one rank and one chunk they are that chunk's own tensors, rounded in
        place, in their own dtype: the same values, converted to float64 exactly.

        ``support[i]``, when given and not None, holds the flat indices of the only entries of
        tensor ``i`` that may be nonzero in any chunk (the same on every rank): only those are
        scaled and exchanged, and the rest of the total is zero. The result is the same bytes.
        Such totals come in ``support_dtype`` (the float64 sums rounded once): a caller that
        would convert them anyway saves a float64 table as large as the tensor. With
        ``compact=True`` they come as the 1-D vector of the support's entries, in its order
        (a caller that updates only those entries skips the dense table), whatever the number
        of ranks and chunks.

        The tensors in ``parts`` are used up: they are scaled in place (they
        are a batch's temporaries, and a copy would cost a pass over them).
        Everything stays on ``device``: no value is read back to the host.
        """
        n = len(shapes)
        alone = self.world == 1 and num_chunks == 1
        support = [None] * n if support is None or (alone and not compact) else list(support)
        # Entries outside the support are zero, so the compacted tensors have the same peaks and sums.
        parts = {c: [_compact(t, idx) for t, idx in zip(ts, support)] for c, ts in parts.items()}
        info = torch.zeros(num_chunks, 1 + n, dtype=torch.float64, device=device)
        for c, tensors in parts.items():
            info[c, 0] = scalars[c]
            info[c, 1:] = torch.stack([_peak(t) for t in tensors])
        self._all_reduce(info, "the chunk summaries")
        peak = info[:, 1:].amax(0)  # (n,): the same on every rank
        exponent = torch.frexp(peak * num_chunks)[1]  # peak * num_chunks < 2**exponent
        ones = torch.ones(n, dtype=torch.float64, device=device)
        scale = torch.ldexp(ones, (_BITS - exponent).clamp(max=_MAX_SHIFT))
        # Dividing by a power of two is exact; a tensor with inf or NaN in any chunk becomes NaN.
        inverse = torch.where(torch.isfinite(peak), 1 / scale, torch.full_like(scale, math.nan))
        if alone:
            # One chunk alone: round(t * s) / s in t's own dtype is the very value the float64 sum
            # would give (t * s has t's significant bits, so the quotient is exact in t's dtype),
            # without the float64 buffer and the conversions back.
            tensors = parts[0]
            for i, t in enumerate(tensors):
                t.detach().mul_(scale[i]).round_().mul_(inverse[i])
            totals = [t if idx is not None else t.view(shape) for t, shape, idx in zip(tensors, shapes, support)]
            return totals, info[:, 0].sum()
        sizes = [math.prod(s) if idx is None else idx.numel() for s, idx in zip(shapes, support)]
        exact = self._buffer("sums", sum(sizes), device)
        views = exact.split(sizes)
        if not parts:  # more ranks than chunks: this one adds nothing
            exact.zero_()
        for k, tensors in enumerate(parts.values()):
            for i, (acc, t) in enumerate(zip(views, tensors)):
                # In place on the chunk's own tensor: a power-of-two scale and rounding to an
                # integer are exact in its dtype, and integers below 2**53 add exactly in float64.
                ints = t.detach().reshape(-1).mul_(scale[i]).round_()
                acc.copy_(ints) if k == 0 else acc.add_(ints)
        self._all_reduce(exact, "the EM statistics")
        totals = []
        for i, (acc, shape, idx) in enumerate(zip(views, shapes, support)):
            if idx is None:
                totals.append(acc.mul_(inverse[i]).view(shape))
            elif compact:
                # One pass: the float64 product is exact (a power of two), so it is rounded once either way.
                out = (
                    acc
                    if support_dtype == acc.dtype
                    else self._buffer(f"compact{i}", acc.numel(), device, support_dtype)
                )
                totals.append(torch.mul(acc, inverse[i], out=out))
            else:
                acc.mul_(inverse[i])
                dense = self._buffer(f"dense{i}", math.prod(shape), device, support_dtype).zero_()
                totals.append(dense.index_copy_(0, idx, acc.to(support_dtype)).view(shape))
        return totals, info[:, 0].sum()

    def _buffer(self, name: str, size: int, device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``size`` entries of a buffer kept from batch to batch: fresh memory would be paged in (zeroed)
        every time, and a support's size changes from batch to batch."""
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < size or buf.device != torch.device(device) or buf.dtype != dtype:
            buf = self._bufs[name] = torch.empty(size, dtype=dtype, device=device)
        return buf[:size]

    def _all_reduce(self, t: torch.Tensor, what: str) -> None:
        if self.world == 1:
            return
        try:
            dist.all_reduce(t, group=self.group)
        except RuntimeError as e:  # DistBackendError and gloo's timeouts are RuntimeErrors
            raise PeerLostError(
                f"rank {self.rank} of {self.world}: lost contact while summing {what} "
                f"(another rank died or stalled past the timeout): {_first_line(e)}"
            ) from None


def _compact(t: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    """``t``'s entries at the flat indices ``idx`` (all of ``t`` when None), as a tensor of ours to scale."""
    return t if idx is None else t.detach().reshape(-1).index_select(0, idx)


def _peak(t: torch.Tensor) -> torch.Tensor:
    """The largest magnitude in ``t`` as a float64 0-d tensor (NaN if ``t`` holds one), in one pass."""
    if t.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=t.device)
    low, high = t.detach().aminmax()
    return torch.maximum(-low, high).double()


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
