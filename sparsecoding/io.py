"""HDF5 input and output: data sets, per-step results and atomic checkpoints (h5py, no pickle).

Data file: a 2-D dataset (default key ``"y"``) of shape (N, D); optional
attribute ``patch_shape`` (for plots); the bars generator also stores the
true parameters under ``truth/``.

Run folder (written by rank 0 only):

* ``results.h5``: one row per EM step; datasets ``step, T, N_use, loglik,
  wall_time`` of shape (steps,) and one per parameter (``W`` (steps, D, H),
  ``pi``, ``sigma``; ``mu``, ``Psi`` for GSC; ``prior`` for DSC); the run's
  configuration in the root attributes. Rows are appended as the run goes
  (the file is unsealed meanwhile); when the run ends it is sealed like
  :func:`probmod.io.save`'s files (SHA-256 in the user block), and ``plot``
  re-seals it after adding ``quality/``.
* ``checkpoint.h5``: the parameters after the last checkpointed step, the
  history up to it and the configuration; written atomically (temporary file
  in the same folder, then renamed), so a crash leaves the previous one intact;
  sealed, with Fletcher-32 checksums on its arrays.

Readers check a seal before HDF5 parses the file (:func:`probmod.io.open_hdf5`);
unsealed files of older versions are read as before.

Every file read here is untrusted: it is opened through
:func:`probmod.io.open_hdf5` and :func:`probmod.io.safe_datasets` (no links,
external storage, virtual datasets, FIFOs or declared-size bombs), and a
checkpoint's configuration and parameters are validated before use, so a
damaged or crafted file ends in one :class:`~probmod.errors.FormatError`
(exit status 4) instead of NaN results. Write failures (a full disk, a path
that is a folder) become :class:`~probmod.errors.OutputError` (exit status 9).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from probmod.errors import FormatError, InputError, OutputError, ProbmodError
from probmod.io import (
    atomic_path,
    check_regular_file,
    create_checked,
    create_sealable,
    edit,
    open_hdf5,
    safe_datasets,
    seal,
    write_sealed,
)

__all__ = [
    "CHECKPOINT",
    "DATA_MAX_BYTES",
    "RESULTS",
    "DataError",
    "ResultsWriter",
    "check_config",
    "inspect_data",
    "load_checkpoint",
    "load_quality",
    "load_results",
    "read_rows",
    "save_checkpoint",
    "write_data",
    "write_quality",
]

RESULTS = "results.h5"
CHECKPOINT = "checkpoint.h5"
ROW_SCALARS = ("step", "T", "N_use", "loglik", "wall_time")
#: declared-size ceiling for data files; what one rank really reads is checked against ``--max-memory``
DATA_MAX_BYTES = 1 << 50
#: run-configuration keys and the check each value must pass (the rest are free-form)
_CONFIG_TYPES: dict[str, tuple[str, Any]] = {
    "model": ("one of bsc, tsc, dsc, mca, mmca, gsc", lambda v: v in ("bsc", "tsc", "dsc", "mca", "mmca", "gsc")),
    "data": ("a path", lambda v: isinstance(v, str) and v != ""),
    "key": ("a dataset name", lambda v: isinstance(v, str) and v != ""),
    "H": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "Hprime": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "gamma": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "steps": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "chunk_size": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "checkpoint_every": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "restarts": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "seed": ("an integer", lambda v: _is_int(v)),
    "N": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "D": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "anneal": ("a schedule like '2:1@0.6'", lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)),
    "Ncut_factor": ("a number in [0, 1]", lambda v: _is_num(v) and 0 <= v <= 1),
    "W_noise": ("a number >= 0", lambda v: _is_num(v) and v >= 0),
}
#: the typed keys a run configuration may leave out; every other key of _CONFIG_TYPES it must hold
_OPTIONAL = ("checkpoint_every", "restarts", "W_noise")
_REQUIRED = tuple(k for k in _CONFIG_TYPES if k not in _OPTIONAL)


class DataError(FormatError):
    """A data, results or checkpoint file is of the wrong kind, shape or content (exit status 4)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


