"""Input layer: every leaf of one family, evaluated at once."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .. import backend
from ..inputs import Categorical, InputDist


class InputLayer(nn.Module):
    """Leaves of one family; node j reads variable ``node_var[j]`` and owns slot ``start + j``.

    When the leaves come in equal runs of k per variable (every structure
    here builds them so), parameters are viewed as ``(V, k, P)`` and each
    variable's row of values is broadcast to its k leaves instead of copied.
    Otherwise k = 1 and every leaf is its own run.
    """

    # Buffers, declared so type checkers do not read them as Module.__getattr__'s ``Tensor | Module``.
    node_var: torch.Tensor
    run_var: torch.Tensor
    params: torch.Tensor

    def __init__(self, dist: InputDist, node_var: torch.Tensor, params: torch.Tensor, start: int):
        super().__init__()
        self.dist = dist
        self.start = start
        node_var = node_var.long()
        k = _run_length(node_var)
        self.k = k
        self.register_buffer("node_var", node_var)
        self.register_buffer("run_var", node_var[::k].clone())
        self.register_buffer("params", params)
        # name -> (params tensor, its version, what was derived from it): see _derived
        self._kept: dict[str, tuple[torch.Tensor, int, torch.Tensor]] = {}

    @property
    def stop(self) -> int:
        return self.start + self.node_var.numel()

    def _grouped(self, params: torch.Tensor) -> torch.Tensor:
        return params.reshape(-1, self.k, params.shape[-1])

    def values(self, x: torch.Tensor, missing: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values and observed flags per run of leaves, ``(V, 1, B)``, from node-major ``(num_vars, B)``."""
        return x.index_select(0, self.run_var)[:, None], ~missing.index_select(0, self.run_var)[:, None]

    def log_values(self, params: torch.Tensor, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """log p of each leaf ``(n, B)``, with missing variables summed out (log 1 = 0)."""
        xv, observed = self.values(x, missing)
        logp = self.dist.log_prob(self._grouped(params), xv)
        # Always masked: asking whether anything is missing would stall a GPU once per layer and batch.
        logp = logp.masked_fill(~observed, 0.0)
        return logp.reshape(self.node_var.numel(), x.shape[1])

    def check(self, x: torch.Tensor, missing: torch.Tensor) -> None:
        xv, observed = self.values(x, missing)
        self.dist.check_values(xv[observed])

    def _triton(self, t: torch.Tensor) -> bool:
        """Whether this layer runs on the Triton kernels (categorical leaves only; others stay on torch)."""
        return isinstance(self.dist, Categorical) and backend.use_triton(t)

    def forward(self, mars: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, max_mode: bool = False) -> None:
        if not max_mode:
            if self._triton(mars):
                from ..kernels import categorical_forward

                return categorical_forward(self, mars, x.contiguous(), missing.contiguous())
            xv, observed = self.values(x, missing)
            grouped = self._grouped(self.params)
            # Straight into the node values: a leaves x B temporary (51 MB at MNIST sizes) would be
            # page-faulted in and copied every batch.
            dst = mars[self.start : self.stop].view(-1, self.k, x.shape[1])
            if isinstance(self.dist, Categorical):
                # Categorical.log_prob's gather, from a table with one more column, log 1 = 0, that
                # missing values index: the gather masks them too (a masked fill over the leaves
                # x B values took half as long as the gather).
                table = self._current_log_table()
                cats = self.dist.num_cats
                index = torch.where(observed, xv.long().clamp(0, cats - 1), cats)
                torch.gather(table, -1, index.expand(*grouped.shape[:-1], x.shape[1]), out=dst)
                return
            dst.copy_(self.dist.log_prob(grouped, xv))
            # Always masked: asking whether anything is missing would stall a GPU every batch.
            dst.masked_fill_(~observed, 0.0)
            return
        # In max-product a missing variable takes its best value.
        xv, observed = self.values(x, missing)
        grouped = self._grouped(self.params)
        if isinstance(self.dist, Categorical):
            # log θ at the value and at the mode, read off the kept table: no logarithm per pass.
            table = self._current_log_table()[..., :-1]
            index = xv.long().clamp(0, self.dist.num_cats - 1).expand(*grouped.shape[:-1], x.shape[1])
            logp = torch.where(observed, table.gather(-1, index), self._mode_log_prob())
        else:
            logp = torch.where(observed, self.dist.log_prob(grouped, xv), self.dist.mode_log_prob(grouped)[..., None])
        mars[self.start : self.stop] = logp.reshape(self.node_var.numel(), x.shape[1])

    def _derived(self, name: str, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``compute(params)``, kept under ``name`` until the parameters change.

        A tensor's version counter rises with each change in place, through views too (EM's
        updates, ``load_state_dict``), and a new tensor is a new object, so what is kept serves
        only the values it came from. Writes that bypass the counter (``.data``, which autograd's
        gradcheck uses to perturb its inputs) are not seen: parameters that require gradients,
        and inference tensors (no counter), are never kept.
        """
        p = self.params
        if p.requires_grad or p.is_inference():
            return compute(p)
        kept = self._kept.get(name)
        if kept is not None and kept[0] is p and kept[1] == p._version:
            return kept[2]
        # Let go of the stale value first: its memory then serves the new one, where holding it
        # would page in fresh memory (MNIST's HCLT(32): 26 MB, two thirds of a log table's 12 ms).
        del kept
        self._kept.pop(name, None)
        value = compute(p)
        self._kept[name] = (p, p._version, value)
        return value

    def _current_log_table(self) -> torch.Tensor:
        """:meth:`_log_table` of the parameters: for MNIST's HCLT(32), 6.4 million logarithms that were
        two thirds of a one-sample query when every pass recomputed them."""
        return self._derived("log", lambda p: self._log_table(self._grouped(p)))

    def _mode_log_prob(self) -> torch.Tensor:
        """log θ at each categorical leaf's mode ``(V, k, 1)``, from the kept table and modes (max-product)."""
        mode = self._derived("mode", self.dist.mode).long()[:, None]
        return self._current_log_table().gather(-1, self._grouped(mode))

    @staticmethod
    def _log_table(grouped: torch.Tensor) -> torch.Tensor:
        """``log θ`` with one more last column, of zeros."""
        table = grouped.new_empty(*grouped.shape[:-1], grouped.shape[-1] + 1)
        table[..., -1] = 0.0
        torch.log(grouped, out=table[..., :-1])
        return table

    def em_stats(self, flows: torch.Tensor, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        if self._triton(flows):
            from ..kernels import categorical_stats

            return categorical_stats(self, flows, x.contiguous(), missing.contiguous())
        xv, observed = self.values(x, missing)
        node_flows = flows[self.start : self.stop].reshape(self.node_var.numel() // self.k, self.k, x.shape[1])
        stats = self.dist.stats(self._grouped(self.params), xv, observed, node_flows)
        return stats.reshape(self.node_var.numel(), -1)

    def stat_seen(self, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor | None:
        """Which values can get a nonzero statistic from these samples: bool ``(runs, S)``, or None (all).

        Tables of several sample sets combine by OR, so each chunk of a batch finds its own and
        data-parallel EM takes their union (:meth:`support_of` turns it into indices).
        """
        possible = self.dist.stat_seen(*self.values(x, missing))
        return None if possible is None else possible[:, 0]

    def support_of(self, seen: torch.Tensor) -> torch.Tensor:
        """Flat indices of the :meth:`em_stats` entries that a :meth:`stat_seen` table allows.

        Data-parallel EM adds only these: at MNIST sizes a batch shows about
        a third of the 256 grey levels per pixel.
        """
        # Found per variable, then repeated for its k leaves (node run * k + j, entry s).
        run, entry = seen.nonzero(as_tuple=True)
        width = seen.shape[-1]
        leaves = torch.arange(self.k, device=run.device) * width
        return ((run * self.k * width + entry)[:, None] + leaves).reshape(-1)

    def em_update(
        self, stats: torch.Tensor, step_size: float, pseudocount: float, support: torch.Tensor | None = None
    ) -> None:
        """``θ ← (1 - s)·θ + s·θ_new`` in place, ``θ_new`` from :meth:`m_step`; ``stats`` may be used up.

        With ``support`` (flat indices from :meth:`support_of`), ``stats`` holds only those
        entries of the statistics; the others are zero.
        """
        stats = stats.to(self.params.dtype)
        if support is not None:
            if self._sparse_categorical_update(stats, support, step_size, pseudocount):
                return
            dense = torch.zeros(self.params.numel(), dtype=stats.dtype, device=stats.device)
            stats = dense.index_copy_(0, support, stats).view_as(self.params)
        if isinstance(self.dist, Categorical) and pseudocount > 0 and not self._triton(self.params):
            total = stats.sum(-1, keepdim=True).add_(pseudocount)
            # With every total finite and positive no node keeps its old row (the general M-step's
            # only branch), so the smoothing, division and mixing fit in two passes over the table.
            if bool(torch.isfinite(total).all()):
                smoothed = stats.add_(pseudocount / self.dist.num_cats)
                self.params.mul_(1 - step_size).addcdiv_(smoothed, total, value=step_size)
                return
        new = self.m_step(stats, pseudocount)  # before θ is scaled: empty nodes keep the old θ
        self.params.mul_(1 - step_size).add_(new.mul_(step_size))

    def _sparse_categorical_update(
        self, stats: torch.Tensor, support: torch.Tensor, step_size: float, pseudocount: float
    ) -> bool:
        """The categorical update from the support's entries alone (CPU); False, touching nothing, if it does not apply.

        ``θ ← (1 - s)·θ + s·α/C/T`` on every entry, then ``+ s·F/T`` on the support's, with ``T = ΣF + α``:
        one pass over the table and an add per exchanged entry, instead of building the dense
        statistics. A row total is added in support order, one entry after another (``index_add_``
        on the CPU), so it is the same bytes for every number of ranks; a GPU's atomic adds would
        not be, so other devices build the dense table.
        """
        if not (isinstance(self.dist, Categorical) and pseudocount > 0 and self.params.device.type == "cpu"):
            return False
        width, k = self.dist.num_cats, self.k
        # support_of's layout: runs of k entries, the same value for the k leaves of one variable.
        run = support.view(-1, k)[:, 0] // (k * width)
        entries = stats.view(-1, k)
        total = torch.zeros(self.params.shape[0] // k, k, dtype=stats.dtype, device=stats.device)
        total.index_add_(0, run, entries).add_(pseudocount)
        if not bool(torch.isfinite(total).all()):
            return False
        share = total.reciprocal_().mul_(step_size)  # s / T
        grouped = self.params.view(-1, k, width)
        # (1 - s)·θ + s·α/C/T in one pass over the table (add's alpha), not a multiply and then an add.
        torch.add((share * (pseudocount / width))[..., None], grouped, alpha=1 - step_size, out=grouped)
        # The support's indices are distinct: one add per entry, so scatter_add_ gives index_add_'s
        # bytes, faster on a CPU (MNIST's HCLT(32), 1.9 million entries: 3.7 ms against 5.9).
        self.params.view(-1).scatter_add_(0, support, entries.mul_(share.index_select(0, run)).view(-1))
        return True

    def m_step(self, stats: torch.Tensor, pseudocount: float) -> torch.Tensor:
        """New parameters from accumulated expected statistics (the leaves' M-step)."""
        if self._triton(self.params):
            from ..kernels import categorical_m_step

            return categorical_m_step(stats, self.params, pseudocount)
        return self.dist.m_step(stats, self.params, pseudocount)

    def down(self, active: torch.Tensor, x: torch.Tensor, missing: torch.Tensor, choose: str, generator) -> None:
        """Fill the missing variables of the active leaves: drawn (``sample``) or the mode (``argmax``)."""
        j, b = active[self.start : self.stop].nonzero(as_tuple=True)
        var = self.node_var[j]
        free = missing[var, b]
        b, j, var = b[free], j[free], var[free]
        if choose == "sample":
            x[var, b] = self.dist.sample(self.params[j], generator).to(x.dtype)
        else:
            x[var, b] = self._derived("mode", self.dist.mode)[j].to(x.dtype)  # every leaf's, kept


def _run_length(node_var: torch.Tensor) -> int:
    """k if node_var is V runs of k equal entries, else 1."""
    n = node_var.numel()
    change = (node_var[1:] != node_var[:-1]).nonzero()
    k = int(change[0]) + 1 if len(change) else n
    if n % k == 0 and bool((node_var.view(-1, k) == node_var.view(-1, k)[:, :1]).all()):
        return k
    return 1
