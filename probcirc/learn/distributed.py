"""Data-parallel learning on ``torch.distributed``: chunks, sums in chunk order, and the process group.

Results never depend on the number of ranks. Every mini-batch is cut into
chunks of a fixed number of rows, in a fixed order (:func:`chunk_rows`), and
chunk ``c`` is computed by rank ``c mod world``. A chunk's statistics depend
only on its rows (same shapes, same code, one thread per rank), never on the
rank that computes them. The ranks then add every chunk's statistics in
float64 in chunk order (:class:`ChunkSum`, each rank a slice of the entries):
the same values added in the same order, so 1, 2 or 64 ranks give the same
bytes.

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
    >>> totals, ll = ChunkSum().run(parts, {0: torch.tensor(-1.0), 1: torch.tensor(-2.0)}, 2, [(2,)])
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
    "ChunkSum",
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
# Newer torch (2.13 here) renamed all_gather_into_tensor and warns on the old name; older torch has only that.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


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


class ChunkSum:
    """Sums of per-chunk tensors, added in chunk order: the same bytes on every rank and for every rank count.

    :meth:`mine` says which chunks this rank computes; :meth:`run` takes their
    tensors and one float64 scalar each, and returns every rank the totals over
    all chunks and the sum of the scalars. Each entry's total is formed in
    float64 one chunk after another, ``((t_0 + t_1) + t_2) + ...``, and
    rounded once to the requested dtype. A rank count changes who computes a
    chunk and who adds which entries, never a value nor the order of its
    additions, so 1, 2 or 64 ranks give the same bytes.

    With ``world`` ranks the entries are cut into ``world`` slices and rank
    ``r`` adds slice ``r``: an all-to-all brings it slice ``r`` of every chunk,
    it adds them in chunk order, and every rank receives every slice's totals
    (an all-gather on NCCL, point to point elsewhere). That is a
    reduce-scatter and an all-gather, the traffic of a ring all-reduce (each
    rank sends about one chunk's worth per chunk it computed, and one of
    totals, whatever the rank count), in the statistics' own dtype (4 bytes
    an entry for float32), and each rank adds a ``1/world`` share. One rank
    alone runs the same additions with no collective.
    """

    def __init__(self, group=None) -> None:
        self.group = group
        self.world = world_size(group)
        self.rank = rank(group)
        self._bufs: dict[str, torch.Tensor] = {}

    def mine(self, num_chunks: int) -> range:
        """The chunks this rank computes: ``rank, rank + world, ...``."""
        return range(self.rank, num_chunks, self.world)

    def any(self, tables: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The entry-wise OR over every rank of bool ``tables`` (each rank's own, all False if it has no chunk).

        An OR is exact in any order. One all-reduce (MAX over the bytes) carries every table.
        """
        if self.world == 1 or not tables:
            return list(tables)
        flat = torch.cat([t.reshape(-1) for t in tables]).view(torch.uint8)
        self._collective(lambda: dist.all_reduce(flat, op=dist.ReduceOp.MAX, group=self.group))
        parts = flat.view(torch.bool).split([t.numel() for t in tables])
        return [part.view(t.shape) for part, t in zip(parts, tables)]

    def run(
        self,
        parts: Mapping[int, Sequence[torch.Tensor]],
        scalars: Mapping[int, torch.Tensor],
        num_chunks: int,
        shapes: Sequence[tuple[int, ...]],
        device: torch.device | str = "cpu",
        support: Sequence[torch.Tensor | None] | None = None,
        dtype: torch.dtype = torch.float64,
        compact: bool = False,
        part_dtype: torch.dtype | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Totals (one per entry of ``shapes``, in ``dtype``) and the chunk-ordered float64 sum of ``scalars``.

        ``parts[c]`` are chunk ``c``'s tensors, for every chunk of :meth:`mine`, all of one
        dtype, ``part_dtype`` (a rank with no chunk needs it; the others read it off their
        own). ``dtype=torch.float64`` gives the float64 sums themselves. The totals are
        views of buffers that the next call overwrites: copy what must outlive it.

        ``support[i]``, when given and not None, holds the flat indices of the only entries of
        tensor ``i`` that may be nonzero in any chunk (the same on every rank): only those
        travel and are added, and the rest of the total is zero. With ``compact=True`` such a
        total comes as the 1-D vector of the support's entries, in its order (a caller that
        updates only those entries skips the dense table).

        Everything stays on ``device``: no value is read back to the host.
        """
        support = [None] * len(shapes) if support is None else list(support)
        sizes = [math.prod(s) if idx is None else idx.numel() for s, idx in zip(shapes, support)]
        part_dtype = self._part_dtype(parts, part_dtype)
        mine = list(self.mine(num_chunks))
        # Every rank packs as many rows as the busiest one (ranks with fewer chunks send padding);
        # a row is `world` slices of equal width.
        rows, width = -(-num_chunks // self.world), -(-sum(sizes) // self.world)
        packed = self._buffer("packed", rows * self.world * width, device, part_dtype).view(rows, -1)
        lls = torch.zeros(rows, dtype=torch.float64, device=device)
        for row, c in enumerate(mine):
            self._pack(packed[row], parts[c], support)
            lls[row] = scalars[c]
        if self.world == 1:
            total, ll = self._add_in_order(list(packed), list(lls), dtype)
        else:
            total, ll = self._reduce(packed, lls, num_chunks, width, dtype)
        totals, at = [], 0
        for i, (shape, idx, size) in enumerate(zip(shapes, support, sizes)):
            entries, at = total[at : at + size], at + size
            if idx is None:
                totals.append(entries.view(shape))
            elif compact:
                totals.append(entries)
            else:
                dense = self._buffer(f"dense{i}", math.prod(shape), device, dtype).zero_()
                totals.append(dense.index_copy_(0, idx, entries).view(shape))
        return totals, ll

    def _part_dtype(self, parts: Mapping[int, Sequence[torch.Tensor]], given: torch.dtype | None) -> torch.dtype:
        found = {t.dtype for tensors in parts.values() for t in tensors}
        if given is not None:
            found.add(given)
        if len(found) != 1:
            raise ValueError(
                f"ChunkSum.run: the chunks' tensors need one dtype (part_dtype), got {sorted(map(str, found))}"
            )
        return found.pop()

    @staticmethod
    def _pack(row: torch.Tensor, tensors: Sequence[torch.Tensor], support: Sequence[torch.Tensor | None]) -> None:
        """A chunk's tensors, compacted to their supports, one after another into ``row``."""
        at = 0
        for t, idx in zip(tensors, support):
            flat = t.detach().reshape(-1)
            size = flat.numel() if idx is None else idx.numel()
            dst, at = row[at : at + size], at + size
            dst.copy_(flat) if idx is None else torch.index_select(flat, 0, idx, out=dst)

    def _reduce(
        self, packed: torch.Tensor, lls: torch.Tensor, num_chunks: int, width: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of every chunk (all-to-all), added in chunk order; then every slice's totals."""
        rows, world = packed.shape[0], self.world
        send = packed.view(rows, world, width)
        if rows > 1:  # the all-to-all sends to rank q a contiguous run: slice q of each row
            send = self._buffer("send", packed.numel(), packed.device, packed.dtype).view(world, rows, width)
            send.copy_(packed.view(rows, world, width).transpose(0, 1))
        recv = self._buffer("recv", packed.numel(), packed.device, packed.dtype).view(world, rows, width)
        every_ll = self._buffer("lls", world * rows, packed.device).view(world, rows)
        self._collective(lambda: dist.all_to_all_single(recv.view(-1), send.reshape(-1), group=self.group))
        self._collective(lambda: _all_gather(every_ll.view(-1), lls, group=self.group))
        # Chunk c came from rank c mod world, as its row c // world.
        slices = [recv[c % world, c // world] for c in range(num_chunks)]
        total = self._buffer("total", world * width, packed.device, dtype).view(world, width)
        _, ll = self._add_in_order(
            slices, [every_ll[c % world, c // world] for c in range(num_chunks)], dtype, total[self.rank]
        )
        self._collective(lambda: self._share(total))
        return total.view(-1), ll

    def _share(self, total: torch.Tensor) -> None:
        """Every rank's row of ``total`` (``world x width``, this rank's own filled in) to every rank.

        NCCL all-gathers (from a copy of the row: a GPU copy is cheap, and the input then never
        overlaps the output). Elsewhere (gloo) each row goes point to point straight into the
        others' ``total``: gloo's all-gather took twice as long for the same bytes (2 CPU ranks).
        """
        mine = total[self.rank]
        if dist.get_backend(self.group) == "nccl":
            _all_gather(total.view(-1), mine.clone(), group=self.group)
            return
        ops = []
        for q in range(self.world):
            if q != self.rank:
                ops.append(dist.P2POp(dist.isend, mine, group=self.group, group_peer=q))
                ops.append(dist.P2POp(dist.irecv, total[q], group=self.group, group_peer=q))
        for work in dist.batch_isend_irecv(ops):
            work.wait()

    def _add_in_order(
        self,
        values: Sequence[torch.Tensor],
        scalars: Sequence[torch.Tensor],
        dtype: torch.dtype,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``((v_0 + v_1) + v_2) + ...`` in float64, rounded once to ``dtype`` (into ``out`` if given);
        the scalars' float64 sum, in order."""
        ll = scalars[0].clone()
        for s in scalars[1:]:
            ll += s
        first, *rest = values
        if not rest:
            return (first.to(dtype) if out is None else out.copy_(first)), ll
        if out is None:
            out = self._buffer("sum", first.numel(), first.device, dtype)
        if len(rest) == 1 and dtype == first.dtype == torch.float32:
            # The float32 add is the float64 sum rounded once: float64 carries more than 2 x 24 + 1
            # bits, so rounding twice gives what rounding the exact sum once gives (Figueroa, 1995).
            # One pass, where the mixed-dtype adds below cost three on a CPU.
            return torch.add(first, rest[0], out=out), ll
        acc = out if dtype == torch.float64 else self._buffer("acc", first.numel(), first.device)
        acc.copy_(first)
        for v in rest[:-1]:
            acc.add_(v)
        # The last add runs in float64 and its result is rounded into `out`.
        return torch.add(acc, rest[-1], out=out), ll

    def _buffer(self, name: str, size: int, device, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``size`` entries of a buffer kept from batch to batch: fresh memory would be paged in (zeroed)
        every time, and a support's size changes from batch to batch."""
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < size or buf.device != torch.device(device) or buf.dtype != dtype:
            buf = self._bufs[name] = torch.empty(size, dtype=dtype, device=device)
        return buf[:size]

    def _collective(self, exchange) -> None:
        try:
            exchange()
        except RuntimeError as e:  # DistBackendError and gloo's timeouts are RuntimeErrors
            raise PeerLostError(
                f"rank {self.rank} of {self.world}: lost contact while summing the chunks' statistics "
                f"(another rank died or stalled past the timeout): {_first_line(e)}"
            ) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
