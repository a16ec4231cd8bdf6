"""Crafted model files: memory bombs, inconsistent weights and bad task settings fail fast with the right error."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import amortized
from amortized.cli import main
from amortized.modelfile import LIMITS, state_shapes
from amortized.tasks import LinearGaussian
from amortized.train import build_model
from probmod import io
from probmod.errors import FormatError, LimitError
from probmod.io import edit as edit_in_place


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "small.h5"
    io.save(build_model(LinearGaussian(dim=2, n_components=2), d_model=8, n_layers=1, n_heads=2), path)
    return path


def craft(src, dst, attrs=(), task_config=None, chunked_state=None):
    """A copy of ``src`` with attributes replaced; ``chunked_state``: cfg whose weights are declared, never stored."""
    dst.write_bytes(src.read_bytes())
    with edit_in_place(dst) as f:  # resealed, as an attacker would: the checksum matches the edit
        for key, value in dict(attrs).items():
            f.attrs[key] = value
        if task_config is not None:
            f.attrs["task_config"] = task_config if isinstance(task_config, str) else json.dumps(task_config)
        if chunked_state is not None:
            del f["state"]
            for name, shape in state_shapes(chunked_state).items():
                f.create_dataset(f"state/{name}", shape=shape, dtype="f4", chunks=True)  # all fill value, no bytes
    assert dst.stat().st_size < 64 * 1024
    return dst


ARCH = dict(dim=2, n_components=2, obs_dim=2, d_model=8, n_layers=1, n_heads=2, d_ff=32)
BOMBS = {
    "d_model": (dict(d_model=30000), LimitError),
    "heads": (dict(n_heads=30000), LimitError),
    "components": (dict(n_components=10**9), LimitError),
    # within the per-setting limits, but the arrays are those of d_model=8: refused by count or by shape
    "d_model_within_limit": (dict(d_model=8192, n_heads=2, d_ff=32768), (LimitError, FormatError)),
    "layers_within_limit": (dict(n_layers=200), FormatError),
    "not_an_int": (dict(d_model="64"), FormatError),
}


@pytest.mark.parametrize("case", sorted(BOMBS))
@pytest.mark.parametrize("loader", [amortized.load, io.load])
def test_declared_sizes_are_checked_before_building(case, loader, small_file, tmp_path):
    attrs, error = BOMBS[case]
    bad = craft(small_file, tmp_path / "bad.h5", attrs)
    with pytest.raises(error):
        loader(bad)


def test_matching_but_unstored_weights_are_refused_before_reading(small_file, tmp_path):
    # Shapes agree with the declared architecture, but the weights would need gigabytes: the count is refused.
    cfg = dict(ARCH, d_model=4096, n_heads=4, d_ff=16384, n_layers=2)
    bad = craft(small_file, tmp_path / "bomb.h5", cfg, chunked_state=cfg)
    with pytest.raises(LimitError, match="parameters"):
        amortized.load(bad)
    assert amortized.load(craft(small_file, tmp_path / "ok.h5", ARCH, chunked_state=ARCH)).d_model == 8


def test_every_bomb_fails_within_5_s_and_200_mb(small_file, tmp_path):
    files = [str(craft(small_file, tmp_path / f"{case}.h5", attrs)) for case, (attrs, _) in sorted(BOMBS.items())]
    cfg = dict(ARCH, d_model=4096, n_heads=4, d_ff=16384, n_layers=2)
    files.append(str(craft(small_file, tmp_path / "unstored.h5", cfg, chunked_state=cfg)))
    files.append(str(craft(small_file, tmp_path / "grid.h5", task_config=dict(n_components=2, dim=2, max_obs=10**9))))
    script = textwrap.dedent("""
        import resource, sys, time
        import amortized
        from probmod.errors import ProbmodError
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        worst = 0.0
        for path in sys.argv[1:]:
            t0 = time.perf_counter()
            try:
                amortized.load(path)
                raise SystemExit(f"{path} loaded")
            except ProbmodError:
                pass
            worst = max(worst, time.perf_counter() - t0)
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        print(worst, grown / 1024)
    """)
    r = subprocess.run([sys.executable, "-c", script, *files], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    seconds, megabytes = map(float, r.stdout.split())
    assert seconds < 5 and megabytes < 200, (seconds, megabytes)
    print(f"worst {seconds:.3f} s, peak RSS growth {megabytes:.1f} MB")


BAD_TASK_CONFIGS = {
    "not json": "{n_components: 2",
    "a list": [1, 2],
    "unknown setting": dict(n_components=2, dim=2, colour="red"),
    "bad value": dict(n_components=2, dim=2, noise_std=-1.0),
    "nan value": '{"n_components": 2, "dim": 2, "noise_std": NaN}',
    "wrong type": dict(n_components="two", dim=2),
    "other dimension": dict(n_components=2, dim=3),
    "other component count": dict(n_components=5, dim=2),
}


@pytest.mark.parametrize("case", sorted(BAD_TASK_CONFIGS))
def test_bad_task_config_is_exit_4_in_one_line(case, small_file, tmp_path, capsys):
    bad = craft(small_file, tmp_path / "bad.h5", task_config=BAD_TASK_CONFIGS[case])
    with pytest.raises(FormatError):
        amortized.load(bad)
    assert main(["evaluate", str(bad), "--problems", "2"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("amortized evaluate: error:") and "task_config" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("config", [dict(n_components=2, dim=2, max_obs=10**9), dict(n_components=2, dim=100)])
def test_task_settings_beyond_limits_are_exit_7(config, small_file, tmp_path, capsys):
    bad = craft(small_file, tmp_path / "big.h5", task_config=config)
    assert main(["plot", str(bad), "-o", str(tmp_path / "p.png")]) == 7
    assert "exceeds the limit" in capsys.readouterr().err


def test_unknown_task_name_is_exit_4(small_file, tmp_path, capsys):
    bad = craft(small_file, tmp_path / "bad.h5", dict(task="weather"))
    assert amortized.load(bad).task == "weather"  # the library keeps models of the user's own tasks
    assert main(["evaluate", str(bad)]) == 4
    assert "no known task" in capsys.readouterr().err


def test_weights_of_another_shape_are_refused(small_file, tmp_path):
    bad = craft(small_file, tmp_path / "bad.h5")
    with edit_in_place(bad) as f:  # resealed, as an attacker would: the checksum matches the edit
        del f["state/head.bias"]
        f["state/head.bias"] = np.zeros(7, dtype=np.float32)
    with pytest.raises(FormatError, match="head.bias"):
        amortized.load(bad)


def test_state_shapes_match_the_built_network():
    for cfg in (ARCH, dict(ARCH, dim=1, obs_dim=3, n_layers=3, d_model=12, n_heads=3, d_ff=20), dict(ARCH, dim=4)):
        model = amortized.DistributionTransformer(**cfg)
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == state_shapes(cfg)
    assert set(LIMITS) == set(ARCH)


def test_shipped_models_pass_the_checks():
    for path in sorted(amortized.MODELS.glob("*.h5")):
        model = amortized.load(path)
        assert model.training_info and torch.isfinite(next(model.parameters())).all()
