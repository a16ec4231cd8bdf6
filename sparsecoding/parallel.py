"""MPI helpers (mpi4py) with a serial fallback.

Data are split into fixed-size *chunks* of consecutive rows (chunk ``c`` holds
rows ``c*B .. (c+1)*B - 1``); each rank owns a contiguous run of chunks and
reads only those rows. Sufficient statistics are computed per chunk and added
up along a fixed binary tree over the chunks: every node is the sum of its two
children, whichever rank computes it. Each rank sums the nodes inside its own
run of chunks; those few vectors are combined with one ``Allreduce`` on a numpy
buffer (each row filled by exactly one rank) and every rank adds the nodes
above them in the same order. The sum is therefore the same, to the last bit,
whatever the number of ranks. Nothing is ever pickled: only numpy buffers
travel (``Allreduce`` and ``Bcast``, the upper-case mpi4py calls).

Without mpi4py, or with one rank, everything runs serially.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = [
    "MPIComm",
    "SerialComm",
    "as_comm",
    "bcast_params",
    "chunked_sum",
    "get_comm",
    "local_chunks_from_array",
    "n_chunks",
    "rank_chunks",
    "rank_rows",
    "tree_cover",
]


class SerialComm:
    """A one-rank stand-in for an MPI communicator."""

    rank = 0
    size = 1
    is_mpi = False

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        return buf

    def bcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        return buf

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class MPIComm:
    """Thin wrapper over an mpi4py communicator using buffer (non-pickling) calls only."""

    is_mpi = True

    def __init__(self, comm: Any):
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()

    def allreduce_sum(self, buf: np.ndarray) -> np.ndarray:
        shape = np.shape(buf)
        flat = np.ascontiguousarray(buf, dtype=np.float64).reshape(-1)
        out = np.empty_like(flat)
        self.comm.Allreduce(flat, out, op=self._MPI.SUM)
        return out.reshape(shape)

    def bcast(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        shape = np.shape(buf)
        flat = np.array(buf, order="C").reshape(-1)
        self.comm.Bcast(flat, root=root)
        return flat.reshape(shape)

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def get_comm(use_mpi: bool = True) -> SerialComm | MPIComm:
    """``MPI.COMM_WORLD`` wrapped, or a :class:`SerialComm` when mpi4py is absent or disabled.

    Set ``SPARSECODING_NO_MPI=1`` to force the serial path.
    """
    if not use_mpi or os.environ.get("SPARSECODING_NO_MPI"):
        return SerialComm()
    try:
        from mpi4py import MPI
    except ImportError:
        return SerialComm()
    return MPIComm(MPI.COMM_WORLD)


def as_comm(comm: Any) -> SerialComm | MPIComm:
    """Accept ``None``, one of our wrappers, or a raw mpi4py communicator."""
    if comm is None:
        return SerialComm()
    if isinstance(comm, (SerialComm, MPIComm)):
        return comm
    return MPIComm(comm)


def n_chunks(N: int, chunk_size: int) -> int:
    return max(1, math.ceil(N / chunk_size))


def rank_chunks(N: int, chunk_size: int, rank: int, size: int) -> range:
    """The contiguous chunk ids owned by ``rank``."""
    C = n_chunks(N, chunk_size)
    return range(rank * C // size, (rank + 1) * C // size)


def rank_rows(N: int, chunk_size: int, rank: int, size: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` that ``rank`` reads."""
    ch = rank_chunks(N, chunk_size, rank, size)
    if len(ch) == 0:
        return 0, 0
    return ch.start * chunk_size, min(ch.stop * chunk_size, N)


def local_chunks_from_array(
    Y: np.ndarray, chunk_size: int, rank: int = 0, size: int = 1, row_offset: int = 0, N: int | None = None
) -> dict[int, np.ndarray]:
    """Split this rank's rows into ``{chunk_id: rows}``.

    ``Y`` holds global rows ``row_offset .. row_offset + len(Y)``; ``N`` is
    the global number of rows (default: ``len(Y)``, i.e. ``Y`` is all data).
    """
    N = len(Y) if N is None else N
    out = {}
    for c in rank_chunks(N, chunk_size, rank, size):
        a, b = c * chunk_size - row_offset, min((c + 1) * chunk_size, N) - row_offset
        out[c] = np.ascontiguousarray(Y[a:b], dtype=np.float64)
    return out


def _mid(lo: int, hi: int) -> int:
    """Where tree node ``[lo, hi)`` splits: its left child holds the largest power of two below its size."""
    return lo + (1 << ((hi - lo - 1).bit_length() - 1))