@contextlib.contextmanager
def _writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write (full disk, a folder in the way) into one :class:`OutputError`."""
    try:
        yield
    except ProbmodError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _dataset(path: Path, f: h5py.File, key: str, max_bytes: int) -> h5py.Dataset:
    found = safe_datasets(f, max_bytes)
    if key not in found:
        raise DataError(f"data file {path} has no dataset {key!r} (datasets: {sorted(found) or 'none'}); pass --key")
    return found[key]


def inspect_data(
    path: str | os.PathLike, key: str = "y", max_bytes: int = DATA_MAX_BYTES
) -> tuple[int, int, dict[str, Any]]:
    """``(N, D, attrs)`` of the dataset ``key`` in ``path``, with one-line errors for bad input.

    Raises:
        InputError: the file does not exist or is not a regular file (exit status 3).
        DataError: not HDF5, no such dataset, not 2-D, empty or not numeric (exit status 4).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"data file {path} does not exist")
    with open_hdf5(path, "data file (HDF5)") as f:
        ds = _dataset(path, f, key, max_bytes)
        if ds.ndim != 2:
            raise DataError(
                f"dataset {key!r} in {path} has shape {ds.shape}; expected 2-D (N, D): reshape it, "
                "one data point per row"
            )
        if ds.shape[0] < 1 or ds.shape[1] < 1:
            raise DataError(f"dataset {key!r} in {path} is empty (shape {ds.shape})")
        if not np.issubdtype(ds.dtype, np.number) or np.issubdtype(ds.dtype, np.complexfloating):
            raise DataError(f"dataset {key!r} in {path} has non-numeric dtype {ds.dtype}")
        attrs = {k: _plain(v) for k, v in ds.attrs.items()}
        attrs.update({k: _plain(v) for k, v in f.attrs.items() if k not in attrs})
        return int(ds.shape[0]), int(ds.shape[1]), attrs


