"""A compiled circuit flattened into plain integer/float64 arrays for the codec's kernels.

The codec never evaluates the circuit through torch: torch's batched matrix
products and its vectorised ``exp``/``log`` are free to change their order of
arithmetic with the batch size, the thread count or the CPU. Instead the
circuit's public node graph (:meth:`~probcirc.TensorCircuit.graph`) is read
once into a node-level program (children and parents as CSR lists in a fixed
order) that :mod:`probcirc.compress.kernels` walks with scalar IEEE-754
operations only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numba import njit

from ..compile import INPUT, PRODUCT
from ..compile import SUM as SUM_NODE
from ..inputs import Bernoulli, Categorical

CONST, LEAF, PROD, SUM = 0, 1, 2, 3


class UnsupportedCircuit(ValueError):
    """The circuit cannot drive the codec (continuous leaves, mixed alphabets, ...)."""


@dataclass
class Program:
    """Node-level view of a compiled circuit; slot order is topological (children first)."""

    kind: np.ndarray  # (S,) int8: CONST / LEAF / PROD / SUM
    leaf_var: np.ndarray  # (S,) int64, -1 for inner nodes
    leaf_row: np.ndarray  # (S,) int64 row of ``table``, -1 for inner nodes
    table: np.ndarray  # (L, V) float64 leaf probability tables
    ch_ptr: np.ndarray  # (S+1,) int64
    ch_idx: np.ndarray  # (nnz,) int64 child slots, in the layer's edge order
    ch_w: np.ndarray  # (nnz,) float64 sum weights (1.0 for product edges)
    par_ptr: np.ndarray  # (S+1,) int64
    par_node: np.ndarray  # (nnz,) int64 parent slots, ascending
    par_edge: np.ndarray  # (nnz,) int64 index of the edge into ch_idx / ch_w
    par_w: np.ndarray  # (nnz,) float64 = ch_w[par_edge], stored parent-list order for locality
    var_ptr: np.ndarray  # (D+1,) int64
    var_leaf: np.ndarray  # leaves of each variable, ascending slots
    anc_ptr: np.ndarray  # (D+1,) int64
    anc: np.ndarray  # ancestors of each variable's leaves (leaves included), ascending slots
    num_vars: int
    num_values: int
    order: np.ndarray = None  # (D,) coding order of the variables
    pos: np.ndarray = None  # (D,) position of each variable in ``order``
    lo: np.ndarray = None  # (S,) first position of each node's scope
    hi: np.ndarray = None  # (S,) last position of each node's scope
    contig: np.ndarray = None  # (S,) bool: the scope is exactly the positions lo..hi

    @property
    def num_slots(self) -> int:
        return len(self.kind)

    @property
    def work_per_value(self) -> int:
        """Decoding cost of one value in units of :func:`~probcirc.compress.container.check_work`: the circuit's
        edges plus its leaf-table entries, per variable (each value's PMF reads its leaves' tables; the
        incremental engine recomputes each node about once per patch), rounded up."""
        work = len(self.ch_idx) + int((self.kind == LEAF).sum()) * self.num_values
        return max(1, -(-work // max(1, self.num_vars)))

    @property
    def max_parents(self) -> int:
        return int(np.diff(self.par_ptr).max(initial=1))


@njit(cache=True)
def _preorder(kind, leaf_var, ch_ptr, ch_idx, D):
    """Variables in the order a depth-first pre-order walk from the root first reaches their leaves."""
    S = kind.shape[0]
    seen = np.zeros(S, dtype=np.bool_)
    have = np.zeros(D, dtype=np.bool_)
    order = np.empty(D, dtype=np.int64)
    stack = np.empty(ch_idx.shape[0] + 1, dtype=np.int64)
    stack[0] = S - 1
    top, cnt = 1, 0
    while top > 0:
        top -= 1
        n = stack[top]
        if seen[n]:
            continue
        seen[n] = True
        if kind[n] == 1:
            v = leaf_var[n]
            if not have[v]:
                have[v] = True
                order[cnt] = v
                cnt += 1
        for j in range(ch_ptr[n + 1] - 1, ch_ptr[n] - 1, -1):
            if not seen[ch_idx[j]]:
                stack[top] = ch_idx[j]
                top += 1
    return order[:cnt]


@njit(cache=True)
def _intervals(kind, leaf_var, ch_ptr, ch_idx, pos):
    S = kind.shape[0]
    lo = np.zeros(S, dtype=np.int64)
    hi = np.zeros(S, dtype=np.int64)
    size = np.zeros(S, dtype=np.int64)
    for n in range(S):
        if kind[n] == 1:
            lo[n] = hi[n] = pos[leaf_var[n]]
            size[n] = 1
        elif kind[n] == 2 or kind[n] == 3:
            lo[n] = 1 << 60
            hi[n] = -1
            for j in range(ch_ptr[n], ch_ptr[n + 1]):
                c = ch_idx[j]
                lo[n] = min(lo[n], lo[c])
                hi[n] = max(hi[n], hi[c])
                if kind[n] == 2:
                    size[n] += size[c]
                elif j == ch_ptr[n]:
                    size[n] = size[c]
        else:
            lo[n], hi[n], size[n] = 1 << 60, -1, 0
    return lo, hi, (hi - lo + 1) == size


@njit(cache=True)
def _ancestors(var_ptr, var_leaf, par_ptr, par_node, S):
    """CSR of the ancestors of each variable's leaves (leaves included), ascending slots."""
    D = var_ptr.shape[0] - 1
    stamp = np.full(S, -1, dtype=np.int64)
    stack = np.empty(S, dtype=np.int64)
    counts = np.zeros(D, dtype=np.int64)
    for rep in range(2):
        if rep == 1:
            ptr = np.zeros(D + 1, dtype=np.int64)
            for v in range(D):
                ptr[v + 1] = ptr[v] + counts[v]
            out = np.empty(ptr[D], dtype=np.int64)
            stamp[:] = -1
        for v in range(D):
            top = 0
            cnt = 0
            for j in range(var_ptr[v], var_ptr[v + 1]):
                n = var_leaf[j]
                stamp[n] = v
                stack[top] = n
                top += 1
            while top > 0:
                top -= 1
                n = stack[top]
                if rep == 1:
                    out[ptr[v] + cnt] = n
                cnt += 1
                for j in range(par_ptr[n], par_ptr[n + 1]):
                    q = par_node[j]
                    if stamp[q] != v:
                        stamp[q] = v
                        stack[top] = q
                        top += 1
            if rep == 0:
                counts[v] = cnt
            else:
                out[ptr[v] : ptr[v + 1]] = np.sort(out[ptr[v] : ptr[v + 1]])
    return ptr, out