def tree_cover(total_chunks: int, size: int) -> list[tuple[int, int]]:
    """The reduction tree's nodes that each lie within one rank's chunks, maximal ones only, left to right.

    Ranks own contiguous runs of chunks (:func:`rank_chunks`), so a rank computes these
    nodes alone; at most about ``2 log2(chunks)`` per rank.

    Example:
        >>> tree_cover(8, 1), tree_cover(8, 2), tree_cover(6, 3)
        ([(0, 8)], [(0, 4), (4, 8)], [(0, 2), (2, 4), (4, 6)])
    """
    ranges = [(r * total_chunks // size, (r + 1) * total_chunks // size) for r in range(size)]
    out: list[tuple[int, int]] = []

    def walk(lo: int, hi: int) -> None:
        if any(a <= lo and hi <= b for a, b in ranges):
            out.append((lo, hi))
            return
        mid = _mid(lo, hi)
        walk(lo, mid)
        walk(mid, hi)

    walk(0, total_chunks)
    return out


def _tree_sum(lo: int, hi: int, value) -> np.ndarray:
    """``value(lo) + ... + value(hi - 1)`` added pairwise along the fixed tree: left subtree + right subtree."""
    if hi - lo == 1:
        return value(lo)
    mid = _mid(lo, hi)
    return _tree_sum(lo, mid, value) + _tree_sum(mid, hi, value)


def chunked_sum(per_chunk: dict[int, np.ndarray], total_chunks: int, length: int, comm) -> np.ndarray:
    """Sum per-chunk vectors over all ranks along a fixed binary tree of chunks, independent of the rank count.

    Every node of the tree (a run of chunks) is the sum of its two children, whoever computes
    it, so the result is the same to the last bit on any number of ranks. Each rank adds up the
    nodes that lie within its own chunks (:func:`tree_cover`); only those, about ``2 log2(chunks)``
    vectors per rank, travel in one ``Allreduce`` (each row filled by exactly one rank), instead of
    one vector per chunk; every rank then adds the nodes above them in the same order.

    Example:
        >>> v = {c: np.array([float(c)]) for c in range(5)}
        >>> chunked_sum(v, 5, 1, SerialComm()).tolist()   # ((0 + 1) + (2 + 3)) + 4
        [10.0]
    """
    C = total_chunks
    mine = rank_chunks(C, 1, comm.rank, comm.size)
    if set(per_chunk) != set(mine):
        raise ValueError(f"rank {comm.rank} holds chunks {sorted(per_chunk)[:5]}..., expected {mine}")
    zero = np.zeros(length)

    def leaf(c: int) -> np.ndarray:
        return np.asarray(per_chunk[c], dtype=np.float64).reshape(length)

    if comm.size == 1:
        return _tree_sum(0, C, leaf) if C > 0 else zero
    cover = tree_cover(C, comm.size)
    table = np.zeros((len(cover), length))
    for row, (lo, hi) in enumerate(cover):
        if mine.start <= lo and hi <= mine.stop:
            table[row] = _tree_sum(lo, hi, leaf)
    table = comm.allreduce_sum(table)
    rows = {node: table[row] for row, node in enumerate(cover)}

    def upper(lo: int, hi: int) -> np.ndarray:
        if (lo, hi) in rows:
            return rows[(lo, hi)]
        mid = _mid(lo, hi)
        return upper(lo, mid) + upper(mid, hi)

    return upper(0, C)


def bcast_params(params: dict[str, np.ndarray], comm, root: int = 0) -> dict[str, np.ndarray]:
    """Make every rank hold rank ``root``'s parameters (same keys and shapes on all ranks), C-ordered float64.

    The copy is C-ordered on one rank too: an M-step can return a transposed
    (Fortran-ordered) ``W``, and BLAS takes another kernel, with other rounding,
    for ``Y @ W`` on a Fortran-ordered ``W`` than on a C-ordered one; the result
    would then depend on whether the parameters went through ``Bcast``.
    """
    params = {k: np.array(params[k], dtype=np.float64, order="C") for k in sorted(params)}
    if comm.size == 1:
        return params
    # one Bcast for all parameters: each collective costs a synchronisation of every rank
    flat = comm.bcast(np.concatenate([v.reshape(-1) for v in params.values()]), root)
    out, i = {}, 0
    for k, v in params.items():
        out[k] = flat[i : i + v.size].reshape(v.shape).copy()
        i += v.size
    return out
