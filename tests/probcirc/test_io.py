"""Save/load: round trips, atomic writes, and clear errors on bad files."""

import h5py
import pytest
import torch

from probcirc import GaussianMixture, io
from probmod.io import edit as edit_in_place


@pytest.fixture
def gmm():
    a = torch.randn(2, 3, 3, dtype=torch.float64)
    return GaussianMixture(
        torch.tensor([0.25, 0.75], dtype=torch.float64),
        torch.randn(2, 3, dtype=torch.float64),
        a @ a.mT + torch.eye(3, dtype=torch.float64),
    )


def test_round_trip_is_exact(gmm, tmp_path):
    path = tmp_path / "gmm.h5"
    io.save(gmm, path)
    back = io.load(path, kind=GaussianMixture)
    x = torch.randn(10, 3, dtype=torch.float64)
    assert torch.equal(back.log_prob(x), gmm.log_prob(x))
    assert back.dtype == torch.float64


def test_existing_file_is_kept_unless_asked(gmm, tmp_path):
    path = tmp_path / "gmm.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        io.save(gmm, path)
    assert path.read_bytes() == b"precious"
    io.save(gmm, path, overwrite=True)
    assert isinstance(io.load(path), GaussianMixture)
    assert [p.name for p in tmp_path.iterdir()] == ["gmm.h5"]  # no temporary left behind


def test_truncated_file(gmm, tmp_path):
    path = tmp_path / "gmm.h5"
    io.save(gmm, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(io.FormatError, match="gmm.h5"):
        io.load(path)


def test_foreign_files(tmp_path):
    text = tmp_path / "a.h5"
    text.write_text("hello")
    with pytest.raises(io.FormatError, match="not a probmod file"):
        io.load(text)
    other = tmp_path / "b.h5"
    with h5py.File(other, "w") as f:
        f["x"] = [1, 2]
    with pytest.raises(io.FormatError, match="not a probmod file"):
        io.load(other)
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "missing.h5")


def test_wrong_version_and_kind(gmm, tmp_path):
    path = tmp_path / "gmm.h5"
    io.save(gmm, path)
    with edit_in_place(path) as f:  # resealed, as an attacker would: the checksum matches the edit
        f.attrs["version"] = 99
    with pytest.raises(io.FormatError, match="version 99"):
        io.load(path)
    with edit_in_place(path) as f:  # resealed, as an attacker would: the checksum matches the edit
        f.attrs["version"] = io.VERSION
        f.attrs["kind"] = "Nonsense"
    with pytest.raises(io.FormatError, match="unknown kind"):
        io.load(path)


def test_inconsistent_content(gmm, tmp_path):
    path = tmp_path / "gmm.h5"
    io.save(gmm, path)
    with edit_in_place(path) as f:  # resealed, as an attacker would: the checksum matches the edit
        del f["means"]
        f["means"] = [[1.0]]
    with pytest.raises(io.FormatError, match="inconsistent"):
        io.load(path)


def test_unregistered_object(tmp_path):
    with pytest.raises(TypeError, match="not registered"):
        io.save(object(), tmp_path / "x.h5")
