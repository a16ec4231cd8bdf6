"""The ``.pcz`` container: header, per-image stream table, payload and checksums.

Layout (all integers little-endian)::

    magic        8 bytes  89 50 43 5A 0D 0A 1A 0A  ("\\x89PCZ\\r\\n\\x1a\\n")
    version      u16      2 (version 1 is still read)
    header_len   u32      length of the header that follows
    header       header_len bytes:
        fingerprint   32 bytes  SHA-256 of the model (codec.file_fingerprint: the circuit's, mixed with its predictor)
        patch_h       u16, patch_w u16
        num_values    u16       alphabet size of the model (256 for 8-bit)
        precision     u8        log2 of every quantised PMF's total (24)
        block         u16       patches per range-coded block
        payload_sha   32 bytes  SHA-256 of the whole payload
        payload_len   u64
        n_images      u32
        n_images x { height varint, width varint, kind u8 (mode: low 4 bits, 0 L / 1 RGB;
                     source: bits 4-6, 0 image file / 1 array element; coding: bit 7, 0 model /
                     1 raw, version 2 only), name_len varint, name (UTF-8),
                     stream_len varint, stream_crc32 u32 }
    (varint = unsigned LEB128: 7 bits per byte, low first, high bit set on all but the last)
    header_crc   u32      CRC-32 of version, header_len and header
    payload      the image streams, concatenated in order

Each image stream is the byte lengths of its blocks but the last (LEB128 varints; the
number of blocks follows from the image size, so a one-block image has none), then the
blocks: range-coder words (u32, little-endian) with up to 3 trailing zero bytes dropped.
An image is decodable alone: its offset is the sum of the previous stream lengths, and
its CRC-32 is checked before decoding.

A raw image's stream (coding 1) is one byte ``width`` (1..8), then every value of the
image (row-major, RGB interleaved) in ``width`` bits, most significant first, packed
into bytes and zero-padded: never more than 8 bits per value plus 2 bytes.

Everything in a file is untrusted data. :func:`unpack` checks, before anything is
allocated from them, that the declared sizes are consistent with the bytes really
present (every range-coded block takes at least one byte and, but the last, one
table byte; a raw stream has exactly its declared length) and, when ``max_values``
is given, that the declared values stay within it (:class:`~probmod.errors.LimitError`).
Stored names are data too: :func:`safe_name` turns one into a plain file name and
:func:`escape_name` into printable text.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field

from probmod.errors import LimitError

from .. import io

MAGIC = b"\x89PCZ\r\n\x1a\n"
VERSION = 2
#: versions :func:`unpack` reads
READ_VERSIONS = (1, 2)
#: codings of an image's stream
MODEL, RAW = 0, 1
#: most values (pixels x channels) a file may declare unless the reader raises it: 64 Mi,
#: e.g. a 22-megapixel RGB photograph or 85,000 MNIST digits
MAX_VALUES = 1 << 26
#: longest stored name in UTF-8 bytes (longer names are cut at a character boundary)
MAX_NAME_BYTES = 200
_PLANES = {0: 1, 1: 3}  # mode -> planes (L, RGB)


class PczFormatError(io.FormatError):
    """Not a .pcz file, or a truncated, corrupt or unsupported one."""


@dataclass
class Entry:
    height: int
    width: int
    mode: int
    source: int = 0
    name: str = ""
    stream_len: int = 0
    crc32: int = 0
    coding: int = MODEL

    @property
    def values(self) -> int:
        """Pixels times channels."""
        return self.height * self.width * _PLANES.get(self.mode, 1)


@dataclass
class Header:
    fingerprint: bytes
    patch_h: int
    patch_w: int
    num_values: int
    precision: int
    block: int
    entries: list[Entry] = field(default_factory=list)
    payload_sha: bytes = b"\0" * 32
    payload_len: int = 0
    version: int = VERSION

    def offsets(self) -> list[int]:
        out, pos = [], 0
        for e in self.entries:
            out.append(pos)
            pos += e.stream_len
        return out

    def offset(self, index: int) -> int:
        """Where image ``index``'s stream starts in the payload (cached: decoding every image stays linear)."""
        cached = getattr(self, "_offsets", None)
        if cached is None or len(cached) != len(self.entries):
            cached = self._offsets = self.offsets()
        return cached[index]


