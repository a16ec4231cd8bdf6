"""The one code path that encoder and decoder share: quantised conditionals, variable by variable."""

from __future__ import annotations

import numpy as np

from . import kernels
from .program import Program

#: log2 of the total of every quantised PMF; constriction's default coders use 24 bits.
PRECISION = 24


class PmfEngine:
    """Exact, deterministic ``P(X_i = v | x_<i)`` for a batch of independent rows.

    ``mode="incremental"`` keeps every node's inside value and, per variable,
    recomputes only the ancestors of the new variable's leaves (inside) and of
    the next variable's leaves (derivatives). ``mode="naive"`` re-runs the
    whole circuit (inside and outside) for every variable. Both apply the same
    per-node formulas to the same inputs, so their PMFs are bit-identical; the
    naive path exists to measure the speed-up and to cross-check.

    Rows are independent: a row's result does not depend on the other rows,
    on the batch size or on the thread count.
    """

    def __init__(self, program: Program, batch: int, mode: str = "incremental"):
        if mode not in ("incremental", "naive"):
            raise ValueError(f"mode must be 'incremental' or 'naive', got {mode!r}")
        self.p = program
        self.full = mode == "naive"
        S, D, V = program.num_slots, program.num_vars, program.num_values
        self.M = np.zeros((batch, S))
        self.E = np.zeros((batch, S), dtype=np.int64)
        self.DM = np.zeros((batch, S))
        self.DE = np.zeros((batch, S), dtype=np.int64)
        self.X = np.zeros((batch, D), dtype=np.int64)
        self.OBS = np.zeros((batch, D), dtype=np.bool_)
        self.FREQ = np.zeros((batch, V), dtype=np.int64)
        p = program
        kernels.init_state(p.kind, p.leaf_var, p.leaf_row, p.table, p.ch_ptr, p.ch_idx, p.ch_w, self.M, self.E, self.X, self.OBS)

    def pmfs(self, i: int, active: np.ndarray) -> np.ndarray:
        """Integer frequencies ``(B, V)`` of variable ``i`` (rows where ``active``), each summing to 2**PRECISION."""
        p = self.p
        kernels.step(int(i), self.full, PRECISION, p.kind, p.leaf_var, p.leaf_row, p.table, p.ch_ptr, p.ch_idx, p.ch_w,
                     p.par_ptr, p.par_node, p.par_edge, p.var_ptr, p.var_leaf, p.anc_ptr, p.anc,
                     self.M, self.E, self.DM, self.DE, self.X, self.OBS, np.ascontiguousarray(active, dtype=np.bool_),
                     p.max_parents, self.FREQ)
        return self.FREQ

    def observe(self, i: int, values: np.ndarray, active: np.ndarray) -> None:
        p = self.p
        kernels.observe(int(i), self.full, p.kind, p.leaf_var, p.leaf_row, p.table, p.ch_ptr, p.ch_idx, p.ch_w,
                        p.anc_ptr, p.anc, self.M, self.E, self.X, self.OBS,
                        np.ascontiguousarray(active, dtype=np.bool_), np.ascontiguousarray(values, dtype=np.int64))
