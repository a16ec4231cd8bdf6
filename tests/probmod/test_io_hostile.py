"""Untrusted model files: links, external storage, FIFOs and size bombs are refused before any large read."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from probcirc import GaussianMixture
from probmod import io
from probmod.errors import FormatError, InputError, LimitError, ModelMismatchError, OutputExistsError
from probmod.io import edit as edit_in_place


@pytest.fixture
def gmm_file(tmp_path):
    path = tmp_path / "gmm.h5"
    io.save(GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(2, 1), torch.eye(1).expand(2, 1, 1)), path)
    return path


def _rewrite(src, dst, edit):
    """Copy a saved file's attributes and arrays into ``dst``, letting ``edit(f, arrays)`` write the arrays."""
    with h5py.File(src, "r") as f:
        attrs = dict(f.attrs)
        arrays = {k: f[k][()] for k in f}
    with h5py.File(dst, "w") as g:
        g.attrs.update(attrs)
        edit(g, arrays)
    return dst


def test_external_storage_is_refused(gmm_file, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 64)

    def edit(g, arrays):
        for k, v in arrays.items():
            if k == "means":
                g.create_dataset(k, shape=v.shape, dtype=v.dtype, external=[(str(secret), 0, v.nbytes)])
            else:
                g[k] = v

    bad = _rewrite(gmm_file, tmp_path / "ext.h5", edit)
    with pytest.raises(FormatError, match="outside the file"):
        io.load(bad)


def test_external_and_soft_links_are_refused(gmm_file, tmp_path):
    for kind, link in (
        ("ExternalLink", h5py.ExternalLink(str(gmm_file), "means")),
        ("SoftLink", h5py.SoftLink("/weights")),
    ):

        def edit(g, arrays, link=link):
            for k, v in arrays.items():
                g[k] = v if k != "means" else link

        bad = _rewrite(gmm_file, tmp_path / f"{kind}.h5", edit)
        with pytest.raises(FormatError, match=kind):
            io.load(bad)


def test_virtual_dataset_is_refused(gmm_file, tmp_path):
    def edit(g, arrays):
        for k, v in arrays.items():
            if k == "means":
                layout = h5py.VirtualLayout(shape=v.shape, dtype=v.dtype)
                layout[...] = h5py.VirtualSource(str(gmm_file), "means", shape=v.shape)
                g.create_virtual_dataset(k, layout)
            else:
                g[k] = v

    bad = _rewrite(gmm_file, tmp_path / "vds.h5", edit)
    with pytest.raises(FormatError, match="outside the file"):
        io.load(bad)


def test_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "model.h5"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(InputError, match="not a regular file"):
        io.load(fifo)
    assert time.monotonic() - start < 2


def test_unallocated_huge_dataset_fails_small_and_fast(gmm_file, tmp_path):
    def edit(g, arrays):
        for k, v in arrays.items():
            g[k] = v
        del g["means"]
        g.create_dataset("means", shape=(20000, 20000), dtype="f8")  # declared 3.2 GB, never written

    bad = _rewrite(gmm_file, tmp_path / "bomb.h5", edit)
    assert bad.stat().st_size < 64 * 1024
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(FormatError, match="declares"):
        io.load(bad)
    assert time.monotonic() - start < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB on Linux


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_unwritten_chunks_cannot_pose_as_data(gmm_file, tmp_path, compression):
    def edit(g, arrays):
        for k, v in arrays.items():
            if k != "means":
                g[k] = v
        g.create_dataset("means", shape=(20000, 20000), dtype="f8", chunks=(100, 100), compression=compression)

    bad = _rewrite(gmm_file, tmp_path / "chunked.h5", edit)
    assert bad.stat().st_size < 64 * 1024
    with pytest.raises(FormatError, match="declares"):
        io.load(bad)


def test_declared_total_over_limit_is_a_limit_error(gmm_file):
    with pytest.raises(LimitError, match="max_bytes"):
        io.load(gmm_file, max_bytes=8)


def test_wrong_kind_is_a_mismatch(gmm_file):
    class Other:
        pass

    io.register(Other)
    with pytest.raises(ModelMismatchError, match="expected a Other"):
        io.load(gmm_file, kind=Other)


def test_bad_version_attribute_type(gmm_file):
    with edit_in_place(gmm_file) as f:  # resealed, as an attacker would: the checksum matches the edit
        f.attrs["version"] = "one"
    with pytest.raises(FormatError, match="version"):
        io.load(gmm_file)


