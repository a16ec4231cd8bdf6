"""mpiexec runs: results independent of the rank count, and resume after a killed run."""

import numpy as np
import pytest
from sc_helpers import run_cli

from sparsecoding.io import load_results

pytestmark = pytest.mark.mpi

#: rows that do not split evenly over the ranks (N = 700 in chunks of 64), data truncation (Ncut) and
#: annealing noise that stops mid-run: every path where ranks could part
N = 700
TRAIN = [
    "train",
    "--model",
    "bsc",
    "--H",
    "12",
    "--Hprime",
    "6",
    "--gamma",
    "3",
    "--steps",
    "10",
    "--anneal",
    "2:1@0.5",
    "--W-noise",
    "0.3",
    "--Ncut-factor",
    "0.5",
    "--chunk-size",
    "64",
    "--checkpoint-every",
    "4",
    "--quiet",
    "--no-plot",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Image-like data: sparse sums of 12 random 6x6 fields plus noise."""
    import h5py

    rng = np.random.default_rng(4)
    path = tmp_path_factory.mktemp("mpi") / "patches.h5"
    W = rng.normal(size=(36, 12))
    S = rng.random((N, 12)) < 0.15
    with h5py.File(path, "w") as f:
        f["y"] = S @ W.T + 0.5 * rng.normal(size=(N, 36))
    return path


@pytest.fixture(scope="module")
def runs(data):
    """The same training on 1, 2, 3 and 4 ranks: {ranks: (results, stdout)}.

    One rank runs in this process (``mpiexec -n 1`` takes the same code: every collective is skipped
    when ``comm.size == 1``), which saves a process start.
    """
    assert serial_main([*TRAIN, "--data", str(data), "--out", str(data.parent / "r1")]) == 0
    out = {1: (load_results(data.parent / "r1"), "")}
    for ranks in (2, 3, 4):
        r = run_cli([*TRAIN, "--data", str(data), "--out", str(data.parent / f"r{ranks}")], ranks=ranks)
        assert r.returncode == 0, r.stderr
        out[ranks] = (load_results(data.parent / f"r{ranks}"), r.stdout)
    return out


def serial_main(args: list[str]) -> int:
    """The command line in this process, serially: a one-rank run without a process start (about 2 s each)."""
    from sparsecoding.cli import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARSECODING_NO_MPI", "1")
        return main(args)


def test_one_to_four_ranks_give_the_same_bytes(runs):
    """Every parameter and log-likelihood of every step, byte for byte, on 1, 2, 3 and 4 ranks.

    Before the fix a Fortran-ordered W from the M-step (one rank) and its C-ordered Bcast copy (several)
    took different BLAS kernels, and 1 and 2 ranks parted at 1e-15 from the first step without noise.
    """
    reference = runs[1][0]
    assert reference["N_use"].min() < N  # data truncation was active
    for ranks in (2, 3, 4):
        res, stdout = runs[ranks]
        assert f"ranks={ranks}" in stdout
        for k in ("W", "pi", "sigma", "loglik", "N_use", "T"):
            assert res[k].tobytes() == reference[k].tobytes(), (ranks, k)


def test_killed_run_resumes_to_the_same_result(data, runs):
    out = data.parent / "killed"
    r = run_cli([*TRAIN, "--data", str(data), "--out", str(out)], ranks=2, env={"SPARSECODING_KILL_AFTER_STEP": "6"})
    assert r.returncode != 0  # rank 0 died from SIGKILL after step 6; last checkpoint is after step 4
    partial = load_results(out)
    assert len(partial["step"]) == 6
    # resumed in this process, serially: the rank count changes no byte (test above), and a process start is saved
    assert serial_main(["train", "--out", str(out), "--resume", "--quiet", "--no-plot"]) == 0
    res = load_results(out)
    assert res["step"].tolist() == list(range(10))
    for k in ("W", "pi", "sigma", "loglik", "N_use"):
        np.testing.assert_array_equal(res[k], runs[1][0][k], err_msg=k)  # the uninterrupted run, bit for bit


def test_killed_restarts_resume_to_the_same_choice(data, capsys):
    """A run with --restarts killed in its first candidate, resumed, killed in its second and resumed again
    writes exactly what an uninterrupted run writes; finished steps are loaded, not run again."""
    restarts = [*TRAIN, "--data", str(data), "--restarts", "2", "--checkpoint-every", "3"]
    whole = data.parent / "restarts-whole"
    assert serial_main([*restarts, "--out", str(whole)]) == 0  # the rank count changes no byte (test above)
    out = data.parent / "restarts-killed"
    kill = {"SPARSECODING_KILL_AFTER_STEP": "6"}  # each candidate checkpoints after step 6, then dies
    assert run_cli([*restarts, "--out", str(out)], ranks=2, env=kill).returncode != 0
    assert load_results(out / "restarts" / "seed-0")["step"].tolist() == list(range(6))
    resume = ["train", "--out", str(out), "--resume", "--quiet", "--no-plot"]
    r = run_cli(resume, ranks=2, env=kill)  # seed 0 resumes after step 6 and finishes; seed 1 dies at step 6
    assert r.returncode != 0 and "restart 1/2 (seed 0)" in r.stdout
    assert not (out / "checkpoint.h5").exists()
    timed = {s: load_results(out / "restarts" / f"seed-{s}")["wall_time"] for s in (0, 1)}
    r = run_cli(resume, ranks=2)
    assert r.returncode == 0, r.stderr
    assert "restart 1/2" in r.stdout and "restart 2/2" in r.stdout
    # step timings are kept from the runs that measured them: seed 0 was loaded, seed 1 went on from step 6
    np.testing.assert_array_equal(load_results(out / "restarts" / "seed-0")["wall_time"], timed[0])
    np.testing.assert_array_equal(load_results(out / "restarts" / "seed-1")["wall_time"][:6], timed[1])
    a, b = load_results(whole), load_results(out)
    assert (
        a["config"]["restart_logliks"] == b["config"]["restart_logliks"] and a["config"]["seed"] == b["config"]["seed"]
    )
    for k in ("W", "pi", "sigma", "loglik", "N_use", "step"):
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    for seed in (0, 1):
        np.testing.assert_array_equal(
            load_results(out / "restarts" / f"seed-{seed}")["W"], load_results(whole / "restarts" / f"seed-{seed}")["W"]
        )
    # what follows does not depend on the rank count: run in process, serially (no process start-up)
    capsys.readouterr()
    assert (
        serial_main([*resume, "--seed", "0"]) == 0
    )  # a finished run resumes to itself; --seed names the first restart
    assert "restart 1/2" not in capsys.readouterr().out
    assert serial_main([*resume, "--seed", "1"]) == 2
    assert "--seed=1 (run has 0, the first of its restarts)" in capsys.readouterr().err
    assert (
        serial_main([*TRAIN, "--data", str(data), "--out", str(out), "--force"]) == 0
    )  # --force clears the candidates
    assert not (out / "restarts").exists()


def test_fit_api_with_mpi_communicator(tmp_path):
    # the estimator API under mpiexec: every rank passes the full data, each works on its own chunks
    script = tmp_path / "fit_mpi.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from mpi4py import MPI\n"
        "from sparsecoding import BSC, bars_data\n"
        "d = bars_data(N=600, seed=2)\n"
        "m = BSC(H=10, Hprime=6, gamma=3, steps=6, chunk_size=50, random_state=0).fit(d['Y'], comm=MPI.COMM_WORLD)\n"
        "if MPI.COMM_WORLD.Get_rank() == 0:\n"
        "    np.save(sys.argv[1], np.concatenate([m.components_.ravel(), [m.pi_, m.sigma_]]))\n"
    )
    import subprocess
    import sys

    from sc_helpers import REPO, mpiexec

    exe = mpiexec()
    if exe is None:
        pytest.skip("mpiexec not found")
    out = tmp_path / "w.npy"
    r = subprocess.run(
        [exe, "-n", "3", sys.executable, str(script), str(out)], cwd=REPO, capture_output=True, text=True, timeout=240
    )
    assert r.returncode == 0, r.stderr
    from sparsecoding import BSC, bars_data

    d = bars_data(N=600, seed=2)
    m = BSC(H=10, Hprime=6, gamma=3, steps=6, chunk_size=50, random_state=0).fit(d["Y"])
    assert np.load(out).tobytes() == np.concatenate([m.components_.ravel(), [m.pi_, m.sigma_]]).tobytes()
