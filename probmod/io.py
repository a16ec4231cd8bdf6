"""Saving and loading models as HDF5 files, with no pickle, and atomic writes for every file probmod writes.

A file holds one object: the root carries the attributes ``format`` (always
``"probmod"``), ``version`` and ``kind`` (the registered class name), then
the object's own attributes and arrays. Loading reads arrays and plain
attributes only, so a file can never run code.

Files are untrusted input. Before any array is read, :func:`load` refuses
what a probmod writer never produces and what could reach outside the file
or hang: a path that is not a regular file (a FIFO, a device), external
links, soft links, external storage and virtual datasets. It also checks
every dataset's declared size against the bytes the file really stores and
against ``max_bytes`` (default :data:`MAX_BYTES`), so a small crafted file
cannot make it allocate gigabytes.

Writes are atomic: the file is written beside its destination under a
temporary name, flushed, then renamed over it, with the permissions the
user's umask gives a new file. An existing file is only replaced when
``overwrite=True``; an interrupted write leaves no temporary file behind.

A class joins by implementing ``_state(self) -> (attrs, arrays)`` and a
classmethod ``_from_state(attrs, arrays)``, and registering itself with
:func:`register`. Array names may contain ``/`` to form groups.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import (
    FormatError,
    InputError,
    LimitError,
    MissingInputError,
    ModelMismatchError,
    OutputError,
    OutputExistsError,
    ProbmodError,
)

__all__ = [
    "save",
    "load",
    "register",
    "registered",
    "FormatError",
    "FORMAT",
    "VERSION",
    "MAX_BYTES",
    "atomic_path",
    "check_output",
    "check_regular_file",
    "expand_inputs",
    "open_hdf5",
    "safe_datasets",
    "new_file_mode",
]

FORMAT = "probmod"
VERSION = 1
#: largest total of array bytes :func:`load` reads unless ``max_bytes`` says otherwise (4 GiB)
MAX_BYTES = 4 << 30
#: declared bytes a chunked dataset may hold beyond what it stores (unwritten trailing chunks read as fill)
CHUNK_SLACK = 1 << 20

# Values are classes with the ``_state`` / ``_from_state`` pair, which ``type`` cannot express.
_REGISTRY: dict[str, Any] = {}


def register(cls: type) -> type:
    """Class decorator: make ``cls`` savable under its class name."""
    _REGISTRY[cls.__name__] = cls
    return cls


def registered() -> dict[str, type]:
    """The registered model classes by name (a copy)."""
    return dict(_REGISTRY)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, which briefly changes the mask
    every thread creates files under; Linux reports it in ``/proc/self/status``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a newly created regular file gets under the current umask (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail now, before long work, if ``path`` cannot be written later.

    Raises:
        OutputExistsError: ``path`` exists and ``overwrite`` is False.
        OutputError: ``path`` is a folder, or its parent cannot be created or written.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> check_output(os.path.join(d, "new", "model.h5")).name
        'model.h5'
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --force (overwrite=True) to replace it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {path}: {parent} is not writable")
    return path


class atomic_path:
    """Context manager yielding a temporary path that is renamed onto ``path`` on success.

    On any exception (``KeyboardInterrupt`` and the ``SystemExit`` that the
    command lines raise on SIGTERM included) the temporary file is removed.

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
        check_output(self.path, self.overwrite)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as err:
            raise OutputError(f"cannot write {self.path}: {err.strerror or err}") from None
        os.close(fd)
        os.chmod(self.tmp, new_file_mode())  # mkstemp makes 0600; a finished file follows the umask
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                with open(self.tmp, "rb+") as f:
                    os.fsync(f.fileno())
                if self.path.exists() and not self.overwrite:  # appeared while we wrote
                    raise OutputExistsError(f"{self.path} appeared while it was written; pass --force to replace it")
                os.replace(self.tmp, self.path)
            except BaseException:
                _remove(self.tmp)
                raise
        else:
            _remove(self.tmp)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


