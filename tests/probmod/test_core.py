"""The shared core: exit-code mapping, CLI conventions, progress on pipes and the estimator contract."""

from __future__ import annotations

import errno
import io as stdio
import signal

import pytest

from probmod import cli, errors
from probmod.estimator import Estimator, check_random_state
from probmod.progress import Progress


def test_every_error_class_has_a_documented_distinct_code():
    classes = [
        errors.UsageError,
        errors.InputError,
        errors.FormatError,
        errors.ModelMismatchError,
        errors.OutputExistsError,
        errors.LimitError,
        errors.NumericalError,
        errors.OutputError,
    ]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert all(code in errors.EXIT_CODES for code in codes)
    assert errors.exit_code(MemoryError()) == errors.LimitError.exit_code
    assert errors.exit_code(OSError(errno.ENOSPC, "No space left on device")) == errors.OutputError.exit_code
    assert errors.exit_code(FileNotFoundError(2, "x")) == errors.InputError.exit_code
    assert errors.exit_code(RuntimeError()) == 1
    table = errors.exit_code_table()
    assert all(f"{code:>3}  {text}" in table for code, text in errors.EXIT_CODES.items())


def _parser():
    p = cli.make_parser("tool", "A tool.")
    cli.add_output(p)
    cli.add_force(p)
    cli.add_quiet(p)
    cli.add_threads(p)
    cli.add_seed(p)
    return p


def test_help_hides_old_spellings_and_shows_the_table(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("-o OUTPUT, --output OUTPUT", "--force", "-q, --quiet", "--threads", "--seed", "(default: 0)"):
        assert flag in text
    for hidden in ("--out ", "--overwrite", "--no-progress"):
        assert hidden not in text
    assert errors.exit_code_table() in text
    assert _parser().parse_args(["--out", "a", "--no-progress"]).quiet


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.OutputExistsError("x exists"), 6),
        (MemoryError(), 7),
        (OSError(errno.ENOSPC, "No space left on device", "f"), 9),
        (KeyboardInterrupt(), 130),
        (ZeroDivisionError("boom"), 1),
    ],
)
def test_run_maps_errors_to_one_line_and_code(exc, code, capsys):
    def command(args):
        raise exc

    assert cli.run("tool", command, _parser(), ["-o", "x"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool: ")
    assert "Traceback" not in err


def test_sigterm_becomes_a_clean_exit():
    def command(args):
        signal.raise_signal(signal.SIGTERM)

    with pytest.raises(SystemExit) as info:
        cli.run("tool", command, _parser(), ["-o", "x"])
    assert info.value.code == 128 + signal.SIGTERM


def test_progress_logs_lines_on_a_pipe(monkeypatch):
    clock = iter(range(0, 100, 3))
    monkeypatch.setattr("probmod.progress.time.monotonic", lambda: float(next(clock)))
    out = stdio.StringIO()
    with Progress(total=10, desc="encode", unit="img", stream=out, every=5) as bar:
        for _ in range(10):
            bar.update()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and lines[-1].startswith("encode: 10/10 img (100%)")
    assert len(lines) == len(set(line.split(",")[0] for line in lines))  # no count logged twice
    silent = stdio.StringIO()
    with Progress(total=2, stream=silent, enabled=False) as bar:
        bar.update(2)
        bar.write("hidden")
    assert silent.getvalue() == ""


class _Toy(Estimator):
    def __init__(self, alpha: float = 1.0, random_state=None):
        self.alpha = alpha
        self.random_state = random_state


def test_estimator_contract_works_with_sklearn_clone():
    sklearn_base = pytest.importorskip("sklearn.base")
    est = _Toy(alpha=3.0, random_state=4)
    copy = sklearn_base.clone(est)
    assert copy is not est and copy.get_params() == est.get_params() == {"alpha": 3.0, "random_state": 4}
    assert repr(est) == "_Toy(alpha=3.0, random_state=4)"
    with pytest.raises(errors.UsageError, match="no parameter 'beta'"):
        est.set_params(beta=1)


def test_random_state_none_is_fresh_and_int_is_seeded():
    draws = {int(check_random_state(None).integers(2**62)) for _ in range(3)}
    assert len(draws) == 3
    assert check_random_state(5).integers(2**62) == check_random_state(5).integers(2**62)
    with pytest.raises(errors.UsageError):
        check_random_state("five")
