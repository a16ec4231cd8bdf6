"""The one code path that encoder and decoder share: quantised conditionals, variable by variable."""

from __future__ import annotations

import numpy as np

from . import kernels
from .program import Program

#: log2 of the total of every quantised PMF; constriction's default coders use 24 bits.
PRECISION = 24


class PmfEngine:
    """Exact, deterministic ``P(X_i = v | x_observed)`` for a batch of independent rows.

    ``P(x_obs, X_i = v) = Σ_n ∂p/∂L_n · L_n(v)`` over the leaves n of X_i (a
    smooth, decomposable circuit is linear in them), so each PMF needs the
    inside values of all nodes and the derivatives ∂p/∂n on the ancestors of
    X_i's leaves. Call :meth:`pmfs` then :meth:`observe` for the variables in
    ``program.order`` (any order is correct; that one is fast).

    Modes (all three apply the same per-node formulas to the same inputs, so
    their PMFs are bit-identical; the tests check it):

    - ``"naive"``: the whole circuit, inside and outside, for every variable.
    - ``"ancestors"``: inside values are refreshed on the ancestors of the new
      variable's leaves, derivatives recomputed on the ancestors of the next.
    - ``"incremental"`` (default): lazy. Inside values are only marked stale and
      recomputed when a derivative needs them; a derivative ∂p/∂n depends only on
      the variables outside n's scope, so it is reused while every variable coded
      since lies inside that scope. With the depth-first coding order of a tree
      (HCLT) each step then touches O(1) tree nodes amortised, not a root path.

    Rows are independent: a row's result does not depend on the other rows,
    on the batch size or on the thread count.
    """

    MODES = {"naive": kernels.NAIVE, "ancestors": kernels.ANCESTORS, "incremental": kernels.LAZY}

    def __init__(self, program: Program, batch: int, mode: str = "incremental"):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {sorted(self.MODES)}, got {mode!r}")
        self.p = program
        self.mode = self.MODES[mode]
        S, D, V = program.num_slots, program.num_vars, program.num_values
        self.M = np.zeros((batch, S))
        self.E = np.zeros((batch, S), dtype=np.int64)
        self.DM = np.zeros((batch, S))
        self.DE = np.zeros((batch, S), dtype=np.int64)
        self.X = np.zeros((batch, D), dtype=np.int64)
        self.OBS = np.zeros((batch, D), dtype=np.bool_)
        self.FREQ = np.zeros((batch, V), dtype=np.int64)
        self.OK = np.ones((batch, S), dtype=np.int8)  # 1 fresh, 0 stale, 2 queued (lazy mode)
        self.STACK = np.zeros((batch, S + 1), dtype=np.int64)
        self.SOUT = np.full((batch, S), -1, dtype=np.int64)
        self._max_par = program.max_parents
        self._last = -1  # position of the last variable observed: positions must not go back
        self._arrays = kernels.arrays(program)
        kernels.init_state(self._arrays, self.M, self.E, self.X, self.OBS)

    def pmfs(self, i: int, active: np.ndarray) -> np.ndarray:
        """Integer frequencies ``(B, V)`` of variable ``i`` (rows where ``active``), each summing to 2**PRECISION."""
        p = self.p
        if p.pos[i] <= self._last:
            raise ValueError(f"variables must follow program.order: variable {i} comes before one already observed")
        kernels.step(
            int(i),
            int(p.pos[i]),
            self.mode,
            PRECISION,
            self._arrays,
            self.M,
            self.E,
            self.DM,
            self.DE,
            self.OK,
            self.SOUT,
            self.STACK,
            self.X,
            self.OBS,
            np.ascontiguousarray(active, dtype=np.bool_),
            self._max_par,
            self.FREQ,
        )
        return self.FREQ

    def observe(self, i: int, values: np.ndarray, active: np.ndarray) -> None:
        p = self.p
        if p.pos[i] < self._last:
            raise ValueError(f"variables must follow program.order: variable {i} comes before one already observed")
        self._last = int(p.pos[i])
        active = np.ascontiguousarray(active, dtype=np.bool_)
        values = np.ascontiguousarray(values, dtype=np.int64)
        kernels.observe(int(i), self.mode, self._arrays, self.M, self.E, self.OK, self.X, self.OBS, active, values)
