"""Peer baseline for ``pc_mnist.py``: SPFlow's own HCLT, trained with SPFlow's own EM.

``run_spflow_hclt(train, test, num_latents, epochs, batch_size, time_budget_s)``
returns one result row (or an ``"error"`` row; it never raises).

What is SPFlow's and what is ours:

* Structure: SPFlow's Chow-Liu learner
  (``spflow.zoo.hclt.chow_liu.learn_chow_liu_trees_categorical``, its MI with
  pseudocount 1 and its maximum spanning tree) run on pixels binned into 4
  equal-width bins, on at most 5,000 training images. That is the same input
  our HCLT uses (``num_bins=4, max_structure_samples=5000``). SPFlow's
  ``learn_hclt_categorical`` would run the MI on all 256 values, which costs
  about 30 minutes of CPU for 784 pixels (65,536 joint bins per pair), so it
  cannot fit a benchmark budget.
* Circuit: SPFlow's HCLT builder (``spflow.zoo.hclt.learn._build_hclt_from_tree``,
  the body of ``learn_hclt_categorical`` after the tree) with
  ``Categorical(K=256)`` leaves, ``num_latents`` hidden states per pixel,
  uniform initial sum weights, root at pixel 0 (SPFlow's choice).
* Learning: ``spflow.learn.expectation_maximization_batched`` (mini-batch EM).
  SPFlow's EM step *replaces* every parameter with the estimate from the
  current mini-batch (no step size, no pseudocount; leaf probabilities are
  floored at 1e-10), so the final model is mostly the last batch's estimate.

Run this file directly for a small smoke test on random data.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import threading
import time

import numpy as np

_MAX_STRUCTURE_SAMPLES = 5000
_NUM_BINS = 4
_EVAL_BATCH = 500


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("spflow")
    except Exception:  # noqa: BLE001 - any failure just means "unknown"
        return "?"


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PeakRSS:
    """Samples this process's resident set every 50 ms while active."""

    def __init__(self) -> None:
        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mb())

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


class _Batches:
    """Mini-batches of ``data[start:stop]`` for SPFlow's EM loop.

    Stops early when a batch expected to take ``batch_s`` seconds would end after ``deadline``.
    """

    def __init__(self, data, start: int, stop: int, batch_size: int, deadline: float, batch_s: float = 0.0) -> None:
        self.data, self.start, self.stop, self.batch_size, self.deadline = data, start, stop, batch_size, deadline
        self.batch_s = batch_s
        self.seen = 0
        self.cut = False

    def __iter__(self):
        for s in range(self.start, self.stop, self.batch_size):
            if time.perf_counter() + self.batch_s >= self.deadline:
                self.cut = True
                return
            batch = self.data[s : min(s + self.batch_size, self.stop)]
            self.seen += len(batch)
            yield batch


def _check(name: str, x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] < 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D>=2) array, got {getattr(x, 'shape', type(x))}")
    if not np.issubdtype(x.dtype, np.integer) or x.min() < 0 or x.max() > 255:
        raise ValueError(f"{name} must hold integer pixels in [0, 255], got {x.dtype}")


