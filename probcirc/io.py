"""Saving and loading models as HDF5 files, with no pickle.

A file holds one object: the root carries the attributes ``format`` (always
``"probmod"``), ``version`` and ``kind`` (the registered class name), then
the object's own attributes and arrays. Loading reads arrays and plain
attributes only, so a file can never run code.

Writes are atomic: the file is written beside its destination under a
temporary name, flushed, then renamed over it. An existing file is only
replaced when ``overwrite=True``.

A class joins by implementing ``_state(self) -> (attrs, arrays)`` and a
classmethod ``_from_state(attrs, arrays)``, and registering itself with
:func:`register`. Array names may contain ``/`` to form groups.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["save", "load", "register", "FormatError", "FORMAT", "VERSION", "atomic_path"]

FORMAT = "probmod"
VERSION = 1

_REGISTRY: dict[str, type] = {}


class FormatError(ValueError):
    """The file is not a probmod file, is truncated or corrupt, or is of another version or kind."""


def register(cls: type) -> type:
    """Class decorator: make ``cls`` savable under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


class atomic_path:
    """Context manager yielding a temporary path that is renamed onto ``path`` on success.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with atomic_path(os.path.join(d, "a.txt")) as tmp:
        ...     _ = open(tmp, "w").write("hi")
        >>> open(os.path.join(d, "a.txt")).read()
        'hi'
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False):
        self.path = Path(path)
        self.overwrite = overwrite

    def __enter__(self) -> str:
        if self.path.exists() and not self.overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        elif os.path.exists(self.tmp):
            os.remove(self.tmp)


def save(obj: Any, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``obj`` to ``path`` as HDF5, atomically.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        TypeError: if ``obj``'s class is not registered.

    Example:
        >>> import torch, tempfile, os
        >>> from probcirc import GaussianMixture, io
        >>> gmm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.zeros(2, 1), torch.eye(1).expand(2, 1, 1))
        >>> path = os.path.join(tempfile.mkdtemp(), "gmm.h5")
        >>> io.save(gmm, path)
        >>> bool(torch.equal(io.load(path).means, gmm.means))
        True
    """
    kind = type(obj).__name__
    if _REGISTRY.get(kind) is not type(obj):
        raise TypeError(f"cannot save a {kind}: its class is not registered with probcirc.io.register")
    attrs, arrays = obj._state()
    with atomic_path(path, overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["kind"] = kind
            for key, value in attrs.items():
                f.attrs[key] = value
            for name, value in arrays.items():
                f.create_dataset(name, data=np.asarray(value))


def load(path: str | os.PathLike, kind: type | None = None) -> Any:
    """Read an object written by :func:`save`.

    Args:
        path: the file.
        kind: if given, the class the file must hold.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        FormatError: if the file is not a readable probmod file of a known kind and version.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise FormatError(f"{path}: not a probmod file (not readable as HDF5: {err})") from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise FormatError(f"{path}: not a probmod file (format attribute is {f.attrs.get('format')!r})")
        version = int(f.attrs.get("version", -1))
        if version != VERSION:
            raise FormatError(f"{path}: format version {version} is not supported (this build reads {VERSION})")
        name = str(f.attrs.get("kind"))
        cls = _REGISTRY.get(name)
        if cls is None:
            raise FormatError(f"{path}: holds an unknown kind {name!r}")
        if kind is not None and cls is not kind:
            raise FormatError(f"{path}: holds a {name}, expected a {kind.__name__}")
        attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in ("format", "version", "kind")}
        arrays: dict[str, np.ndarray] = {}
        try:
            f.visititems(lambda name, item: _collect(arrays, name, item))
        except (OSError, RuntimeError, KeyError) as err:
            raise FormatError(f"{path}: truncated or corrupt ({err})") from None
    try:
        return cls._from_state(attrs, arrays)
    except (KeyError, ValueError, TypeError) as err:
        raise FormatError(f"{path}: inconsistent {name} data ({err})") from None


def _collect(arrays: dict, name: str, item: Any) -> None:
    if isinstance(item, h5py.Dataset):
        arrays[name] = item[()]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