_FIXED = struct.Struct("<32sHHHBH32sQI")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(b, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(b) or shift > 63:
            raise struct.error("bad varint")
        byte = b[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


def _cut(name: str, limit: int = MAX_NAME_BYTES) -> bytes:
    """``name`` in UTF-8, cut at a character boundary to at most ``limit`` bytes."""
    raw = name.encode("utf-8", errors="replace")
    return raw[:limit].decode("utf-8", errors="ignore").encode("utf-8")


def safe_name(name: str) -> str:
    """A stored name reduced to a plain base name that cannot leave a folder; ``""`` if nothing is left.

    Keeps the last path component (after ``/`` or ``\\``), replaces control and
    format characters (and a leading dot) by ``_``, and cuts the result to
    :data:`MAX_NAME_BYTES` bytes.

    Example:
        >>> safe_name("../../etc/passwd"), safe_name("a\\x1b[2Jb"), safe_name(".."), safe_name("digits")
        ('passwd', 'a_[2Jb', '', 'digits')
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if base in (".", ".."):
        return ""
    base = "".join(
        "_" if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") else c for c in base
    )
    if base.startswith("."):
        base = "_" + base[1:]
    return _cut(base).decode("utf-8")


def escape_name(name: str) -> str:
    """``name`` as printable text: backslashes and unprintable characters written as escapes.

    Example:
        >>> escape_name("a\\nb\\x1b")
        'a\\\\nb\\\\x1b'
    """
    return "".join(c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii") for c in name)


def pack(header: Header, streams: list[bytes]) -> bytes:
    """The ``.pcz`` bytes (version :data:`VERSION`) of ``header`` and its images' ``streams``."""
    payload = b"".join(streams)
    for e, s in zip(header.entries, streams):
        e.stream_len = len(s)
        e.crc32 = zlib.crc32(s)
    header.payload_sha = hashlib.sha256(payload).digest()
    header.payload_len = len(payload)
    header.version = VERSION
    parts = [
        _FIXED.pack(
            header.fingerprint,
            header.patch_h,
            header.patch_w,
            header.num_values,
            header.precision,
            header.block,
            header.payload_sha,
            header.payload_len,
            len(header.entries),
        )
    ]
    for e in header.entries:
        name = _cut(e.name)
        kind = e.mode | (e.source << 4) | (e.coding << 7)
        parts.append(
            _varint(e.height)
            + _varint(e.width)
            + bytes([kind])
            + _varint(len(name))
            + name
            + _varint(e.stream_len)
            + struct.pack("<I", e.crc32)
        )
    body = b"".join(parts)
    lead = struct.pack("<HI", VERSION, len(body))
    return MAGIC + lead + body + struct.pack("<I", zlib.crc32(lead + body)) + payload


def _entries(body, version: int) -> list[Entry]:
    (n,) = struct.unpack_from("<I", body, _FIXED.size - 4)
    off = _FIXED.size
    entries = []
    for _ in range(n):  # each entry takes at least 8 bytes, so a false count fails at the header's end
        h, off = _read_varint(body, off)
        w, off = _read_varint(body, off)
        if off >= len(body):
            raise struct.error("header cut off")
        kind = body[off]
        off += 1
        nlen, off = _read_varint(body, off)
        if off + nlen > len(body):
            raise struct.error("header cut off")
        name = bytes(body[off : off + nlen]).decode("utf-8")
        off += nlen
        slen, off = _read_varint(body, off)
        (scrc,) = struct.unpack_from("<I", body, off)
        off += 4
        if version == 1:
            entries.append(Entry(h, w, kind & 15, kind >> 4, name, slen, scrc))
        else:
            entries.append(Entry(h, w, kind & 15, (kind >> 4) & 7, name, slen, scrc, kind >> 7))
    if off != len(body):
        raise struct.error(f"{len(body) - off} unexplained header bytes")
    return entries


def check_sizes(header: Header, max_values: int | None = MAX_VALUES) -> None:
    """Refuse declared sizes that the stored bytes cannot hold, or that exceed ``max_values``, before any allocation.

    Raises:
        PczFormatError: an unknown image mode or coding, an empty image, or a stream too short for its size.
        LimitError: the images declare more than ``max_values`` values in all (None: no limit).
    """
    ph, pw, block = header.patch_h, header.patch_w, header.block
    if ph < 1 or pw < 1 or block < 1:
        raise PczFormatError(f"corrupt .pcz header (patch {ph}x{pw}, {block} patches per block)")
    total = 0
    for i, e in enumerate(header.entries):
        if e.mode not in _PLANES or e.coding not in (MODEL, RAW) or e.height < 1 or e.width < 1:
            raise PczFormatError(
                f"corrupt .pcz header (image {i}: mode {e.mode}, coding {e.coding}, size {e.height}x{e.width})"
            )
        total += e.values
        if max_values is not None and total > max_values:
            raise LimitError(
                f"the file declares more than {max_values} values (image {i} is {e.width}x{e.height}"
                f"{'x3' if e.mode else ''}); raise the limit (--max-values) if the file is trusted"
            )
        if e.coding == RAW:
            least = 1 + (e.values + 7) // 8  # 1 to 8 bits per value, after the width byte
            most = 1 + e.values
        else:
            blocks = -(-_PLANES[e.mode] * -(-e.height // ph) * -(-e.width // pw) // block)
            least, most = 2 * blocks - 1, None  # a table byte per block but the last, a byte at least per block
        if e.stream_len < least or (most is not None and e.stream_len > most):
            raise PczFormatError(
                f"corrupt .pcz file (image {i} declares {e.width}x{e.height} but its stream holds {e.stream_len} bytes)"
            )


def unpack(data: bytes, verify_payload: bool = True, max_values: int | None = MAX_VALUES) -> tuple[Header, memoryview]:
    """Parse and check a .pcz file; return its header and payload.

    ``max_values`` bounds the values the images may declare (None: no bound, for
    describing a file without decoding it); see :func:`check_sizes`.

    Raises:
        PczFormatError: with a one-line reason (foreign file, version, truncation, checksum, sizes).
        LimitError: the file declares more than ``max_values`` values.
    """
    data = memoryview(bytes(data)) if not isinstance(data, memoryview) else data
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise PczFormatError("not a .pcz file (bad magic number)")
    pos = len(MAGIC)
    if len(data) < pos + 6:
        raise PczFormatError("truncated .pcz file (header cut off)")
    version, hlen = struct.unpack_from("<HI", data, pos)
    if version not in READ_VERSIONS:
        raise PczFormatError(
            f".pcz format version {version} is not supported (this build reads versions "
            f"{', '.join(map(str, READ_VERSIONS))})"
        )
    end = pos + 6 + hlen
    if len(data) < end + 4:
        raise PczFormatError("truncated .pcz file (header cut off)")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[pos:end]) != crc:
        raise PczFormatError("corrupt .pcz file (header checksum mismatch)")
    body = data[pos + 6 : end]
    try:
        fp, ph, pw, nv, prec, block, sha, plen, _ = _FIXED.unpack_from(body, 0)
        entries = _entries(body, version)
    except (struct.error, UnicodeDecodeError) as err:
        raise PczFormatError(f"corrupt .pcz header ({err})") from None
    header = Header(fp, ph, pw, nv, prec, block, entries, sha, plen, version)
    payload = data[end + 4 :]
    if len(payload) < plen or sum(e.stream_len for e in entries) != plen:
        raise PczFormatError(f"truncated .pcz file (payload has {len(payload)} of {plen} bytes)")
    if len(payload) > plen:
        raise PczFormatError(f"corrupt .pcz file ({len(payload) - plen} trailing bytes after the payload)")
    check_sizes(header, max_values)
    if verify_payload and hashlib.sha256(payload).digest() != sha:
        raise PczFormatError("corrupt .pcz file (payload checksum mismatch)")
    return header, payload


def stream(header: Header, payload: memoryview, index: int) -> bytes:
    """Image ``index``'s stream, after checking its CRC-32."""
    if not 0 <= index < len(header.entries):
        raise IndexError(f"image index {index} out of range: the file holds {len(header.entries)} images")
    off = header.offset(index)
    e = header.entries[index]
    s = bytes(payload[off : off + e.stream_len])
    if zlib.crc32(s) != e.crc32:
        raise PczFormatError(f"corrupt .pcz file (image {index}'s stream checksum mismatch)")
    return s
