"""The ``.pcz`` container: header, per-image stream table, payload and checksums.

Layout (all integers little-endian)::

    magic        8 bytes  89 50 43 5A 0D 0A 1A 0A  ("\\x89PCZ\\r\\n\\x1a\\n")
    version      u16      1
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
                     source: high 4 bits, 0 image file / 1 array element), name_len varint,
                     name (UTF-8), stream_len varint, stream_crc32 u32 }
    (varint = unsigned LEB128: 7 bits per byte, low first, high bit set on all but the last)
    header_crc   u32      CRC-32 of version, header_len and header
    payload      the image streams, concatenated in order

Each image stream is the byte lengths of its blocks but the last (LEB128 varints; the
number of blocks follows from the image size, so a one-block image has none), then the
blocks: range-coder words (u32, little-endian) with up to 3 trailing zero bytes dropped. An image is decodable alone: its offset is
the sum of the previous stream lengths, and its CRC-32 is checked before decoding.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field

from .. import io

MAGIC = b"\x89PCZ\r\n\x1a\n"
VERSION = 1


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

    def offsets(self) -> list[int]:
        out, pos = [], 0
        for e in self.entries:
            out.append(pos)
            pos += e.stream_len
        return out


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


def pack(header: Header, streams: list[bytes]) -> bytes:
    payload = b"".join(streams)
    for e, s in zip(header.entries, streams):
        e.stream_len = len(s)
        e.crc32 = zlib.crc32(s)
    header.payload_sha = hashlib.sha256(payload).digest()
    header.payload_len = len(payload)
    parts = [_FIXED.pack(header.fingerprint, header.patch_h, header.patch_w, header.num_values, header.precision,
                         header.block, header.payload_sha, header.payload_len, len(header.entries))]
    for e in header.entries:
        name = e.name.encode("utf-8")[:65535]
        parts.append(_varint(e.height) + _varint(e.width) + bytes([e.mode | (e.source << 4)]) + _varint(len(name)) + name
                     + _varint(e.stream_len) + struct.pack("<I", e.crc32))
    body = b"".join(parts)
    lead = struct.pack("<HI", VERSION, len(body))
    return MAGIC + lead + body + struct.pack("<I", zlib.crc32(lead + body)) + payload


def unpack(data: bytes, verify_payload: bool = True) -> tuple[Header, memoryview]:
    """Parse and check a .pcz file; return its header and payload.

    Raises:
        PczFormatError: with a one-line reason (foreign file, version, truncation, checksum).
    """
    data = memoryview(bytes(data)) if not isinstance(data, memoryview) else data
    if len(data) < len(MAGIC) or bytes(data[: len(MAGIC)]) != MAGIC:
        raise PczFormatError("not a .pcz file (bad magic number)")
    pos = len(MAGIC)
    if len(data) < pos + 6:
        raise PczFormatError("truncated .pcz file (header cut off)")
    version, hlen = struct.unpack_from("<HI", data, pos)
    if version != VERSION:
        raise PczFormatError(f".pcz format version {version} is not supported (this build reads version {VERSION})")
    end = pos + 6 + hlen
    if len(data) < end + 4:
        raise PczFormatError("truncated .pcz file (header cut off)")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[pos:end]) != crc:
        raise PczFormatError("corrupt .pcz file (header checksum mismatch)")
    body = data[pos + 6 : end]
    try:
        fp, ph, pw, nv, prec, block, sha, plen, n = _FIXED.unpack_from(body, 0)
        off = _FIXED.size
        entries = []
        for _ in range(n):
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
            entries.append(Entry(h, w, kind & 15, kind >> 4, name, slen, scrc))
        if off != len(body):
            raise struct.error(f"{len(body) - off} unexplained header bytes")
    except (struct.error, UnicodeDecodeError) as err:
        raise PczFormatError(f"corrupt .pcz header ({err})") from None
    header = Header(fp, ph, pw, nv, prec, block, entries, sha, plen)
    payload = data[end + 4 :]
    if len(payload) < plen or sum(e.stream_len for e in entries) != plen:
        raise PczFormatError(f"truncated .pcz file (payload has {len(payload)} of {plen} bytes)")
    if len(payload) > plen:
        raise PczFormatError(f"corrupt .pcz file ({len(payload) - plen} trailing bytes after the payload)")
    if verify_payload and hashlib.sha256(payload).digest() != sha:
        raise PczFormatError("corrupt .pcz file (payload checksum mismatch)")
    return header, payload


def stream(header: Header, payload: memoryview, index: int) -> bytes:
    """Image ``index``'s stream, after checking its CRC-32."""
    if not 0 <= index < len(header.entries):
        raise IndexError(f"image index {index} out of range: the file holds {len(header.entries)} images")
    off = header.offsets()[index]
    e = header.entries[index]
    s = bytes(payload[off : off + e.stream_len])
    if zlib.crc32(s) != e.crc32:
        raise PczFormatError(f"corrupt .pcz file (image {index}'s stream checksum mismatch)")
    return s