def _run(train: np.ndarray, test: np.ndarray, num_latents: int, epochs: int, batch_size: int, budget: float) -> dict:
    import torch
    from spflow.learn import expectation_maximization_batched
    from spflow.meta import Scope
    from spflow.modules.leaves import Categorical
    from spflow.zoo.hclt.chow_liu import learn_chow_liu_trees_categorical
    from spflow.zoo.hclt.learn import _build_hclt_from_tree

    _check("train", train)
    _check("test", test)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train has {train.shape[1]} variables, test {test.shape[1]}")
    if num_latents < 1 or epochs < 1 or batch_size < 1 or not budget > 0:
        raise ValueError("num_latents, epochs, batch_size and time_budget_s must be positive")

    t_begin = time.perf_counter()
    deadline = t_begin + budget
    n, d = train.shape
    k = 256
    notes: list[str] = []

    # ---- structure: SPFlow's Chow-Liu MI + MST on 4-bin pixels -------------------------------
    binned = torch.from_numpy(train[:_MAX_STRUCTURE_SAMPLES].astype(np.int64) * _NUM_BINS // k)
    n_struct = min(n, _MAX_STRUCTURE_SAMPLES)
    # MI cost grows with samples x pairs; probe on 64 variables, keep it under ~25% of the budget.
    probe_rows, probe_vars = min(n, 1000), min(d, 64)
    t0 = time.perf_counter()
    learn_chow_liu_trees_categorical(binned[:probe_rows, :probe_vars], num_cats=_NUM_BINS)
    per_row_pair = (time.perf_counter() - t0) / (probe_rows * probe_vars * (probe_vars - 1) / 2)
    pairs = d * (d - 1) / 2
    affordable = int(0.25 * budget / max(per_row_pair * pairs, 1e-12))
    if affordable < n_struct:
        n_struct = max(min(n, 200), affordable)
        notes.append(f"tree from {n_struct:,} images (budget)")
    edges = learn_chow_liu_trees_categorical(binned[:n_struct], num_cats=_NUM_BINS)[0]
    del binned

    model = _build_hclt_from_tree(
        num_features=d,
        edges=edges,
        num_hidden_cats=num_latents,
        emission_factory=lambda v: Categorical(scope=Scope([v]), out_channels=num_latents, K=k),
        init="uniform",
        device=None,
        dtype=None,
    )
    t_structure = time.perf_counter() - t_begin

    data = torch.from_numpy(train.astype(np.float32))  # SPFlow leaves take float tensors of category indices
    test_t = torch.from_numpy(test.astype(np.float32))

    def eval_ll(x) -> torch.Tensor:
        with torch.no_grad():
            return model.log_likelihood(x).reshape(-1).double()

    # ---- throughput probe: the first mini-batch of epoch 1 -----------------------------------
    t_train0 = time.perf_counter()
    probe_n = min(n, batch_size)
    probe = _Batches(data, 0, probe_n, batch_size, float("inf"))
    expectation_maximization_batched(model, probe, num_epochs=1)
    t_em = time.perf_counter() - t_train0
    em_per_img = t_em / probe.seen
    t0 = time.perf_counter()
    eval_ll(test_t[: min(len(test), 100)])
    eval_per_img = (time.perf_counter() - t0) / min(len(test), 100)
    eval_reserve = 1.2 * eval_per_img * len(test) + 2.0

    # ---- decide how many training images fit, then train ------------------------------------
    left = deadline - time.perf_counter() - eval_reserve
    fit_total = probe.seen + max(left, 0.0) / em_per_img  # images the EM can still see, probe included
    n_used = n if fit_total >= epochs * n else max(probe_n, int(fit_total / epochs) // batch_size * batch_size)
    train_deadline = deadline - eval_reserve
    seen, cut = probe.seen, False
    for epoch in range(epochs):
        start = probe_n if epoch == 0 else 0
        if start >= n_used:
            continue
        batches = _Batches(data, start, n_used, batch_size, train_deadline, 0.8 * t_em)
        expectation_maximization_batched(model, batches, num_epochs=1)
        seen += batches.seen
        if batches.cut:
            cut = True
            break
    t_train = time.perf_counter() - t_train0

    # ---- test log-likelihood ------------------------------------------------------------------
    ll = torch.cat([eval_ll(test_t[s : s + _EVAL_BATCH]) for s in range(0, len(test), _EVAL_BATCH)])
    if not torch.isfinite(ll).all():
        raise FloatingPointError(f"{int((~torch.isfinite(ll)).sum())} test log-likelihoods are not finite")
    bpd = float(-ll.mean() / (d * math.log(2)))

    if n_used < n or cut:
        distinct = min(seen, n_used)
        notes.insert(
            0,
            f"trained on {distinct:,} of {n:,} images within a {budget:.0f} s budget"
            + (" (stopped mid-epoch)" if cut else ""),
        )
    else:
        notes.insert(0, f"{n:,} training images x {epochs} epoch(s)")
    notes.append(
        f"Chow-Liu tree on {_NUM_BINS}-bin pixels, Categorical(256) leaves, {num_latents} latents, "
        f"SPFlow mini-batch EM (replaces parameters each batch of {batch_size}), "
        f"{torch.get_num_threads()} threads, structure {t_structure:.0f} s, EM {t_train:.0f} s"
    )
    return {
        "name": f"SPFlow {_version()} HCLT",
        "train_img_per_s": seen / t_train,
        "test_bpd": bpd,
        "note": "; ".join(notes),
    }


def run_spflow_hclt(
    train: np.ndarray, test: np.ndarray, num_latents: int, epochs: int, batch_size: int, time_budget_s: float
) -> dict:
    """Returns {"name": "SPFlow <version> HCLT", "train_img_per_s": float, "test_bpd": float,
    "peak_rss_mb": float, "note": str}
    or {"name": ..., "error": "<one line: why it could not run>"} — never raises."""
    name = f"SPFlow {_version()} HCLT"
    box: dict = {}

    def work() -> None:
        try:
            box["result"] = _run(train, test, int(num_latents), int(epochs), int(batch_size), float(time_budget_s))
        except BaseException as err:  # noqa: BLE001 - the contract is "never raises"
            box["error"] = f"{type(err).__name__}: {err}"

    # SPFlow evaluates the circuit by recursion along the Chow-Liu tree, which can be
    # hundreds of variables deep: run it with a high recursion limit on a big-stack thread.
    old_limit, old_stack = sys.getrecursionlimit(), None
    try:
        with _PeakRSS() as rss:
            old_stack = threading.stack_size(512 * 2**20)
            sys.setrecursionlimit(max(old_limit, 100_000))
            worker = threading.Thread(target=work, name="spflow-hclt")
            worker.start()
            worker.join()
    except BaseException as err:  # noqa: BLE001
        box.setdefault("error", f"{type(err).__name__}: {err}")
    finally:
        sys.setrecursionlimit(old_limit)
        if old_stack is not None:
            threading.stack_size(old_stack)
    if "result" not in box:
        msg = " ".join(str(box.get("error", "unknown failure")).split())
        return {"name": name, "error": msg[:300]}
    out = box["result"]
    out["peak_rss_mb"] = rss.peak
    out["note"] += f"; peak RSS is this process's, {rss.start:.0f} MB before the call"
    return out


if __name__ == "__main__":
    import torch

    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    rng = np.random.default_rng(0)
    train_imgs = rng.integers(0, 256, (2000, 28 * 28), dtype=np.uint8)
    test_imgs = rng.integers(0, 256, (500, 28 * 28), dtype=np.uint8)
    t = time.perf_counter()
    print(
        run_spflow_hclt(
            train_imgs,
            test_imgs,
            num_latents=4,
            epochs=1,
            batch_size=100,
            time_budget_s=float(os.environ.get("BUDGET", "60")),
        )
    )
    print(f"smoke run: {time.perf_counter() - t:.1f} s")