#: HDF5 1.10's file format: superblock, object headers and B-trees carry checksums, so a damaged file
#: is refused by the library's own checks instead of being walked as if it were whole.
LIBVER = "v110"
#: bytes before the HDF5 superblock (HDF5 skips them); they hold the seal
USERBLOCK = 512
SEAL = b"probmod sha256 "
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def save(obj: Any, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write ``obj`` to ``path`` as HDF5, atomically.

    Raises:
        OutputExistsError: if ``path`` exists and ``overwrite`` is False (a ``FileExistsError``).
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
        raise TypeError(f"cannot save a {kind}: its class is not registered with probmod.io.register")
    attrs, arrays = obj._state()
    with write_sealed(path, overwrite) as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["kind"] = kind
        for key, value in attrs.items():
            f.attrs[key] = value
        for name, value in arrays.items():
            create_checked(f, name, np.asarray(value))


def create_sealable(path: str | os.PathLike) -> h5py.File:
    """A new HDF5 file in :func:`save`'s format, with the user block that :func:`seal` fills."""
    return h5py.File(path, "w", libver=LIBVER, userblock_size=USERBLOCK)


@contextlib.contextmanager
def write_sealed(path: str | os.PathLike, overwrite: bool = False) -> Iterator[h5py.File]:
    """Write a new HDF5 file atomically (:class:`atomic_path`) and seal it once the writing succeeded."""
    with atomic_path(path, overwrite) as tmp:
        with create_sealable(tmp) as f:
            yield f
        seal(tmp)


def seal(path: str | os.PathLike) -> None:
    """Write the SHA-256 of everything after the user block into the user block (see :func:`verify_seal`)."""
    with open(path, "r+b") as f:
        f.seek(USERBLOCK)
        if f.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
            raise FormatError(f"{path}: has no {USERBLOCK}-byte user block to hold a seal (not written by save)")
        f.seek(USERBLOCK)
        digest = hashlib.file_digest(f, "sha256").hexdigest().encode()
        f.seek(0)
        f.write(SEAL + digest + b"\n")


@contextlib.contextmanager
def edit(path: str | os.PathLike, what: str = "HDF5 file", locking: bool = True) -> Iterator[h5py.File]:
    """Open an HDF5 file for an in-place edit; a sealed one is resealed when the edit succeeds.

    The seal makes any changed byte a "damaged file" error on load, so an edit made on purpose goes
    through here; an edit that raises leaves the file unsealed-and-changed, which loading refuses.
    The seal is checked first, so damaged bytes are never resealed as good ones; an unsealed file
    (an older version's) stays unsealed. ``what`` names the file in errors; ``locking=False`` lets
    readers keep the file open.

    Example:
        >>> import tempfile, pathlib, torch
        >>> from probcirc import GaussianMixture
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "gmm.h5"
        >>> save(GaussianMixture(torch.tensor([1.0]), torch.zeros(1, 1), torch.eye(1)[None]), path)
        >>> with edit(path) as f:
        ...     f.attrs["note"] = "checked by hand"
        >>> load(path).log_prob(torch.zeros(1, 1)).shape
        torch.Size([1])
    """
    path = check_regular_file(path, what)
    verify_seal(path, what)
    with open(path, "rb") as raw:
        sealed = raw.read(len(SEAL)) == SEAL
    with h5py.File(path, "r+", locking=locking) as f:
        yield f
    if sealed:
        seal(path)


def verify_seal(path: Path, what: str) -> None:
    """Refuse a sealed file whose bytes changed since :func:`save` wrote it, before HDF5 parses any of it.

    HDF5's parser can loop forever or crash on damaged metadata; a checksum over the whole file keeps
    damaged files away from it. Unsealed files (older versions, other writers) are read as before.
    """
    with open(path, "rb") as f:
        head = f.read(len(SEAL) + 65)
        if not head.startswith(SEAL):
            return
        f.seek(USERBLOCK)
        digest = hashlib.file_digest(f, "sha256").hexdigest().encode()
    if head[len(SEAL) : len(SEAL) + 64] != digest:
        raise FormatError(
            f"{path}: damaged {what}: its SHA-256 does not match the one written with it "
            "(an edit on purpose goes through probmod.io.edit, which reseals the file)"
        )


def create_checked(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    """A dataset whose bytes carry a Fletcher-32 checksum (arrays with elements; HDF5 cannot chunk the rest).

    A flipped byte in a parameter then reads as a :class:`FormatError`, not as a silently wrong model.
    """
    if data.ndim and data.size:
        return group.create_dataset(name, data=data, fletcher32=True, chunks=data.shape)
    return group.create_dataset(name, data=data)


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` as a Path if it is an existing regular file; never opens it, so a FIFO cannot hang us.

    Raises:
        InputError: it does not exist, or it is a folder, FIFO, device or socket.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MissingInputError(f"{path}: no such {what}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{path}: {kind}; expected a {what}")
    return path


def expand_inputs(
    sources: Iterable[str | os.PathLike], accept: Callable[[Path], bool], kinds: str, what: str
) -> list[Path]:
    """Files as given and folders as their accepted files in name order, each checked as a regular file.

    ``kinds`` names what a folder must hold (for the error), ``what`` what a single file is.

    Raises:
        InputError: a source is missing or not a regular file, or a folder holds no accepted file.

    Example:
        >>> expand_inputs([], lambda p: True, "images", "image file")
        []
    """
    out: list[Path] = []
    for src in map(Path, sources):
        if src.is_dir():
            found = sorted(p for p in src.iterdir() if p.is_file() and accept(p))
            if not found:
                raise InputError(f"{src}: no {kinds} in this folder")
            out.extend(found)
        else:
            out.append(check_regular_file(src, what))
    return out


def open_hdf5(path: str | os.PathLike, what: str = "probmod file") -> h5py.File:
    """Open an untrusted HDF5 file read-only, after :func:`check_regular_file`.

    Raises:
        InputError: not a regular file.
        FormatError: not readable as HDF5.
    """
    path = check_regular_file(path, what)
    verify_seal(path, what)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise FormatError(f"{path}: not a {what} (not readable as HDF5: {err})") from None


def safe_datasets(f: h5py.File, max_bytes: int = MAX_BYTES) -> dict[str, h5py.Dataset]:
    """Every dataset of ``f`` by path, after refusing links, external storage, virtual datasets and bombs.

    A contiguous dataset must store all the bytes its shape declares (a
    crafted header cannot make a 4-byte file read as gigabytes of fill), and
    the declared total must stay within ``max_bytes``.

    Raises:
        FormatError: a link, external or virtual dataset, or a dataset whose stored bytes fall short.
        LimitError: the declared total exceeds ``max_bytes``.
    """
    name = f.filename
    found: dict[str, h5py.Dataset] = {}
    stack = [("", f)]
    total = 0
    seen = {h5py.h5o.get_info(f.id).addr}  # a group linked back to its parent would loop forever
    while stack:
        prefix, group = stack.pop()
        for key in group:
            link = group.get(key, getlink=True)
            path = f"{prefix}{key}"
            if not isinstance(link, h5py.HardLink):
                raise FormatError(f"{name}: {path!r} is a {type(link).__name__}; probmod files hold no links")
            item = group[key]
            addr = h5py.h5o.get_info(item.id).addr
            if addr in seen:
                raise FormatError(f"{name}: {path!r} is a second name for an object; probmod files share none")
            seen.add(addr)
            if isinstance(item, h5py.Group):
                stack.append((path + "/", item))
                continue
            if not isinstance(item, h5py.Dataset):
                raise FormatError(f"{name}: {path!r} is not a dataset or group")
            if item.is_virtual or item.external:
                raise FormatError(f"{name}: {path!r} keeps its data outside the file; refused")
            if item.dtype.kind not in "biufc?S" or item.dtype.hasobject:
                raise FormatError(f"{name}: {path!r} has an unsupported dtype {item.dtype}")
            declared = (
                int(np.prod(item.shape, dtype=np.float64)) * item.dtype.itemsize if item.shape else item.dtype.itemsize
            )
            total += declared
            if total > max_bytes:
                raise LimitError(
                    f"{name}: its arrays declare more than {max_bytes / 2**20:.0f} MiB "
                    f"({path!r} alone {declared / 2**20:.0f} MiB); raise max_bytes if this file is trusted"
                )
            stored = item.id.get_storage_size()
            # Contiguous data must be all there. Chunked data may lack its last chunks (a row being
            # appended when a run was stopped) but not gigabytes of them, and compressed data cannot
            # expand past deflate's best ratio (about 1032:1).
            if item.chunks is None:
                short = stored < declared
            else:
                short = declared > (stored * 1032 if item.compression else stored) + CHUNK_SLACK
            if item.shape and short:
                raise FormatError(
                    f"{name}: {path!r} declares {declared} bytes but stores {stored}; truncated or crafted"
                )
            found[path] = item
    return found


def load(path: str | os.PathLike, kind: type | None = None, max_bytes: int = MAX_BYTES) -> Any:
    """Read an object written by :func:`save`.

    Args:
        path: the file.
        kind: if given, the class the file must hold.
        max_bytes: the most array bytes to read (see the module notes).

    Raises:
        InputError: if ``path`` does not exist or is not a regular file (``FileNotFoundError`` is kept for
            a missing file, for compatibility).
        FormatError: if the file is not a readable probmod file of a known kind and version.
        ModelMismatchError: if it holds another kind than ``kind``.
        LimitError: if it declares more than ``max_bytes`` of arrays.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise MissingInputError(f"{path}: no such file")
    with open_hdf5(path) as f:
        try:
            cls, name, attrs, arrays = _read(f, path, kind, max_bytes)
        except ProbmodError:
            raise
        except (OSError, RuntimeError, ValueError, KeyError, UnicodeDecodeError) as err:
            raise FormatError(f"{path}: truncated or corrupt ({err})") from None
    try:
        return cls._from_state(attrs, arrays)
    except (FormatError, LimitError):
        raise
    except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as err:
        raise FormatError(f"{path}: inconsistent {name} data ({err})") from None


def _read(f: h5py.File, path: Path, kind: type | None, max_bytes: int) -> tuple[Any, str, dict, dict]:
    """The class, kind name, attributes and arrays of an open probmod file, validated."""
    if f.attrs.get("format") != FORMAT:
        raise FormatError(f"{path}: not a probmod file (format attribute is {f.attrs.get('format')!r})")
    try:
        version = int(f.attrs.get("version", -1))
    except (TypeError, ValueError):
        version = -1
    if version != VERSION:
        raise FormatError(f"{path}: format version {version} is not supported (this build reads {VERSION})")
    name = str(_plain(f.attrs.get("kind")))
    cls = _REGISTRY.get(name)
    if cls is None:
        raise FormatError(f"{path}: holds an unknown kind {name!r}")
    if kind is not None and cls is not kind:
        raise ModelMismatchError(f"{path}: holds a {name}, expected a {kind.__name__}")
    attrs = {k: _plain(v) for k, v in f.attrs.items() if k not in ("format", "version", "kind")}
    arrays = {key: ds[()] for key, ds in safe_datasets(f, max_bytes).items()}
    return cls, name, attrs, arrays


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
