"""The command line: training, refusing to overwrite, one-line errors, evaluation and plots."""

import subprocess
import sys

import pytest
import torch

from amortized.cli import main
from probcirc import GaussianMixture, io

TINY = ["--steps", "3", "--batch-size", "8", "--d-model", "16", "--layers", "1", "--heads", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "lg.h5"
    assert main(["train", "--task", "linear_gaussian", "--dim", "2", "--components", "2", *TINY, "-o", str(path)]) == 0
    return path


def test_train_writes_a_loadable_model(tiny_model):
    model = io.load(tiny_model)
    assert model.task == "linear_gaussian" and model.dim == 2 and model.n_components == 2
    assert "python -m amortized train" in model.training_info["command"]
    assert not (tiny_model.parent / (tiny_model.name + ".ckpt.h5")).exists()


def test_train_refuses_to_overwrite(tiny_model, capsys):
    before = tiny_model.read_bytes()
    assert main(["train", "--task", "linear_gaussian", *TINY, "-o", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert tiny_model.read_bytes() == before


def test_train_overwrites_when_asked(tmp_path):
    path = tmp_path / "m.h5"
    path.write_text("old")
    assert main(["train", "--task", "lti_filter", "--components", "2", *TINY, "-o", str(path), "--overwrite"]) == 0
    assert io.load(path).task == "lti_filter"


@pytest.mark.parametrize(
    "args, match",
    [
        (["--task", "lti_filter", "--dim", "2"], "1-D latent"),
        (["--task", "linear_gaussian", "--heads", "3"], "must divide"),
        (["--task", "linear_gaussian", "--max-obs", "-1"], "max-obs"),
    ],
)
def test_train_bad_input_one_line_error(args, match, tmp_path, capsys):
    argv = ["train", *args, *[a for a in TINY if a not in ("--heads", "2")], "-o", str(tmp_path / "x.h5")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("args", [["--steps", "0"], ["--steps", "ten"], ["--task", "nope"], ["--components", "-2"]])
def test_train_rejects_bad_numbers(args, tmp_path):
    base = {"--task": "linear_gaussian", "--steps": "3", "--components": "2"}
    for key, value in zip(args[::2], args[1::2]):
        base[key] = value
    argv = ["train", *sum(([k, v] for k, v in base.items()), []), "-o", str(tmp_path / "x.h5")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_evaluate_prints_the_table_and_plots(tiny_model, tmp_path, capsys):
    png = tmp_path / "out" / "lg.png"
    argv = ["evaluate", str(tiny_model), "--problems", "4", "--kl-samples", "200", "--vi-steps", "3",
            "--is-samples", "50", "--plot", str(png)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for method in ("prior", "exact", "transformer", "gmm-vi", "snis"):
        assert method in out
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("task", ["lti_filter", "gp_hyperprior", "two_level_quantum"])
def test_plot_one_dimensional_tasks(task, tmp_path):
    model = tmp_path / "m.h5"
    assert main(["train", "--task", task, "--components", "2", *TINY, "-o", str(model)]) == 0
    png = tmp_path / "p.png"
    assert main(["plot", str(model), "-o", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_evaluate_errors(tiny_model, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.h5")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["evaluate", str(tiny_model), "--task", "lti_filter"]) == 2
    assert "trained on task 'linear_gaussian'" in capsys.readouterr().err
    gmm = tmp_path / "gmm.h5"
    io.save(GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1)), gmm)
    assert main(["evaluate", str(gmm)]) == 2
    assert "expected a DistributionTransformer" in capsys.readouterr().err
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert main(["evaluate", str(junk)]) == 2


def test_module_entry_point_exit_status(tmp_path):
    r = subprocess.run([sys.executable, "-m", "amortized", "evaluate", str(tmp_path / "none.h5")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