def test_atomic_writes_respect_umask_and_never_overwrite(tmp_path):
    old = os.umask(0o022)
    try:
        with io.atomic_path(tmp_path / "a.bin") as tmp:
            Path(tmp).write_bytes(b"x")
        assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        with io.atomic_path(tmp_path / "b.bin") as tmp:
            Path(tmp).write_bytes(b"x")
        assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    with pytest.raises(OutputExistsError), io.atomic_path(tmp_path / "a.bin"):
        pass
    assert (tmp_path / "a.bin").read_bytes() == b"x"


def test_interrupted_write_leaves_no_temporary(tmp_path):
    with pytest.raises(KeyboardInterrupt), io.atomic_path(tmp_path / "c.bin") as tmp:
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_check_output_catches_unwritable_places_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(io.OutputError if hasattr(io, "OutputError") else OSError, match="not a folder"):
        io.check_output(blocker / "out.h5")
    with pytest.raises(OSError, match="is a folder"):
        io.check_output(tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OSError, match="not writable"):
            io.check_output(locked / "x.h5")


def test_round_trip_still_exact(gmm_file):
    g = io.load(gmm_file)
    assert np.array_equal(g.means.numpy(), np.zeros((2, 1)))


def test_a_group_linked_back_to_its_parent_cannot_loop(gmm_file, tmp_path):
    def edit(g, arrays):
        for k, v in arrays.items():
            g[k] = v
        g.create_group("a")
        g["a/loop"] = g  # a hard link back to the root: a naive walk never ends

    bad = _rewrite(gmm_file, tmp_path / "loop.h5", edit)
    start = time.monotonic()
    with pytest.raises(FormatError, match="second name"):
        io.load(bad)
    assert time.monotonic() - start < 2


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file") as info:
        io.load(tmp_path / "nope.h5")
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_current_umask_reads_the_mask_without_changing_it(mask):
    from probmod.io import current_umask, new_file_mode

    old = os.umask(mask)
    try:
        assert current_umask() == mask
        assert new_file_mode() == 0o666 & ~mask
        assert os.umask(mask) == mask  # unchanged by reading it
    finally:
        os.umask(old)


def test_a_damaged_byte_anywhere_is_refused_before_hdf5_parses_it(tmp_path):
    """Flips across the whole file: a clean FormatError or the very same model, never a hang or a crash
    (HDF5's parser loops forever on some damaged superblocks; the seal keeps those files away from it)."""
    import torch

    from probcirc import GaussianMixture
    from probmod.errors import FormatError
    from probmod.io import USERBLOCK, load, save

    gmm = GaussianMixture(torch.tensor([0.3, 0.7]), torch.randn(2, 3), torch.eye(3).expand(2, 3, 3).clone())
    path = tmp_path / "gmm.h5"
    save(gmm, path)
    data = path.read_bytes()
    damaged = tmp_path / "damaged.h5"
    refused = 0
    for pos in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        damaged.write_bytes(bytes(flipped))
        try:
            again = load(damaged)
        except FormatError:
            refused += 1
            continue
        assert pos < USERBLOCK, pos  # only padding after the seal can change without notice
        assert torch.equal(again.means, gmm.means) and torch.equal(again.covariances, gmm.covariances)
    assert refused >= (len(data) - USERBLOCK) // 7


def test_unsealed_files_from_older_versions_still_load(tmp_path):
    import h5py
    import torch

    from probcirc import GaussianMixture
    from probmod.io import FORMAT, VERSION, load

    gmm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(2, 1), torch.eye(1).expand(2, 1, 1).clone())
    attrs, arrays = gmm._state()
    with h5py.File(tmp_path / "old.h5", "w") as f:  # as save() wrote them before the seal
        f.attrs.update({"format": FORMAT, "version": VERSION, "kind": "GaussianMixture", **attrs})
        for name, value in arrays.items():
            f.create_dataset(name, data=value)
    assert torch.equal(load(tmp_path / "old.h5").means, gmm.means)
    with edit_in_place(tmp_path / "old.h5") as f:  # an edit keeps an older file as it was: unsealed
        f.attrs["note"] = "checked"
    assert not (tmp_path / "old.h5").read_bytes().startswith(io.SEAL)
    assert load(tmp_path / "old.h5").means.shape == gmm.means.shape


def test_an_edit_never_reseals_damaged_bytes_as_good_ones(gmm_file):
    data = bytearray(gmm_file.read_bytes())
    data[-100] ^= 0x10
    gmm_file.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="damaged"), edit_in_place(gmm_file) as f:
        f.attrs["note"] = "never written"
    assert gmm_file.read_bytes() == bytes(data)  # untouched, still refused on load
    with pytest.raises(FormatError, match="damaged"):
        io.load(gmm_file)
