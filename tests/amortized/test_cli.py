"""The command line: training, refusing to overwrite, one-line errors with the shared exit codes, progress, modes."""

import functools
import os
import stat
import subprocess
import sys

import pytest
import torch

from amortized import evaluate as evaluate_module
from amortized.cli import main
from probcirc import GaussianMixture
from probmod import io
from probmod.errors import EXIT_CODES
from probmod.progress import Progress

TINY = ["--steps", "3", "--batch-size", "8", "--d-model", "16", "--layers", "1", "--heads", "2", "-q"]
EVAL_TINY = ["--problems", "4", "--kl-samples", "200", "--vi-steps", "3", "--is-samples", "50"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "lg.h5"
    assert main(["train", "--task", "linear_gaussian", "--dim", "2", "--components", "2", *TINY, "-o", str(path)]) == 0
    return path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_train_writes_a_loadable_model(tiny_model):
    model = io.load(tiny_model)
    assert model.task == "linear_gaussian" and model.dim == 2 and model.n_components == 2
    assert model.training_info["command"].startswith("amortized train")
    assert not (tiny_model.parent / (tiny_model.name + ".ckpt.h5")).exists()


def test_train_refuses_to_overwrite(tiny_model, capsys):
    before = tiny_model.read_bytes()
    assert main(["train", "--task", "linear_gaussian", *TINY, "-o", str(tiny_model)]) == 6
    err = _one_line(capsys)
    assert err.startswith("amortized train: error:") and "exists" in err and "--force" in err
    assert tiny_model.read_bytes() == before


@pytest.mark.parametrize("flag", ["--force", "--overwrite"])
def test_train_overwrites_when_asked(flag, tmp_path):
    path = tmp_path / "m.h5"
    path.write_text("old")
    assert main(["train", "--task", "lti_filter", "--components", "2", *TINY, "-o", str(path), flag]) == 0
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
    assert match in _one_line(capsys)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    "args", [["--steps", "0"], ["--steps", "ten"], ["--task", "nope"], ["--components", "-2"], ["--threads", "0"]]
)
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
    assert main(["evaluate", str(tiny_model), *EVAL_TINY, "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    for method in ("prior", "exact", "transformer", "gmm-vi", "snis"):
        assert method in out
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reports_progress_on_a_pipe(tiny_model, monkeypatch, capsys):
    # capsys's stderr is not a terminal, as with a pipe or a log; a zero interval logs every update.
    monkeypatch.setattr(evaluate_module, "Progress", functools.partial(Progress, every=0.0))
    assert main(["evaluate", str(tiny_model), *EVAL_TINY]) == 0
    err = capsys.readouterr().err.splitlines()
    counts = [line for line in err if line.startswith("evaluate: ") and " step" in line and "/s," in line]
    assert len(counts) >= 3 + 3  # the reference, three scorings and the GMM-VI steps, one line each
    assert any("gmm-vi baseline" in line for line in err)
    assert main(["evaluate", str(tiny_model), *EVAL_TINY, "-q"]) == 0
    assert capsys.readouterr().err == ""


def test_evaluate_logs_its_stages_from_the_console_script(tiny_model):
    r = subprocess.run(
        [sys.executable, "-m", "amortized", "evaluate", str(tiny_model), *EVAL_TINY, "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "evaluate: 4 linear_gaussian problems" in r.stderr and "evaluate: gmm-vi baseline" in r.stderr


@pytest.mark.parametrize("task", ["lti_filter", "gp_hyperprior", "two_level_quantum"])
def test_plot_one_dimensional_tasks(task, tmp_path):
    model = tmp_path / "m.h5"
    assert main(["train", "--task", task, "--components", "2", *TINY, "-o", str(model)]) == 0
    png = tmp_path / "p.png"
    assert main(["plot", str(model), "-o", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_written_files_follow_the_umask(tiny_model, tmp_path, umask_022):
    from amortized.tasks import LinearGaussian
    from amortized.train import build_model, train

    model = tmp_path / "m.h5"
    assert main(["train", "--task", "linear_gaussian", "--components", "2", *TINY, "-o", str(model)]) == 0
    png = tmp_path / "p.png"
    assert main(["plot", str(tiny_model), "-o", str(png)]) == 0
    ckpt = tmp_path / "c.h5"
    task = LinearGaussian(dim=1, n_components=2)
    train(build_model(task, 16, 1, 2), task, steps=2, batch_size=8, checkpoint=ckpt, checkpoint_every=1)
    for path in (model, png, ckpt):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5", "m.h5", "p.png"]  # no temporary left


def test_evaluate_errors(tiny_model, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.h5")]) == 3
    assert "no such file" in _one_line(capsys)
    assert main(["evaluate", str(tiny_model), "--task", "lti_filter"]) == 5
    assert "trained on task 'linear_gaussian'" in _one_line(capsys)
    gmm = tmp_path / "gmm.h5"
    io.save(GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1)), gmm)
    assert main(["evaluate", str(gmm)]) == 5
    assert "expected a DistributionTransformer" in _one_line(capsys)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    assert main(["evaluate", str(junk)]) == 4
    _one_line(capsys)
    fifo = tmp_path / "fifo.h5"
    os.mkfifo(fifo)
    assert main(["evaluate", str(fifo)]) == 3  # refused without opening it, so no hang
    assert "not a regular file" in _one_line(capsys)


@pytest.mark.parametrize("command", ["train", "plot", "evaluate"])
def test_unwritable_output_fails_before_work(command, tiny_model, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    target = str(blocker / "out.h5")  # its folder is a regular file: nothing can be written there
    argv = {
        "train": ["train", "--task", "linear_gaussian", *TINY, "-o", target],
        "plot": ["plot", str(tiny_model), "-o", target],
        "evaluate": ["evaluate", str(tiny_model), *EVAL_TINY, "--plot", target],
    }[command]
    assert main(argv) == 9
    err = _one_line(capsys)
    assert err.startswith(f"amortized {command}: error:") and "not a folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_exit_9(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["train", "--task", "linear_gaussian", *TINY, "-o", str(ro / "m.h5")]) == 9
        assert "not writable" in _one_line(capsys)
    finally:
        ro.chmod(0o700)


def test_module_entry_point_exit_status(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "amortized", "evaluate", str(tmp_path / "none.h5")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 3 and EXIT_CODES[3] == "an input cannot be read"
    assert r.stderr.startswith("amortized evaluate: error:") and len(r.stderr.strip().splitlines()) == 1


def test_help_shows_every_option_with_help_and_no_missing_command(capsys):
    for argv in (["--help"], ["train", "--help"], ["evaluate", "--help"], ["plot", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "exit codes:" in text and "--overwrite" not in text and "--no-progress" not in text
    from amortized.cli import _parser

    parser = _parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(subs) == ["evaluate", "plot", "train"]
    for name, sub in subs.items():
        for action in sub._actions:
            assert action.help, f"amortized {name} {action.option_strings or action.dest} has no help"
        for flag in ("--seed", "--threads", "--force"):
            assert flag in sub._option_string_actions, f"amortized {name} lacks {flag}"