def read_rows(path: str | os.PathLike, key: str, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of the dataset as float64 (each rank reads only its own slice)."""
    path = Path(path)
    with open_hdf5(path, "data file (HDF5)") as f:
        ds = _dataset(path, f, key, DATA_MAX_BYTES)
        try:
            return np.asarray(ds[start:stop], dtype=np.float64)
        except (OSError, RuntimeError) as err:
            raise DataError(f"data file {path}: rows {start}..{stop} are unreadable ({err})") from None


def write_data(
    path: str | os.PathLike,
    Y: np.ndarray,
    key: str = "y",
    overwrite: bool = False,
    attrs: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a data set (and e.g. the true parameters under ``extra``) atomically.

    Data files are not sealed: every rank reads its rows of them at every start, and a seal would
    make each rank hash the whole file first (gigabytes for large patch sets); users also bring
    data written by other tools, which have no seal either.
    """
    with _writing(path), atomic_path(path, overwrite) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset(key, data=np.asarray(Y, dtype=np.float64))
        for k, v in (attrs or {}).items():
            ds.attrs[k] = v
        for k, v in (extra or {}).items():
            f.create_dataset(k, data=np.asarray(v))


def check_config(config: Any, where: str) -> dict[str, Any]:
    """``config`` if it is a well-formed run configuration, else a :class:`DataError` naming the bad entry.

    Example:
        >>> check_config({"H": "ten"}, "run/config.json")
        Traceback (most recent call last):
        ...
        sparsecoding.io.DataError: run/config.json: not a run configuration: H is 'ten', expected a positive integer
    """
    if not isinstance(config, dict):
        raise DataError(f"{where}: not a run configuration (a {type(config).__name__}, expected a JSON object)")
    for key, (what, ok) in _CONFIG_TYPES.items():
        if key in config and config[key] is not None and not ok(config[key]):
            raise DataError(f"{where}: not a run configuration: {key} is {config[key]!r}, expected {what}")
    missing = [k for k in _REQUIRED if config.get(k) is None]
    if missing:
        raise DataError(f"{where}: not a run configuration: {', '.join(missing)} missing")
    return config


def _check_params(config: dict[str, Any], params: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """The model's own parameter check (finite, ``0 < pi <= 1``, ``sigma > 0``, shapes, model constraints)."""
    from .cli import make_model

    return make_model(config).check_params(params, int(config["D"]), error=DataError, source=where)


def _config_attrs(f: h5py.File, config: dict[str, Any]) -> None:
    f.attrs["format"] = "probmod.sparsecoding"
    f.attrs["config"] = json.dumps(config, sort_keys=True)
    for k, v in config.items():
        if v is not None and not isinstance(v, (dict, list, tuple)):
            f.attrs[k] = v


def _read_config(f: h5py.File, where: str) -> dict[str, Any]:
    try:
        config = json.loads(_plain(f.attrs["config"]))
    except (KeyError, TypeError, ValueError, RecursionError):
        raise DataError(f"{where}: no readable run configuration (attribute 'config')") from None
    return check_config(config, where)


class ResultsWriter:
    """Appends one row per EM step to ``results.h5`` (rank 0 only).

    ``results.h5`` grows during a run, so it is not sealed (see :func:`probmod.io.seal`); the
    checkpoint and the final rewrite are. Rows are written at most every ``FLUSH_SECONDS``,
    and at each :meth:`flush` (the run calls it with every checkpoint and at the end): opening the
    file per step cost rank 0 about 10 ms per step, which every other rank waits for in the
    step's reduction. A crash loses no row a resume needs: resuming rewrites the rows from the
    checkpoint's history.
    """

    #: seconds between writes of buffered rows, so that a reader watching the run sees them soon
    FLUSH_SECONDS = 2.0

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], history: dict[str, np.ndarray] | None = None):
        self.path = Path(path)
        self._pending: list[dict[str, Any]] = []
        self._flushed = time.monotonic()
        with _writing(self.path), atomic_path(self.path, overwrite=True) as tmp, create_sealable(tmp) as f:
            _config_attrs(f, config)
            for k, v in (history or {}).items():
                v = np.asarray(v)
                f.create_dataset(k, data=v, maxshape=(None,) + v.shape[1:], chunks=True)

    def append(self, row: dict[str, Any]) -> None:
        """Add ``row``; written now if the last write is ``FLUSH_SECONDS`` old."""
        self._pending.append(row)
        if time.monotonic() - self._flushed >= self.FLUSH_SECONDS:
            self.flush()

    def seal(self) -> None:
        """Write the buffered rows and seal the file: the run's rows are complete (only ``plot`` adds to it)."""
        self.flush()
        with _writing(self.path):
            seal(self.path)

    def flush(self) -> None:
        """Write the buffered rows."""
        rows, self._pending = self._pending, []
        self._flushed = time.monotonic()
        if not rows:
            return
        # No HDF5 file lock: someone reading results.h5 while the run goes (as the docs invite) must not stop it.
        with _writing(self.path), h5py.File(self.path, "a", locking=False) as f:
            for k in rows[0]:
                v = np.stack(
                    [np.asarray(r[k], dtype=np.float64 if k not in ("step", "N_use") else np.int64) for r in rows]
                )
                if k not in f:
                    f.create_dataset(k, data=v, maxshape=(None,) + v.shape[1:], chunks=True)
                else:
                    ds = f[k]
                    ds.resize(ds.shape[0] + len(v), axis=0)
                    ds[-len(v) :] = v


def save_checkpoint(
    run_dir: str | os.PathLike,
    config: dict[str, Any],
    params: dict[str, np.ndarray],
    history: dict[str, list],
    step: int,
) -> None:
    """Atomically write ``checkpoint.h5``: parameters after ``step`` and the history so far."""
    path = Path(run_dir) / CHECKPOINT
    with _writing(path), write_sealed(path, overwrite=True) as f:
        _config_attrs(f, config)
        f.attrs["completed_steps"] = int(step) + 1
        for k, v in params.items():
            create_checked(f, f"params/{k}", np.asarray(v, dtype=np.float64))
        for k, rows in history.items():
            create_checked(f, f"history/{k}", np.stack([np.asarray(x) for x in rows]))


