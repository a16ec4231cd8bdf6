"""Data-parallel EM on torch.distributed (gloo, CPU): 1, 2 and 4 ranks give the same bytes; kills and stalls.

Every rank runs one thread, as torchrun's ranks do (results are rank-count
invariant at a fixed number of threads per rank). Run these alone with
``pytest -m distributed``.
"""

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
from probcirc.nodes import inputs, multiply, summate

pytestmark = pytest.mark.distributed

DIGITS = (load_digits().images[:240] // 4.25).astype(np.uint8)
# 216 training rows in batches of 64 and chunks of 16: 4 chunks a batch, 2 in the last; ranks with none.
FAST = ["--latents", "3", "--batch-size", "64", "--chunk-size", "16", "--step-size", "0.5", "--threads", "1", "-q"]
EPOCHS = ["--epochs", "2", "--full-epochs", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

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


def _train(ranks, data, out, *extra, script=None, env=None, timeout=120):
    """``probcirc train`` on ``ranks`` ranks: plain python for 1, torchrun (python -m torch.distributed.run) else."""
    program = [str(script)] if script else ["-m", "probcirc"]
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    argv = [*launch, *program, "train", str(data), *FAST, "-o", str(out), *extra]
    return subprocess.run(argv, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=timeout)


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


@pytest.fixture(scope="module")
def one_rank(data):
    """The single-process run, in this process (one thread, as every rank runs): no interpreter to start."""
    out = data.parent / "one.h5"
    assert torch.get_num_threads() == 1  # tests/conftest.py
    assert main(["train", str(data), *FAST, "-o", str(out), *EPOCHS]) == 0
    return out


def test_two_ranks_give_the_bytes_of_one_process(data, one_rank, tmp_path):
    """Four ranks are checked by the resume below (its mini-batch and full-batch epochs run on 4)."""
    out = tmp_path / "model.h5"
    done = _train(2, data, out, *EPOCHS)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.h5", "model.png"]  # rank 0 alone wrote
    assert done.stdout.count("wrote ") == 1
    _same_model(one_rank, out)


def test_a_kill_then_resume_on_another_rank_count_gives_the_uninterrupted_run(data, one_rank, tmp_path):
    out, script = tmp_path / "model.h5", tmp_path / "dying.py"
    script.write_text(DYING_RANK)
    start = time.monotonic()
    killed = _train(2, data, out, *EPOCHS, script=script, env={"DIE_AT": "2", "DIE_RANK": "1", "DIE_HOW": "SIGKILL"})
    assert killed.returncode != 0 and time.monotonic() - start < 60
    with h5py.File(out, "r") as f:
        assert len(f["history/train_bpd"]) == 1  # the checkpoint of the one whole epoch
    resumed = _train(4, data, out, *EPOCHS, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dying.py", "model.h5", "model.png"]  # rank 0 alone wrote
    assert resumed.stdout.count("wrote ") == 1
    _same_model(one_rank, out)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_that_dies_or_hangs_makes_the_others_exit_with_one_line(data, tmp_path):
    """Ranks started as torchrun would (its environment variables), without torchrun to clean up after them.

    A killed rank (SIGKILL) and a hung one (SIGSTOP, noticed after --dist-timeout) run side by side:
    the hung pair mostly waits, so the two pairs together take about as long as one.
    """
    script = tmp_path / "dying.py"
    script.write_text(DYING_RANK)
    procs = {}
    for how in ("SIGKILL", "SIGSTOP"):
        env = {**ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
        env.update(DIE_AT="2", DIE_RANK="1", DIE_HOW=how)
        argv = [sys.executable, str(script), "train", str(data), *FAST, *EPOCHS, "-o", str(tmp_path / f"{how}.h5")]
        procs[how] = [
            subprocess.Popen(
                [*argv, "--dist-timeout", "4"],
                env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for r in range(2)
        ]
    errors = {}
    try:
        start = time.monotonic()
        for how, pair in procs.items():
            errors[how] = pair[0].communicate(timeout=60)[1]
        assert time.monotonic() - start < 60
    finally:
        for p in (p for pair in procs.values() for p in pair):
            if p.poll() is None:
                p.kill()
            p.communicate()
    for how, err in errors.items():
        lines = err.strip().splitlines()
        assert procs[how][0].returncode == 3, (how, err)
        assert len(lines) == 1 and lines[0].startswith("probcirc train: error: rank 0 of 2: lost contact"), (how, err)


# EM, Adam and edge flows through the library on any process group, HCLT leaves of 4 values.
LIBRARY_RUN = """
import sys, numpy as np, torch, probcirc
from probcirc.learn import distributed, edge_flows, em, sgd
from probcirc.structures import HCLT
torch.set_num_threads(1)
distributed.init_from_env()
x = torch.randint(0, 4, (300, 6), generator=torch.Generator().manual_seed(0))
pc = probcirc.compile(HCLT(x, 3, input_dist=probcirc.inputs.Categorical(4)), seed=0)
lls = em(pc, x, epochs=1, full_batch_epochs=1, batch_size=64, chunk_size=16, step_size=0.5)
lls += sgd(pc, x, epochs=1, batch_size=64, chunk_size=16, lr=0.1)
flows = edge_flows(pc, x, 64, chunk_size=16)
if distributed.is_main():
    probcirc.io.save(pc, sys.argv[1] + ".h5")
    np.save(sys.argv[1] + ".npy", np.concatenate([np.array(lls)] + [f.numpy().ravel() for f in flows]))
distributed.shutdown()
"""


def test_em_adam_and_edge_flows_on_three_ranks_give_the_bytes_of_one_process(tmp_path, monkeypatch):
    script = tmp_path / "run.py"
    script.write_text(LIBRARY_RUN)
    # One process: this one (one thread, no process group), so only the three ranks start interpreters.
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "one")])
    runpy.run_path(str(script), run_name="__main__")
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3"]
    done = subprocess.run(
        [sys.executable, *launch, str(script), str(tmp_path / "three")], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert np.load(tmp_path / "one.npy").tobytes() == np.load(tmp_path / "three.npy").tobytes()
    _same_model(tmp_path / "one.h5", tmp_path / "three.h5")


# ------------------------------------------------------------------ the exact sum itself, in one process
def test_exact_sum_is_the_same_for_every_split_of_the_chunks():
    """Chunks computed by any rank (here: simulated ranks) give the same totals, as exact as float64 allows."""
    gen = torch.Generator().manual_seed(0)
    chunks = {c: [torch.rand(7, 5, generator=gen) * 10.0 ** (c - 3)] for c in range(6)}
    lls = {c: torch.tensor(-float(c) / 3, dtype=torch.float64) for c in range(6)}
    reference = sum(t[0].double() for t in chunks.values())

    def copies(order):  # run() scales the chunks' tensors in place
        return {c: [chunks[c][0].clone()] for c in order}

    one, ll = distributed.ExactSum().run(copies(range(6)), lls, 6, [(7, 5)])
    # Resolution: 2**-52 of the largest entry (< 100) times the 6 chunks, rounded once per chunk.
    torch.testing.assert_close(one[0], reference, rtol=1e-13, atol=6 * 6 * 128 * 2.0**-52)
    assert float(ll) == sum(-c / 3 for c in range(6))
    for order in ([5, 4, 3, 2, 1, 0], [3, 0, 5, 1, 4, 2]):
        again = distributed.ExactSum().run(copies(order), lls, 6, [(7, 5)])[0]
        assert again[0].numpy().tobytes() == one[0].numpy().tobytes()


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