def build_program(circuit) -> Program:
    """Flatten ``circuit`` (a compiled :class:`~probcirc.TensorCircuit`) from its node graph.

    Node ``n`` of :meth:`~probcirc.TensorCircuit.graph` becomes slot ``n + 1``; slot 0
    is a constant no edge points at. Leaf tables come from each family's ``pmf``.

    Raises:
        UnsupportedCircuit: for leaves other than Categorical/Bernoulli, or when the
            variables' leaves do not all have the same number of values.
    """
    graph = circuit.graph()
    N, D = graph.num_nodes, int(graph.num_vars)
    S = N + 1
    kinds = graph.kind.cpu().numpy()
    kind = np.zeros(S, dtype=np.int8)
    kind[1:] = np.select([kinds == INPUT, kinds == PRODUCT, kinds == SUM_NODE], [LEAF, PROD, SUM], CONST)
    leaf_var = np.full(S, -1, dtype=np.int64)
    leaf_row = np.full(S, -1, dtype=np.int64)
    tables: list[np.ndarray] = []
    num_values = None
    rows = 0
    for group in graph.leaves:
        dist = group.dist
        if not isinstance(dist, (Categorical, Bernoulli)):
            raise UnsupportedCircuit(f"the codec needs Categorical or Bernoulli leaves, this circuit has {dist!r}")
        tab = dist.pmf(group.params.detach().to(torch.float64)).cpu().numpy().copy()
        if num_values is None:
            num_values = tab.shape[1]
        elif tab.shape[1] != num_values:
            raise UnsupportedCircuit(
                f"all leaves must share one alphabet; found {num_values} and {tab.shape[1]} values"
            )
        if not np.isfinite(tab).all() or (tab < 0).any():
            raise UnsupportedCircuit("leaf probabilities must be finite and non-negative")
        slots = group.nodes.cpu().numpy() + 1
        leaf_var[slots] = group.var.cpu().numpy()
        leaf_row[slots] = rows + np.arange(len(slots))
        rows += len(slots)
        tables.append(tab)
    ch_w = graph.weight.detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(ch_w).all() or (ch_w < 0).any():
        raise UnsupportedCircuit("sum weights must be finite and non-negative")
    ch_idx = graph.child.cpu().numpy().astype(np.int64) + 1
    ch_ptr = np.concatenate([[0], graph.child_ptr.cpu().numpy()]).astype(np.int64)
    parent = np.repeat(np.arange(S, dtype=np.int64), np.diff(ch_ptr))
    if (ch_idx >= parent).any():
        raise UnsupportedCircuit("the graph's node order is not topological")
    # parents: grouped by child, ascending parent slot
    porder = np.lexsort((parent, ch_idx))
    par_node = parent[porder]
    par_edge = np.arange(len(ch_idx), dtype=np.int64)[porder]
    par_ptr = np.zeros(S + 1, dtype=np.int64)
    par_ptr[1:] = np.cumsum(np.bincount(ch_idx, minlength=S))
    leaves = np.flatnonzero(kind == LEAF)
    lv = leaf_var[leaves]
    if len(np.unique(lv)) != D:
        raise UnsupportedCircuit("every variable needs at least one leaf")
    var_leaf = leaves[np.argsort(lv, kind="stable")].astype(np.int64)
    var_ptr = np.zeros(D + 1, dtype=np.int64)
    var_ptr[1:] = np.cumsum(np.bincount(lv, minlength=D))
    anc_ptr, anc = _ancestors(var_ptr, var_leaf, par_ptr, par_node, S)
    table = np.ascontiguousarray(np.concatenate(tables)) if tables else np.zeros((0, 2))
    prog = Program(
        kind,
        leaf_var,
        leaf_row,
        table,
        ch_ptr,
        ch_idx,
        ch_w,
        par_ptr,
        par_node,
        par_edge,
        np.ascontiguousarray(ch_w[par_edge]),
        var_ptr,
        var_leaf,
        anc_ptr,
        anc,
        D,
        int(num_values),
    )
    set_order(prog, _preorder(kind, leaf_var, ch_ptr, ch_idx, D))
    return prog


def set_order(prog: Program, order) -> None:
    """Fix the coding order (a permutation of the variables) and the scope intervals it implies.

    The default, set by :func:`build_program`, is the depth-first pre-order of the circuit
    from its root: for a tree-shaped circuit (HCLT) every node's scope is then a contiguous
    run of positions, which is what lets the lazy engine reuse derivatives.
    """
    order = np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(prog.num_vars)):
        raise ValueError("order must be a permutation of the variables")
    pos = np.empty(prog.num_vars, dtype=np.int64)
    pos[order] = np.arange(prog.num_vars)
    prog.order, prog.pos = order, pos
    prog.lo, prog.hi, prog.contig = _intervals(prog.kind, prog.leaf_var, prog.ch_ptr, prog.ch_idx, pos)
