"""HDF5 input and output: data sets, per-step results and atomic checkpoints (h5py, no pickle).

Data file: a 2-D dataset (default key ``"y"``) of shape (N, D); optional
attribute ``patch_shape`` (for plots); the bars generator also stores the
true parameters under ``truth/``.

Run folder (written by rank 0 only):

* ``results.h5``: one row per EM step; datasets ``step, T, N_use, loglik,
  wall_time`` of shape (steps,) and one per parameter (``W`` (steps, D, H),
  ``pi``, ``sigma``; ``mu``, ``Psi`` for GSC; ``prior`` for DSC); the run's
  configuration in the root attributes. Rows are appended as the run goes.
* ``checkpoint.h5``: the parameters after the last checkpointed step, the
  history up to it and the configuration; written atomically (temporary file
  in the same folder, then renamed), so a crash leaves the previous one intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from probcirc.io import atomic_path

__all__ = [
    "DataError",
    "inspect_data",
    "read_rows",
    "write_data",
    "ResultsWriter",
    "save_checkpoint",
    "load_checkpoint",
    "load_results",
    "RESULTS",
    "CHECKPOINT",
]

RESULTS = "results.h5"
CHECKPOINT = "checkpoint.h5"
ROW_SCALARS = ("step", "T", "N_use", "loglik", "wall_time")


class DataError(ValueError):
    """The input data file is missing, unreadable or of the wrong shape."""


def inspect_data(path: str | os.PathLike, key: str = "y") -> tuple[int, int, dict[str, Any]]:
    """``(N, D, attrs)`` of the dataset ``key`` in ``path``, with one-line errors for bad input."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise DataError(f"data file {path} is not a readable HDF5 file") from None
    with f:
        if key not in f or not isinstance(f[key], h5py.Dataset):
            keys = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            raise DataError(f"data file {path} has no dataset {key!r} (datasets: {keys or 'none'}); pass --key")
        ds = f[key]
        if ds.ndim != 2:
            raise DataError(f"dataset {key!r} in {path} has shape {ds.shape}; expected 2-D (N, D): reshape it, "
                            "one data point per row")
        if ds.shape[0] < 1 or ds.shape[1] < 1:
            raise DataError(f"dataset {key!r} in {path} is empty (shape {ds.shape})")
        if not np.issubdtype(ds.dtype, np.number):
            raise DataError(f"dataset {key!r} in {path} has non-numeric dtype {ds.dtype}")
        attrs = {k: _plain(v) for k, v in ds.attrs.items()}
        attrs.update({k: _plain(v) for k, v in f.attrs.items() if k not in attrs})
        return int(ds.shape[0]), int(ds.shape[1]), attrs


def read_rows(path: str | os.PathLike, key: str, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` of the dataset as float64 (each rank reads only its own slice)."""
    with h5py.File(path, "r") as f:
        return np.asarray(f[key][start:stop], dtype=np.float64)


def write_data(path: str | os.PathLike, Y: np.ndarray, key: str = "y", overwrite: bool = False,
               attrs: dict[str, Any] | None = None, extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a data set (and e.g. the true parameters under ``extra``) atomically."""
    with atomic_path(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset(key, data=np.asarray(Y, dtype=np.float64))
            for k, v in (attrs or {}).items():
                ds.attrs[k] = v
            for k, v in (extra or {}).items():
                f.create_dataset(k, data=np.asarray(v))


def _config_attrs(f: h5py.File, config: dict[str, Any]) -> None:
    f.attrs["format"] = "probmod.sparsecoding"
    f.attrs["config"] = json.dumps(config, sort_keys=True)
    for k, v in config.items():
        if v is not None and not isinstance(v, (dict, list, tuple)):
            f.attrs[k] = v


def _read_config(f: h5py.File) -> dict[str, Any]:
    return json.loads(_plain(f.attrs["config"]))


class ResultsWriter:
    """Appends one row per EM step to ``results.h5`` (rank 0 only)."""

    def __init__(self, path: str | os.PathLike, config: dict[str, Any], history: dict[str, np.ndarray] | None = None):
        self.path = Path(path)
        with atomic_path(self.path, overwrite=True) as tmp:
            with h5py.File(tmp, "w") as f:
                _config_attrs(f, config)
                for k, v in (history or {}).items():
                    v = np.asarray(v)
                    f.create_dataset(k, data=v, maxshape=(None,) + v.shape[1:], chunks=True)

    def append(self, row: dict[str, Any]) -> None:
        with h5py.File(self.path, "a") as f:
            for k, v in row.items():
                v = np.asarray(v, dtype=np.float64 if k not in ("step", "N_use") else np.int64)
                if k not in f:
                    f.create_dataset(k, data=v[None], maxshape=(None,) + v.shape, chunks=True)
                else:
                    ds = f[k]
                    ds.resize(ds.shape[0] + 1, axis=0)
                    ds[-1] = v


def save_checkpoint(run_dir: str | os.PathLike, config: dict[str, Any], params: dict[str, np.ndarray],
                    history: dict[str, list], step: int) -> None:
    """Atomically write ``checkpoint.h5``: parameters after ``step`` and the history so far."""
    with atomic_path(Path(run_dir) / CHECKPOINT, overwrite=True) as tmp:
        with h5py.File(tmp, "w") as f:
            _config_attrs(f, config)
            f.attrs["completed_steps"] = int(step) + 1
            for k, v in params.items():
                f.create_dataset(f"params/{k}", data=np.asarray(v, dtype=np.float64))
            for k, v in history.items():
                f.create_dataset(f"history/{k}", data=np.stack([np.asarray(x) for x in v]))


def load_checkpoint(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """``(config, params, history, completed_steps)`` from ``checkpoint.h5``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise DataError(f"{run_dir} has no {CHECKPOINT} to resume from; start a new run with --force")
    try:
        with h5py.File(path, "r") as f:
            config = _read_config(f)
            params = {k: np.asarray(v[()]) for k, v in f["params"].items()}
            history = {k: np.asarray(v[()]) for k, v in f["history"].items()} if "history" in f else {}
            return config, params, history, int(f.attrs["completed_steps"])
    except (OSError, KeyError) as err:
        raise DataError(f"{path} is unreadable or incomplete ({err}); start a new run with --force") from None


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """All datasets of a ``results.h5`` (or of the one inside a run folder) plus ``config``."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    if not path.exists():
        raise DataError(f"{path} does not exist")
    with h5py.File(path, "r") as f:
        out: dict[str, Any] = {k: np.asarray(v[()]) for k, v in f.items() if isinstance(v, h5py.Dataset)}
        out["config"] = _read_config(f)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
