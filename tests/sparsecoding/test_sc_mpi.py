"""mpiexec runs: results independent of the rank count, and resume after a killed run."""

import numpy as np
import pytest
from sc_helpers import run_cli

from sparsecoding.io import load_results

pytestmark = pytest.mark.mpi

TRAIN = [
    "train",
    "--model",
    "bsc",
    "--H",
    "10",
    "--Hprime",
    "8",
    "--gamma",
    "5",
    "--steps",
    "10",
    "--anneal",
    "2:1@0.5",
    "--Ncut-factor",
    "0.5",
    "--chunk-size",
    "96",
    "--checkpoint-every",
    "4",
    "--quiet",
    "--no-plot",
]


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    path = tmp_path_factory.mktemp("mpi") / "bars.h5"
    r = run_cli(["data", "bars", "--out", str(path), "--N", "1000", "--seed", "3"])
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def reference(bars):
    out = bars.parent / "r1"
    r = run_cli([*TRAIN, "--data", str(bars), "--out", str(out)], ranks=1)
    assert r.returncode == 0, r.stderr
    return load_results(out)


@pytest.mark.parametrize("ranks", [2, 4])
def test_rank_count_does_not_change_results(bars, reference, ranks):
    out = bars.parent / f"r{ranks}"
    r = run_cli([*TRAIN, "--data", str(bars), "--out", str(out)], ranks=ranks)
    assert r.returncode == 0, r.stderr
    assert f"ranks={ranks}" in r.stdout
    res = load_results(out)
    assert res["N_use"].tolist() == reference["N_use"].tolist()
    assert res["N_use"].min() < 1000  # data truncation was active
    for k in ("W", "pi", "sigma", "loglik", "T"):
        np.testing.assert_array_equal(res[k], reference[k], err_msg=k)  # bit for bit


def test_killed_run_resumes_to_the_same_result(bars, reference):
    out = bars.parent / "killed"
    r = run_cli([*TRAIN, "--data", str(bars), "--out", str(out)], ranks=2, env={"SPARSECODING_KILL_AFTER_STEP": "6"})
    assert r.returncode != 0  # rank 0 died from SIGKILL after step 6; last checkpoint is after step 4
    partial = load_results(out)
    assert len(partial["step"]) == 6
    r = run_cli(["train", "--out", str(out), "--resume", "--quiet", "--no-plot"], ranks=2)
    assert r.returncode == 0, r.stderr
    res = load_results(out)
    assert res["step"].tolist() == list(range(10))
    for k in ("W", "pi", "sigma", "loglik", "N_use"):
        np.testing.assert_allclose(res[k], reference[k], rtol=0, atol=1e-8, err_msg=k)


def test_killed_restarts_resume_to_the_same_choice(bars):
    """A run with --restarts killed in its first candidate, resumed, killed in its second and resumed again
    writes exactly what an uninterrupted run writes; finished steps are loaded, not run again."""
    restarts = [*TRAIN, "--data", str(bars), "--restarts", "2", "--checkpoint-every", "3"]
    whole = bars.parent / "restarts-whole"
    r = run_cli([*restarts, "--out", str(whole)], ranks=2)
    assert r.returncode == 0, r.stderr
    out = bars.parent / "restarts-killed"
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
    r = run_cli([*resume, "--seed", "0"], ranks=2)  # a finished run resumes to itself; --seed names the first restart
    assert r.returncode == 0 and "restart 1/2" not in r.stdout, r.stderr
    r = run_cli([*resume, "--seed", "1"], ranks=2)
    assert r.returncode == 2 and "--seed=1 (run has 0, the first of its restarts)" in r.stderr
    r = run_cli([*TRAIN, "--data", str(bars), "--out", str(out), "--force"], ranks=2)  # --force clears the candidates
    assert r.returncode == 0 and not (out / "restarts").exists(), r.stderr


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


def test_one_to_four_ranks_give_the_same_bytes(tmp_path):
    """The command line on 1, 2, 3 and 4 ranks: every parameter and log-likelihood of every step, byte for byte.

    Image-like data whose rows do not split evenly (N = 700 in chunks of 64) and annealing noise that stops
    mid-run: before the fix a Fortran-ordered W from the M-step (one rank) and its C-ordered Bcast copy (several)
    took different BLAS kernels, and 1 and 2 ranks parted at 1e-15 from the first step without noise.
    """
    rng = np.random.default_rng(4)
    data = tmp_path / "patches.h5"
    W = rng.normal(size=(36, 12))
    S = rng.random((700, 12)) < 0.15
    import h5py

    with h5py.File(data, "w") as f:
        f["y"] = S @ W.T + 0.5 * rng.normal(size=(700, 36))
    args = [
        "train",
        "--model",
        "bsc",
        "--data",
        str(data),
        "--H",
        "12",
        "--Hprime",
        "6",
        "--gamma",
        "3",
        "--steps",
        "8",
        "--anneal",
        "2:1@0.5",
        "--W-noise",
        "0.3",
        "--chunk-size",
        "64",
        "--quiet",
        "--no-plot",
    ]
    runs = {}
    for ranks in (1, 2, 3, 4):
        r = run_cli([*args, "--out", str(tmp_path / f"r{ranks}")], ranks=ranks)
        assert r.returncode == 0, r.stderr
        runs[ranks] = load_results(tmp_path / f"r{ranks}")
    for ranks in (2, 3, 4):
        for k in ("W", "pi", "sigma", "loglik", "N_use"):
            assert runs[ranks][k].tobytes() == runs[1][k].tobytes(), (ranks, k)
