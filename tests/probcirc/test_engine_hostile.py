"""Bad input to the engine: crafted model files, empty batches, NaN where it is not allowed (issue #16)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import probcirc
from probcirc import GaussianMixture, io
from probcirc.inputs import Bernoulli
from probmod.errors import FormatError, UsageError
from probmod.io import edit as edit_in_place

from .circuits import compiled, dag


def _set_attr(key, value):
    return lambda f: f.attrs.__setitem__(key, value)


def _replace(path, edit):
    def apply(f):
        data = edit(f[path][()])
        del f[path]
        f[path] = data

    return apply


#: crafted edits of a valid model file; each must fail with FormatError, fast and small
CASES = {
    "num_slots 4e8": _set_attr("num_slots", np.int64(400_000_000)),
    "num_vars 4e8": _set_attr("num_vars", np.int64(400_000_000)),
    "num_layers 1e9": _set_attr("num_layers", np.int64(1_000_000_000)),
    "num_layers float": _set_attr("num_layers", 3.5),
    "dtype not a float": _set_attr("dtype", "__class__"),
    "child index past the end": _replace("layers/00002/child_idx", lambda a: a + 10**9),
    "child index not topological": _replace("layers/00002/child_idx", lambda a: np.full_like(a, 34)),
    "negative parent index": _replace("layers/00001/parent_idx", lambda a: a - 5),
    "product num_nodes 4e8": _replace("layers/00001/num_nodes", lambda a: np.int64(400_000_000)),
    "leaf variable out of range": _replace("layers/00000/node_var", lambda a: a * 1000),
    "start moved": _replace("layers/00003/start", lambda a: a + 1000),
    "weight shape": _replace("layers/00002/weight", lambda a: a[..., :1]),
    "NaN weight": _replace("layers/00002/weight", lambda a: np.full_like(a, np.nan)),
    "leaf probability 7": _replace("layers/00000/params", lambda a: a + 7),
    "unknown family": _replace("layers/00000/family", lambda a: np.bytes_(b"Poisson")),
    "family settings": _replace("layers/00000/hyper", lambda a: np.bytes_(json.dumps([10**9, "x"]).encode())),
    "index dtype float": _replace("layers/00002/child_idx", lambda a: a.astype(np.float64)),
}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "dag.h5"
    io.save(compiled(dag(Bernoulli()), seed=2), path)
    return path


def _crafted(model_file, tmp_path, name):
    path = tmp_path / f"{name.replace(' ', '_')}.h5"
    path.write_bytes(model_file.read_bytes())
    with edit_in_place(path) as f:  # resealed, as an attacker would: the checksum matches the edit
        CASES[name](f)
    assert path.stat().st_size < 64 * 1024
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_model_file_is_a_format_error(model_file, tmp_path, name):
    with pytest.raises(FormatError):
        io.load(_crafted(model_file, tmp_path, name))


def test_crafted_files_fail_fast_and_small(model_file, tmp_path):
    """Every case in a fresh process: under 5 s each and under 200 MB above the interpreter's baseline."""
    paths = [str(_crafted(model_file, tmp_path, name)) for name in sorted(CASES)]
    script = textwrap.dedent("""
        import resource, sys, time
        import probcirc
        from probmod.errors import FormatError
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for path in sys.argv[1:]:
            t = time.perf_counter()
            try:
                probcirc.io.load(path)
            except FormatError:
                pass
            print(path, time.perf_counter() - t, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    for line in out.splitlines():
        _, seconds, grown_mb = line.rsplit(" ", 2)
        assert float(seconds) < 5 and float(grown_mb) < 200, line
    assert len(out.splitlines()) == len(CASES)


def test_valid_file_still_loads(model_file):
    back = io.load(model_file)
    x = torch.tensor([[0, 1, 1, 0]])
    assert back.fingerprint() == io.load(model_file).fingerprint() and back.log_prob(x).shape == (1,)


def test_empty_batches_give_empty_results():
    pc = compiled(dag(Bernoulli()))
    empty = torch.zeros(0, 4, dtype=torch.long)
    assert pc.log_prob(empty).shape == (0,)
    assert pc.log_prob(empty, torch.zeros(0, 4, dtype=torch.bool)).shape == (0,)
    assert pc.sample(0).shape == (0, 4) and pc.mpe(empty).shape == (0, 4)
    assert pc.conditional(empty, None, [1]).shape == (0, 1, 2)
    assert pc.condition(empty, torch.zeros(0, 4, dtype=torch.bool)).mean.shape == (0, 4)
    with pytest.raises(UsageError, match="non-empty"):
        probcirc.learn.em(pc, empty)


def test_mixture_refuses_nan_in_an_observed_entry():
    gmm = GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 2), torch.eye(2)[None])
    x = torch.tensor([[0.0, 1.0], [float("nan"), 2.0]])
    with pytest.raises(UsageError, match=r"x\[1, 0\] is NaN"):
        gmm.log_prob(x)
    with pytest.raises(UsageError, match=r"x\[1, 0\] is NaN"):
        gmm.log_prob(x, torch.tensor([[False, False], [False, True]]))
    with pytest.raises(UsageError, match=r"x\[1, 0\]"):
        gmm.condition(x, torch.tensor([[True, False], [False, True]]))
    ok = gmm.log_prob(x, torch.isnan(x))  # NaN where the mask says missing is the documented way
    assert torch.isfinite(ok).all()
