"""Sum layer: node groups of one shape, computed as batched log-einsum-exp."""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import backend


class SumLayer(nn.Module):
    """G sum groups of ``n_out`` nodes, each mixing its own ``n_in`` children.

    ``weight`` is ``(G, n_out, n_in)`` in linear space, zero where an edge is
    absent (block-sparse groups carry ``edge_mask``). The forward pass takes
    each group's per-sample maximum, exponentiates, multiplies by the weights
    (one batched matrix product) and returns to log space, so only
    ``G·n_in·B`` exponentials are needed, not one per edge.
    """

    # Buffers, declared so type checkers do not read them as Module.__getattr__'s ``Tensor | Module``.
    child_idx: torch.Tensor
    weight: torch.Tensor
    edge_mask: torch.Tensor | None

    def __init__(self, child_idx: torch.Tensor, weight: torch.Tensor, edge_mask: torch.Tensor | None, start: int):
        super().__init__()
        self.start = start
        self.register_buffer("child_idx", child_idx.long())
        self.register_buffer("weight", weight)
        self.register_buffer("edge_mask", edge_mask)
        # Found once here, not during a pass (a GPU would stall on the comparison).
        self._slots = _consecutive(self.child_idx)

    @property
    def stop(self) -> int:
        g, n_out, _ = self.weight.shape
        return self.start + g * n_out

    def _inputs(self, mars: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        g, n_in = self.child_idx.shape
        flat = None if out is None else out.view(g * n_in, mars.shape[1])
        return torch.index_select(mars, 0, self.child_idx.reshape(-1), out=flat).view(g, n_in, mars.shape[1])

    def _child_slots(self) -> slice | None:
        """The children as one run of consecutive slots (layering makes most layers so), else None."""
        return self._slots

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._slots = _consecutive(self.child_idx)

    def _scaled_inputs(self, mars: torch.Tensor, out: torch.Tensor | None = None):
        slots = self._child_slots()
        if slots is None:
            xin = self._inputs(mars, out)  # a copy of ours, so it is scaled in place: no second G x n_in x B buffer
        else:
            xin = mars[slots].view(*self.child_idx.shape, mars.shape[1])  # read where they are: no gather
        top = xin.amax(1, keepdim=True)
        # A group whose children are all impossible has top = -inf; 0 keeps exp finite.
        top.masked_fill_(~torch.isfinite(top), 0.0)
        scaled = xin.sub_(top) if slots is None else torch.sub(xin, top, out=out)
        return scaled.exp_(), top

    def tape_numel(self, rows: int) -> int:
        """Entries this layer keeps on a :class:`Tape` for ``rows`` samples: scaled children and mixtures."""
        g, n_out, n_in = self.weight.shape
        return g * (n_in + n_out) * rows

    def forward(self, mars: torch.Tensor, max_mode: bool = False, tape: Tape | None = None) -> None:
        if not max_mode and backend.use_triton(mars):
            from ..kernels import sum_forward

            return sum_forward(self, mars, backend.matmul_precision())
        if max_mode:
            mars[self.start : self.stop] = self._max_children(mars).reshape(self.stop - self.start, mars.shape[1])
            return
        # Written straight into the node values (contiguous rows): no temporary and no copy.
        out = mars[self.start : self.stop].view(self.weight.shape[0], self.weight.shape[1], mars.shape[1])
        if tape is None:
            e, top = self._scaled_inputs(mars)
            backend.bmm(self.weight, e, out=out).log_().add_(top)
            return
        g, n_out, n_in = self.weight.shape
        e, y = tape.take(self, (g, n_in, mars.shape[1]), (g, n_out, mars.shape[1]))
        e, top = self._scaled_inputs(mars, out=e)
        torch.log(backend.bmm(self.weight, e, out=y), out=out).add_(top)

    def backward(
        self, mars: torch.Tensor, flows: torch.Tensor, tape: Tape | None = None, write: bool = False
    ) -> torch.Tensor:
        """Pass flows to the children; return the weights' gradient ``(G, n_out, n_in)``.

        The flow of edge (o, i) is ``F_o · w_oi · exp(m_i) / exp(m_o)``, formed as
        ``(F_o / y_o) · w_oi · e_i`` with the forward's scaled values ``e`` and
        mixtures ``y``: from the ``tape`` when the forward pass kept them there
        (used up here), else recomputed (the same bits). With ``write`` the children's
        flows are set, not added to (the caller knows this layer is their only parent).
        The returned ``Σ_b (F_o / y_o) · e_i`` is the gradient of ``Σ_b F_root · log p``
        with respect to the weights; times the weights it gives the edge flows.
        """
        if backend.use_triton(mars):
            from ..kernels import sum_backward

            return sum_backward(self, mars, flows, backend.matmul_precision())
        g, n_out, n_in = self.weight.shape
        kept = None if tape is None else tape.pop(self)
        if kept is None:
            e, _ = self._scaled_inputs(mars)
            y = backend.bmm(self.weight, e)  # (G, n_out, B)
        else:
            e, y = kept
        f_out = flows[self.start : self.stop].view(g, n_out, flows.shape[1])
        # F_o / y_o where y_o > 0, else 0. y is a mixture of values in [0, 1] with weights >= 0, so
        # it is 0 or NaN exactly where the quotient is not finite: one in-place pass replaces a
        # comparison and a select (8x faster on CPU).
        # Into y's own memory (ours: the tape's, used up, or just computed): fresh buffers this size
        # are page-faulted in at every chunk.
        ratio = torch.div(f_out, y, out=y).nan_to_num_(0.0, 0.0, 0.0)
        grad = backend.bmm(ratio, e.mT)
        slots = self._child_slots()
        if slots is not None and write:
            dst = flows[slots].view(g, n_in, flows.shape[1])
            backend.bmm(self.weight.mT, ratio, out=dst).mul_(e)
            return grad
        back = backend.bmm(self.weight.mT, ratio)
        f_in = e.mul_(back).reshape(g * n_in, flows.shape[1])  # e is ours (a copy): scaled in place
        if slots is not None:  # each child once per layer: index_add_'s sum, without the scatter
            flows[slots].add_(f_in)
        elif write:
            flows.index_copy_(0, self.child_idx.reshape(-1), f_in)
        else:
            flows.index_add_(0, self.child_idx.reshape(-1), f_in)
        return grad

    def _max_children(self, mars: torch.Tensor) -> torch.Tensor:
        """max over children of ``log w + child``, ``(G, n_out, B)``, in chunks to bound memory."""
        g, n_out, n_in = self.weight.shape
        logw = self.weight.log()[..., None]  # (G, n_out, n_in, 1)
        xin = self._inputs(mars)[:, None]  # (G, 1, n_in, B)
        step = max(1, int(2**25 // max(1, g * n_out * n_in)))
        return torch.cat([(xin[..., s : s + step] + logw).amax(2) for s in range(0, mars.shape[1], step)], -1)

    def down(self, active: torch.Tensor, mars: torch.Tensor, choose: str, generator) -> None:
        """Activate one child per active node: drawn by posterior weight, or the max-product argmax."""
        g, n_out, n_in = self.weight.shape
        node, b = active[self.start : self.stop].nonzero(as_tuple=True)
        if b.numel() == 0:
            return
        grp, o = node // n_out, node % n_out
        children = self.child_idx[grp]  # (A, n_in)
        scores = self.weight[grp, o].log() + mars[children, b[:, None]]
        if choose == "sample":
            probs = (scores - scores.amax(-1, keepdim=True)).exp()
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            pick = scores.argmax(-1)
        active[children.gather(1, pick[:, None]).squeeze(1), b] = True

    def em_update(self, edge_flows: torch.Tensor, step_size: float, pseudocount: float, owned: bool = False) -> None:
        """θ_new = (F + α/|ch|) / (ΣF + α), mixed in with step size s; F = weight · gradient.

        ``owned``: ``edge_flows`` is the caller's temporary, of the weights' dtype, and may be used up.
        """
        if backend.use_triton(self.weight):
            from ..kernels import em_update

            return em_update(self, edge_flows, step_size, pseudocount)
        n_children = self.edge_mask.sum(-1, keepdim=True) if self.edge_mask is not None else self.weight.shape[-1]
        # In place on a tensor of ours: fresh G x n_out x n_in temporaries were paged in (zeroed) for
        # every layer and batch.
        smoothed = (edge_flows if owned else edge_flows.clone()).add_(pseudocount / n_children)
        if self.edge_mask is not None:
            smoothed.mul_(self.edge_mask)
        total = smoothed.sum(-1, keepdim=True)
        # The shortcut needs every node's total positive and finite: free to check on a CPU only.
        if self.weight.device.type == "cpu" and bool(torch.isfinite(total).all()) and bool((total > 0).all()):
            self.weight.lerp_(smoothed.div_(total), step_size)  # (1 - s)·θ + s·θ_new in one pass
            return
        # A node that received no flow and no pseudocount keeps its weights.
        new = torch.where(total > 0, smoothed / torch.where(total > 0, total, torch.ones_like(total)), self.weight)
        self.weight.lerp_(new, step_size)


def _consecutive(child_idx: torch.Tensor) -> slice | None:
    """``child_idx`` (flattened) as a slice when it is ``first, first + 1, ...``, else None."""
    c = child_idx.reshape(-1)
    if c.numel() == 0:
        return None
    first = int(c[0])
    return (
        slice(first, first + c.numel())
        if torch.equal(c, torch.arange(first, first + c.numel(), device=c.device))
        else None
    )


class Tape:
    """What the sum layers' forward pass keeps for the backward pass, in one buffer reused batch to batch.

    Recomputing a layer's scaled children (a gather, a max, an exponential)
    and its mixtures (a batched matrix product) took half of the backward
    pass; keeping them costs ``Σ G·(n_in + n_out)`` entries per sample (about
    the node values' size). Fresh memory every batch would be page-faulted in,
    so the buffer stays and each forward pass hands out views of it in order.

    Example:
        >>> import torch
        >>> tape = Tape()
        >>> tape.start(10, torch.float32, "cpu")
        >>> e, y = tape.take("layer", (2, 2), (2, 3))
        >>> tape.pop("layer")[1].shape, tape.pop("layer")
        (torch.Size([2, 3]), None)
    """

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None
        self._used = 0
        self._kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def start(self, numel: int, dtype: torch.dtype, device: torch.device | str) -> None:
        """Forget what was kept; the next forward pass needs ``numel`` entries."""
        buf = self._buf
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != torch.device(device):
            self._buf = torch.empty(numel, dtype=dtype, device=device)
        self._used = 0
        self._kept.clear()

    def take(self, layer: object, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
        """Fresh views for ``layer``'s kept tensors, shaped ``shapes``; :meth:`pop` returns them."""
        assert self._buf is not None, "Tape.start first"
        views = []
        for shape in shapes:
            n = math.prod(shape)
            views.append(self._buf[self._used : self._used + n].view(shape))
            self._used += n
        self._kept[id(layer)] = tuple(views)  # type: ignore[assignment]
        return views

    def pop(self, layer: object) -> tuple[torch.Tensor, ...] | None:
        """``layer``'s kept tensors (once), or None if its forward pass kept nothing."""
        return self._kept.pop(id(layer), None)
