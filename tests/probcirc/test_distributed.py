"""Data-parallel EM on torch.distributed (gloo, CPU): 1, 2 and 4 ranks give the same bytes; kills and stalls.

Every rank runs one thread, as torchrun's ranks do (results are rank-count
invariant at a fixed number of threads per rank). Run these alone with
``pytest -m distributed``.
"""

import math
import os
import runpy
import socket
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import probcirc
from probcirc.cli import main
from probcirc.inputs import Categorical
from probcirc.learn import distributed, em, sgd
from probcirc.learn.em import _chunk_stats
from probcirc.nodes import inputs, multiply, summate

pytestmark = pytest.mark.distributed

DIGITS = (load_digits().images[:240] // 4.25).astype(np.uint8)
# 216 training rows in batches of 64 and chunks of 16: 4 chunks a batch, 2 in the last; ranks with none.
FAST = ["--latents", "3", "--batch-size", "64", "--chunk-size", "16", "--step-size", "0.5", "--threads", "1", "-q"]
EPOCHS = ["--epochs", "2", "--full-epochs", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ZERO = torch.zeros((), dtype=torch.float64)

# A rank that dies (SIGKILL) or hangs (SIGSTOP) when it starts its DIE_AT-th epoch, as rank DIE_RANK.
DYING_RANK = """
import os, signal, sys
import probcirc.density.cli as cli
from probcirc.cli import main
real, calls = cli.em, []
def em(*args, **kwargs):
    calls.append(1)
    if len(calls) == int(os.environ["DIE_AT"]) and os.environ.get("RANK") == os.environ["DIE_RANK"]:
        os.kill(os.getpid(), getattr(signal, os.environ["DIE_HOW"]))
    return real(*args, **kwargs)
cli.em = em
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.npy"
    np.save(path, DIGITS)
    return path


def _arrays(path):
    found = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None)
    return found


def _same_model(a, b):
    """Every dataset of two model files byte for byte, but the wall-clock seconds per epoch."""
    a, b = _arrays(a), _arrays(b)
    assert a.keys() == b.keys()
    for name in a:
        if name != "history/seconds":
            assert np.asarray(a[name]).tobytes() == np.asarray(b[name]).tobytes(), name


def _train_here(data, out, *extra):
    """``probcirc train`` in this process: one rank, one thread (tests/conftest.py), as every rank runs."""
    assert torch.get_num_threads() == 1
    assert main(["train", str(data), *FAST, "-o", str(out), *EPOCHS, *extra]) == 0


@pytest.fixture(scope="module")
def one_rank(data):
    out = data.parent / "one.h5"
    _train_here(data, out)
    return out


# EM, Adam and edge flows through the library on any process group (HCLT leaves of 4 values), then,
# given more arguments, `probcirc train` on the same ranks: one launch checks both.
LIBRARY_RUN = """
import sys, numpy as np, torch, probcirc
from probcirc.cli import main
from probcirc.learn import distributed, edge_flows, em, sgd
from probcirc.structures import HCLT
torch.set_num_threads(1)
distributed.init_from_env()
x = torch.randint(0, 4, (300, 6), generator=torch.Generator().manual_seed(0))
pc = probcirc.compile(HCLT(x, 3, input_dist=probcirc.inputs.Categorical(4)), seed=0)
lls = em(pc, x, epochs=1, full_batch_epochs=1, batch_size=64, chunk_size=16, step_size=0.5)
# One chunk a batch: rank 1 of two computes nothing and only receives.
lls += em(pc, x, epochs=1, full_batch_epochs=1, batch_size=64, chunk_size=64, step_size=0.5)
lls += sgd(pc, x, epochs=1, batch_size=64, chunk_size=16, lr=0.1)
flows = edge_flows(pc, x, 64, chunk_size=16)
# The seen tables' union: rank r marks entry r of the first table, rank 0 the last of the second.
marks = [torch.zeros(2, 3, dtype=torch.bool), torch.zeros(4, dtype=torch.bool)]
marks[0].view(-1)[distributed.rank()] = True
marks[1][-1] = distributed.rank() == 0
union = distributed.ChunkSum().any(marks)
assert union[0].view(-1).tolist() == [i < distributed.world_size() for i in range(6)], union
assert union[1].tolist() == [False, False, False, True], union
if distributed.is_main():
    probcirc.io.save(pc, sys.argv[1] + ".h5")
    np.save(sys.argv[1] + ".npy", np.concatenate([np.array(lls)] + [f.numpy().ravel() for f in flows]))
if len(sys.argv) > 2:
    sys.exit(main(sys.argv[2:]))  # it leaves the process group when done
distributed.shutdown()
"""


def test_two_ranks_give_the_bytes_of_one_process_in_the_library_and_in_probcirc_train(
    data, one_rank, tmp_path, monkeypatch
):
    """torchrun with 2 ranks: EM (mini- and full-batch), Adam, edge flows, then a whole `probcirc train` run.

    Four ranks are checked by the resume below (two mini-batch epochs on 4 ranks, then one process).
    """
    script = tmp_path / "run.py"
    script.write_text(LIBRARY_RUN)
    # One process: this one (no process group), so only the ranks start interpreters.
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "one")])
    runpy.run_path(str(script), run_name="__main__")
    out = tmp_path / "ranks" / "model.h5"
    out.parent.mkdir()
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    train = ["train", str(data), *FAST, "-o", str(out), *EPOCHS]
    done = subprocess.run([*launch, str(tmp_path / "two"), *train], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "one.npy").tobytes() == np.load(tmp_path / "two.npy").tobytes()
    _same_model(tmp_path / "one.h5", tmp_path / "two.h5")
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.h5", "model.png"]  # rank 0 alone wrote
    assert done.stdout.count("wrote ") == 1
    _same_model(one_rank, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(script, data, out, world, how, die_at, timeout):
    """``world`` ranks started as torchrun would (its environment variables), without torchrun to clean up;
    rank 1 is sent ``how`` when it starts epoch ``die_at``."""
    env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world)}
    env.update(DIE_AT=str(die_at), DIE_RANK="1", DIE_HOW=how)
    argv = [sys.executable, str(script), "train", str(data), *FAST, *EPOCHS, "-o", str(out)]
    return [
        subprocess.Popen(
            [*argv, "--dist-timeout", str(timeout)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(world)
    ]


def test_a_rank_that_dies_or_hangs_stops_the_others_and_a_resume_on_another_rank_count_is_exact(
    data, one_rank, tmp_path
):
    """Side by side: 4 ranks whose rank 1 is killed (SIGKILL) when it starts epoch 3, and 2 ranks whose rank 1
    hangs (SIGSTOP, noticed after --dist-timeout) in epoch 2. Every other rank exits 3 with one line; the
    killed run's checkpoint, resumed in one process, ends with the bytes of the uninterrupted run."""
    script = tmp_path / "dying.py"
    script.write_text(DYING_RANK)
    killed, hung = tmp_path / "killed.h5", tmp_path / "hung.h5"
    runs = {
        "SIGKILL": _ranks(script, data, killed, 4, "SIGKILL", 3, 60),  # a dead peer is noticed at once
        "SIGSTOP": _ranks(script, data, hung, 2, "SIGSTOP", 2, 4),
    }
    errors = {}
    try:
        start = time.monotonic()
        for how, procs in runs.items():
            for r, p in enumerate(procs):
                if r != 1:
                    errors[how, r] = p.communicate(timeout=120)[1]
        # Bounded (a hung peer is given up after --dist-timeout), with room for 6 interpreters on a busy machine.
        assert time.monotonic() - start < 120
    finally:
        for p in (p for procs in runs.values() for p in procs):
            if p.poll() is None:
                p.kill()
            p.communicate()
    for (how, r), err in errors.items():
        world = len(runs[how])
        lines = err.strip().splitlines()
        assert runs[how][r].returncode == 3, (how, r, err)
        assert len(lines) == 1 and lines[0].startswith(f"probcirc train: error: rank {r} of {world}: lost contact"), (
            how,
            r,
            err,
        )
    with h5py.File(killed, "r") as f:
        assert len(f["history/train_bpd"]) == 2  # the checkpoint of the two whole epochs
    _train_here(data, killed, "--resume")
    _same_model(one_rank, killed)


# ------------------------------------------------------------------ the chunk sum itself, in one process
@pytest.mark.parametrize("num_chunks", [1, 2, 3, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunk_sum_adds_in_float64_in_chunk_order_for_every_split_of_the_chunks(num_chunks, dtype):
    """Totals are the float64 sums in chunk order rounded once, whatever order the chunks come in."""
    gen = torch.Generator().manual_seed(num_chunks)
    # Magnitudes 2**-40 to 2**40, so that float32 adds would round where float64 ones do not.
    chunks = {
        c: [torch.rand(7, 5, generator=gen) * 2.0 ** torch.randint(-40, 40, (7, 5), generator=gen)]
        for c in range(num_chunks)
    }
    lls = {c: torch.tensor(-float(c) / 3, dtype=torch.float64) for c in range(num_chunks)}
    reference, ll_reference = chunks[0][0].double(), lls[0]
    for c in range(1, num_chunks):
        reference, ll_reference = reference + chunks[c][0].double(), ll_reference + lls[c]
    for order in (range(num_chunks), reversed(range(num_chunks))):
        parts = {c: [chunks[c][0].clone()] for c in order}
        totals, ll = distributed.ChunkSum().run(parts, lls, num_chunks, [(7, 5)], dtype=dtype)
        assert totals[0].dtype == dtype and totals[0].shape == (7, 5)
        assert totals[0].numpy().tobytes() == reference.to(dtype).numpy().tobytes()
        assert ll.dtype == torch.float64 and float(ll) == float(ll_reference)


def test_chunk_sum_of_two_float32_chunks_is_the_float64_sum_rounded_once():
    """The one-pass float32 add of two chunks equals the float64 sum rounded to float32, over hard cases too."""
    gen = torch.Generator().manual_seed(7)
    n = 200_000
    a = torch.rand(n, generator=gen) * 2.0 ** torch.randint(-60, 60, (n,), generator=gen)
    # b near a's rounding boundaries: a's half ulp, a small multiple of it, and unrelated sizes.
    half_ulp = (torch.nextafter(a, torch.full_like(a, math.inf)) - a) / 2
    b = torch.cat([half_ulp[: n // 4], half_ulp[n // 4 : n // 2] * 3, a[n // 2 :].flip(0) * -0.999])
    b = torch.cat([b[: n - 1000], torch.rand(1000, generator=gen)])
    totals, _ = distributed.ChunkSum().run(
        {0: [a.clone()], 1: [b.clone()]}, {0: ZERO, 1: ZERO}, 2, [(n,)], dtype=torch.float32
    )
    assert totals[0].numpy().tobytes() == (a.double() + b.double()).float().numpy().tobytes()


def test_em_and_sgd_do_not_depend_on_how_batches_fall_into_chunks_of_one_rank():
    """The chunk size changes the rounding only: EM and Adam agree with a float64 reference to float32 accuracy."""
    root = summate(multiply(inputs(0, 3, Categorical(4)), inputs(1, 3, Categorical(4))), num_nodes=1)
    x = torch.randint(0, 4, (200, 2), generator=torch.Generator().manual_seed(1))
    results = []
    for chunk in (200, 7):
        pc = probcirc.compile(root, seed=3)
        em(pc, x, epochs=2, batch_size=50, chunk_size=chunk)
        sgd(pc, x, epochs=1, batch_size=50, chunk_size=chunk)
        results.append(pc.log_prob(x).double().mean())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-5)


def test_a_support_exchanges_only_its_entries_for_the_same_bytes():
    """Totals over a support (the entries that can be nonzero) equal the dense totals byte for byte."""
    gen = torch.Generator().manual_seed(4)
    keep = torch.rand(6, 9, generator=gen) < 0.3
    chunks = {c: [torch.rand(6, 9, generator=gen) * keep, torch.rand(3, generator=gen)] for c in range(3)}
    lls = {c: torch.tensor(-1.0, dtype=torch.float64) for c in range(3)}
    shapes = [(6, 9), (3,)]

    def copies():
        return {c: [t.clone() for t in ts] for c, ts in chunks.items()}

    where = keep.flatten().nonzero()[:, 0]
    dense, _ = distributed.ChunkSum().run(copies(), lls, 3, shapes)
    sparse, _ = distributed.ChunkSum().run(copies(), lls, 3, shapes, support=[where, None])
    for a, b in zip(dense, sparse):
        assert a.numpy().tobytes() == b.numpy().tobytes()
    assert bool((sparse[0][~keep] == 0).all()) and bool((sparse[0][keep] > 0).all())
    compact, _ = distributed.ChunkSum().run(copies(), lls, 3, shapes, support=[where, None], compact=True)
    assert compact[0].numpy().tobytes() == dense[0].flatten()[where].numpy().tobytes()


@pytest.mark.parametrize("missing_share", [0.0, 0.2])
def test_categorical_statistics_are_zero_outside_the_batch_support(missing_share):
    """Brute force: a leaf's count of value v is nonzero only if a sample shows v there or misses the variable."""
    gen = torch.Generator().manual_seed(5)
    root = summate(multiply(inputs(0, 3, Categorical(6)), inputs(1, 3, Categorical(6))), num_nodes=1)
    pc = probcirc.compile(root, seed=1)
    x = torch.randint(0, 3, (10, 2), generator=gen) * torch.tensor([1, 2])  # values 0..2 and 0, 2, 4
    mask = torch.rand(10, 2, generator=gen) < missing_share
    xs, missing = pc._prepare(x, mask)
    layer = pc._input_layers[0]
    support = torch.zeros(layer.node_var.numel() * 6, dtype=torch.bool)
    batch = layer.support_of(layer.stat_seen(xs, missing))
    support[batch] = True
    support = support.view(-1, 6)
    for node, var in enumerate(layer.node_var.tolist()):
        for v in range(6):
            expected = bool(((x[:, var] == v) & ~mask[:, var]).any() or mask[:, var].any())
            assert bool(support[node, v]) == expected, (node, v)
    # The batch's table is the OR of its chunks' (each rank finds its own chunks').
    seen = [layer.stat_seen(*pc._prepare(x[r], mask[r])) for r in (slice(0, 4), slice(4, 10))]
    assert torch.equal(layer.support_of(seen[0] | seen[1]), batch)
    rows = torch.arange(4)  # a chunk of the batch: its statistics vanish outside the batch's support
    _, stats, _ = _chunk_stats(pc, x, mask, rows)
    assert bool((stats[-1][~support] == 0).all()) and bool((stats[-1] > 0).any())
    assert missing_share or not bool(support.all())