def load_checkpoint(
    run_dir: str | os.PathLike,
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """``(config, params, history, completed_steps)`` from ``checkpoint.h5``, validated.

    Raises:
        DataError: no checkpoint, or one that is unreadable, incomplete, or holds a bad configuration or
            parameters (NaN, ``pi`` outside (0, 1), ``sigma <= 0``).
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise DataError(f"{run_dir} has no {CHECKPOINT} to resume from; start a new run with --force")
    try:
        with open_hdf5(path, "checkpoint") as f:
            config = _read_config(f, str(path))
            found = safe_datasets(f)
            params = {k[7:]: np.asarray(v[()]) for k, v in found.items() if k.startswith("params/")}
            history = {k[8:]: np.asarray(v[()]) for k, v in found.items() if k.startswith("history/")}
            done = f.attrs["completed_steps"]
    except DataError:
        raise
    except (FormatError, OSError, KeyError, RuntimeError) as err:
        raise DataError(f"{path} is unreadable or incomplete ({err}); start a new run with --force") from None
    params = _check_params(config, params, str(path))
    if not (
        np.ndim(done) == 0
        and np.issubdtype(np.asarray(done).dtype, np.integer)
        and 1 <= int(done) <= int(config["steps"])
    ):
        raise DataError(f"{path}: completed_steps = {done!r} does not fit a run of {config['steps']} steps")
    done = int(done)
    if any(np.ndim(v) < 1 or len(v) != done for v in history.values()):
        raise DataError(f"{path}: its history does not hold {done} steps; the file is damaged")
    return config, params, history, done


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """All datasets of a ``results.h5`` (or of the one inside a run folder) plus ``config``."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    check_regular_file(path, "results file")
    with open_hdf5(path, "results file") as f:
        try:
            out: dict[str, Any] = {k: np.asarray(v[()]) for k, v in safe_datasets(f).items() if "/" not in k}
        except (OSError, RuntimeError) as err:
            raise DataError(f"{path} is unreadable ({err})") from None
        out["config"] = _read_config(f, str(path))
    missing = [k for k in ("W", "pi", "sigma", "step") if k not in out]
    if missing:
        raise DataError(f"{path} holds no {', '.join(missing)}; not a results file of a run")
    return out


#: the group of ``results.h5`` that holds the Gabor quality numbers of the final dictionary
QUALITY = "quality"
_QUALITY_ARRAYS = ("r2", "params", "orientation_hist", "frequency_hist", "order")


def write_quality(path: str | os.PathLike, summary: dict[str, Any]) -> None:
    """Store a :func:`~sparsecoding.gabor.gabor_summary` (and the usage ``order``) as ``quality/`` in ``results.h5``.

    Arrays become datasets, numbers and strings the group's attributes; an earlier ``quality/`` is replaced.
    """
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    # edit: checks the seal first (damaged bytes are never resealed as good ones), reseals a sealed file
    with _writing(path), edit(path, "results file", locking=False) as f:
        if QUALITY in f:
            del f[QUALITY]
        g = f.create_group(QUALITY)
        for k, v in summary.items():
            if k in _QUALITY_ARRAYS:
                g.create_dataset(k, data=np.asarray(v))
            elif isinstance(v, str):
                g.attrs[k] = v
            elif np.ndim(v) == 0:
                g.attrs[k] = float(v)


def load_quality(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``quality/`` numbers of a results file or run folder (None when the run has none yet)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    check_regular_file(path, "results file")
    with open_hdf5(path, "results file") as f:
        if QUALITY not in f or not isinstance(f[QUALITY], h5py.Group):
            return None
        found = safe_datasets(f)
        out: dict[str, Any] = {
            k[len(QUALITY) + 1 :]: np.asarray(v[()]) for k, v in found.items() if k.startswith(QUALITY + "/")
        }
        out.update({k: _plain(v) for k, v in f[QUALITY].attrs.items()})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
