"""The ``.pcz`` container: header, per-image stream table, payload and checksums.

Layout (all integers little-endian)::

    magic        8 bytes  89 50 43 5A 0D 0A 1A 0A  ("\\x89PCZ\\r\\n\\x1a\\n")
    version      u16      4 (versions 1 to 3 are still read)
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
        group         varint    images per integrity check (the last check may cover fewer)
        n_runs        varint
        n_runs x { count varint, height varint, width varint, kind u8 (mode: low 4 bits, 0 L / 1 RGB;
                   source: bits 4-6, 0 image file / 1 array element; coding: bit 7, 0 model / 1 raw),
                   pack varint (version 4: images per stream, 1 for raw runs),
                   shift u8 (lengths in units of 2**shift bytes, 0..2), center varint, k u8,
                   lengths_len varint, lengths (lengths_len bytes),
                   and when shift > 0: n_short varint, n_short x { short varint } }
        n_named       varint
        n_named x { gap varint (images skipped since the previous named one), name_len varint, name (UTF-8) }
        checks        ceil(n_images / group) x u32: CRC-32 of each group's streams, concatenated
    (varint = unsigned LEB128: 7 bits per byte, low first, high bit set on all but the last)
    header_crc   u32      CRC-32 of version, header_len and header
    payload      the image streams, concatenated in order

A run is ``count`` consecutive images of one size and kind. In version 4 a
model-coded run codes ``pack`` consecutive images (the last pack of a run may hold
fewer) as ONE stream: their patches in image order form its rows, as the patches
of one larger image would, so a stream's range coder is terminated once per pack
instead of once per image (about 2 bytes per 28x28 digit, issue #17). Its ``lengths`` are
the lengths of its ``ceil(count / pack)`` streams in units of ``u = 2**shift`` bytes, rounded up
(``ceil(length / u)``), Rice-coded (:mod:`.rice`): for each image, ``v`` =
zigzag(units - center) (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...) as ``v >> k`` in unary
(that many 1 bits, then a 0) and the low ``k`` bits of ``v``; ``v >> k`` of
:data:`.rice.ESCAPE` or more is written as that many 1 bits and ``v`` in 64 bits.
Bits go most significant first, zero-padded to a byte. When ``shift`` > 0 the
images whose length is not a whole number of units follow: ``n_short``, then for
each, in order, ``short`` = gap * (u - 1) + drop - 1, where ``gap`` counts the run's
images since the previous short one and the stream is ``drop`` (1 .. u - 1) bytes
shorter than its units (``gap`` and ``short`` count streams). The writer picks the median as ``center``, and the ``k``
and ``shift`` that make the run shortest: range-coded MNIST digits are whole 32-bit
words 98% of the time, so a run of them costs about 6.5 bits per image (issue #17).

Versions 1 and 2 store, per image, ``height`` varint, ``width`` varint, ``kind`` u8
(version 1: source in the high 4 bits, no coding bit), ``name_len`` varint, ``name``,
``stream_len`` varint and its own ``stream_crc32`` u32 (a group of one).

Each stream is the byte lengths of its blocks but the last (LEB128 varints; the
number of blocks follows from the images' size, so a one-block stream has none), then the
blocks: range-coder words (u32, little-endian) with up to 3 trailing zero bytes dropped.
An image is decodable without the other streams: its stream's offset is the sum of the
previous stream lengths, and its group's CRC-32 is checked before decoding it. A group
covers the streams whose first image is among its ``group`` images.

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
import math
import struct
import unicodedata
import zlib
from dataclasses import dataclass, field

from probmod.errors import LimitError

from .. import io
from . import rice

MAGIC = b"\x89PCZ\r\n\x1a\n"
VERSION = 4
#: versions :func:`unpack` reads
READ_VERSIONS = (1, 2, 3, 4)
#: most images one stream may hold (a reader's bound: a file of n images has at least n / MAX_PACK payload bytes)
MAX_PACK = 64
#: images per CRC-32 that :func:`pack` writes (4 bytes per 256 images: 0.00016 bits per MNIST pixel)
GROUP = 256
#: codings of an image's stream
MODEL, RAW = 0, 1
#: most values (pixels x channels) a file may declare unless the reader raises it: 64 Mi,
#: e.g. a 22-megapixel RGB photograph or 85,000 MNIST digits
MAX_VALUES = 1 << 26
#: Decoding time grows with the values a model-coded stream declares and with the model's cost per value,
#: not with the stream's bytes, so (as a decompression bomb's ratio check) the work a file asks for is
#: bounded per stream byte. Work is counted in units: a value costs ``Program.work_per_value`` units (the
#: circuit's edges plus its leaf-table entries, per variable: what coding one value touches). A file may
#: ask for ``MAX_RATIO * WORK_UNIT`` units per stream byte (32 values per byte of a model of WORK_UNIT
#: units per value), and WORK_FLOOR units whatever its size. Calibration (docs/security.md): about 2.6 ns
#: of CPU per unit here, so a 64 KB file gets at most 2.2e9 units, about 5.7 CPU-s, 2.9 s on 2 threads.
MAX_RATIO = 32
WORK_UNIT = 1024
WORK_FLOOR = 1 << 28
#: longest stored name in UTF-8 bytes (longer names are cut at a character boundary)
MAX_NAME_BYTES = 200
#: largest unit of a run's stream lengths, log2 bytes (2: 32-bit words, the range coder's)
MAX_SHIFT = 2
_PLANES = {0: 1, 1: 3}  # mode -> planes (L, RGB)


class PczFormatError(io.FormatError):
    """Not a .pcz file, or a truncated, corrupt or unsupported one."""


@dataclass(slots=True)
class Entry:
    height: int
    width: int
    mode: int
    source: int = 0
    name: str = ""
    stream_len: int = 0
    coding: int = MODEL
    #: images coded in the stream that starts at this one (itself included); 0: inside an earlier image's stream
    pack: int = 1

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
    #: images per integrity check, and each group's CRC-32 (versions 1 and 2: one per image)
    group: int = GROUP
    checks: list[int] = field(default_factory=list)

    def group_range(self, g: int) -> range:
        """The indices of the images that check ``g`` covers."""
        return range(g * self.group, min((g + 1) * self.group, len(self.entries)))

    def group_bytes(self, payload, g: int):
        """The streams of group ``g``, concatenated (what its CRC-32 covers)."""
        r = self.group_range(g)
        if not r:
            return payload[0:0]
        last = self.entries[r[-1]]
        return payload[self.offset(r[0]) : self.offset(r[-1]) + last.stream_len]

    def damaged(self, g: int) -> str:
        """Which images a failed check ``g`` names (with the rest of its last stream's images)."""
        r = self.group_range(g)
        end = r[-1] + 1 if r else 0
        while 0 < end < len(self.entries) and self.entries[end].pack == 0:
            end += 1
        r = range(r.start, end)
        return f"image {r[0]}'s stream" if len(r) == 1 else f"the streams of images {r[0]}-{r[-1]}"

    def lead(self, index: int) -> int:
        """The image whose stream holds image ``index`` (``index`` itself unless it is packed with earlier ones)."""
        while index > 0 and self.entries[index].pack == 0:
            index -= 1
        return index

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


def _kind(e: Entry) -> int:
    return e.mode | (e.source << 4) | (e.coding << 7)


def runs(entries: list[Entry]) -> list[range]:
    """Consecutive images of one size, mode, source and coding (a header stores each run's size and kind once)."""
    runs: list[range] = []
    for i, e in enumerate(entries):
        p = entries[i - 1] if i else None
        if p is not None and (p.height, p.width, _kind(p)) == (e.height, e.width, _kind(e)):
            runs[-1] = range(runs[-1].start, i + 1)
        else:
            runs.append(range(i, i + 1))
    return runs


def _fixed(header: Header) -> bytes:
    h = header
    fields = (h.fingerprint, h.patch_h, h.patch_w, h.num_values, h.precision, h.block, h.payload_sha, h.payload_len)
    return _FIXED.pack(*fields, len(h.entries))


def header_bytes_v12(header: Header, version: int) -> bytes:
    """The header as versions 1 and 2 wrote it, ``header.checks`` holding one CRC-32 per image.

    This build writes version 3 only; tests and the fuzzer make older files with this.
    """
    parts = [_fixed(header)]
    for e, crc in zip(header.entries, header.checks, strict=True):
        name = _cut(e.name)
        kind = e.mode | (e.source << 4) | (e.coding << 7 if version > 1 else 0)
        parts += [_varint(e.height), _varint(e.width), bytes([kind]), _varint(len(name)), name]
        parts += [_varint(e.stream_len), struct.pack("<I", crc)]
    return b"".join(parts)


def _lengths_in(lengths: list[int], shift: int) -> bytes:
    """``lengths`` in units of ``2**shift`` bytes, rounded up and Rice-coded, then (``shift`` > 0) the short ones."""
    unit = 1 << shift
    center, k, bits = rice.encode([-(-n // unit) for n in lengths])
    out = [bytes([shift]), _varint(center), bytes([k]), _varint(len(bits)), bits]
    if shift:
        short = [(i, -n % unit) for i, n in enumerate(lengths) if n % unit]
        out.append(_varint(len(short)))
        prev = -1
        for i, drop in short:
            out.append(_varint((i - prev - 1) * (unit - 1) + drop - 1))
            prev = i
    return b"".join(out)


def _run_lengths(lengths: list[int]) -> bytes:
    """A run's stream lengths in the unit (byte, 2 bytes or 32-bit word) that codes them shortest.

    Range-coded MNIST digits are whole 32-bit words in 98% of cases, so counting in
    words saves 2 bits on most images for a varint on the others (issue #17).
    """
    return min((_lengths_in(lengths, shift) for shift in range(MAX_SHIFT + 1)), key=len)


def _read_run_lengths(body, off: int, count: int) -> tuple[list[int], int]:
    """The ``count`` stream lengths that :func:`_run_lengths` wrote at ``off``, and the offset after them."""
    shift, off = _byte(body, off)
    center, off = _read_varint(body, off)
    k, off = _byte(body, off)
    blen, off = _read_varint(body, off)
    bits, off = _take(body, off, blen)
    if shift > MAX_SHIFT:
        raise struct.error(f"stream lengths in units of 2**{shift} bytes")
    unit = 1 << shift
    lengths = [unit * n for n in rice.decode(bits, count, center, k)]  # refuses a count its bytes cannot hold
    if shift:
        n_short, off = _read_varint(body, off)
        if n_short > count:
            raise struct.error(f"{n_short} short streams in a run of {count}")
        index = -1
        for _ in range(n_short):
            code, off = _read_varint(body, off)
            gap, drop = divmod(code, unit - 1)
            index += gap + 1
            if index >= count or lengths[index] <= drop:
                raise struct.error(f"a short stream at image {index} of a run of {count}")
            lengths[index] -= drop + 1
    return lengths, off


def _run_pack(entries: list[Entry], run: range) -> int:
    """The images per stream of ``run``: its first entry's ``pack``, checked against the others'."""
    size = entries[run.start].pack
    if not 1 <= size <= MAX_PACK or (size > 1 and entries[run.start].coding == RAW):
        raise ValueError(f"image {run.start} starts a stream of {size} images (1 to {MAX_PACK}; raw images: 1)")
    for i in run:
        j = i - run.start
        want = min(size, len(run) - j) if j % size == 0 else 0
        if entries[i].pack != want or (want == 0 and entries[i].stream_len):
            raise ValueError(f"image {i}: pack {entries[i].pack}, but its run's streams of {size} images need {want}")
    return size


def header_bytes(header: Header, version: int | None = None) -> bytes:
    """The header (version 3 or 4; default ``header.version``) of ``header`` as it stands: its entries' stream
    lengths and checks, unverified. Version 3 has no packs (every entry's ``pack`` must be 1).
    """
    version = header.version if version is None else version
    entries = header.entries
    parts = [_fixed(header), _varint(header.group)]
    spans = runs(entries)
    parts.append(_varint(len(spans)))
    for run in spans:
        e = entries[run.start]
        size = _run_pack(entries, run)
        if version < 4 and size != 1:
            raise ValueError("version 3 stores one image per stream")
        parts += [_varint(len(run)), _varint(e.height), _varint(e.width), bytes([_kind(e)])]
        parts += [_varint(size)] if version >= 4 else []
        parts.append(_run_lengths([entries[i].stream_len for i in run[::size]]))
    named = [(i, _cut(e.name)) for i, e in enumerate(entries) if e.name]
    parts.append(_varint(len(named)))
    prev = -1
    for i, name in named:
        parts += [_varint(i - prev - 1), _varint(len(name)), name]
        prev = i
    parts.append(struct.pack(f"<{len(header.checks)}I", *header.checks))
    return b"".join(parts)


def seal(body: bytes, payload: bytes, version: int = VERSION) -> bytes:
    """A whole file: magic, ``version``, the header ``body`` and its CRC-32, then ``payload``."""
    lead = struct.pack("<HI", version, len(body))
    return MAGIC + lead + body + struct.pack("<I", zlib.crc32(lead + body)) + payload


def pack(header: Header, streams: list[bytes], group: int = GROUP) -> bytes:
    """The ``.pcz`` bytes (version :data:`VERSION`) of ``header`` and its images' ``streams``; a CRC-32 per ``group``.

    Example:
        >>> h = Header(b"\\0" * 32, 4, 4, 256, 24, 64, [Entry(28, 28, 0) for _ in range(3)])
        >>> blob = pack(h, [b"ab", b"cde", b"f"])
        >>> back, payload = unpack(blob)
        >>> [e.stream_len for e in back.entries], stream(back, payload, 1)
        ([2, 3, 1], b'cde')
    """
    if group < 1:
        raise ValueError(f"group must be at least 1, not {group}")
    payload = b"".join(streams)
    for e, s in zip(header.entries, streams):
        e.stream_len = len(s)
    header.version, header.group = VERSION, group
    header.payload_sha = hashlib.sha256(payload).digest()
    header.payload_len = len(payload)
    header.checks = [zlib.crc32(header.group_bytes(payload, g)) for g in range(-(-len(header.entries) // group))]
    return seal(header_bytes(header), payload)


def _byte(body, off: int) -> tuple[int, int]:
    if off >= len(body):
        raise struct.error("header cut off")
    return body[off], off + 1


def _take(body, off: int, n: int) -> tuple[bytes, int]:
    if off + n > len(body):
        raise struct.error("header cut off")
    return bytes(body[off : off + n]), off + n


def _entries_v12(body, version: int) -> tuple[list[Entry], list[int]]:
    """Versions 1 and 2: every image's size, kind, name, stream length and CRC-32 in turn."""
    (n,) = struct.unpack_from("<I", body, _FIXED.size - 4)
    off = _FIXED.size
    entries, checks = [], []
    for _ in range(n):  # each entry takes at least 8 bytes, so a false count fails at the header's end
        h, off = _read_varint(body, off)
        w, off = _read_varint(body, off)
        kind, off = _byte(body, off)
        nlen, off = _read_varint(body, off)
        name, off = _take(body, off, nlen)
        slen, off = _read_varint(body, off)
        (scrc,) = struct.unpack_from("<I", body, off)
        off += 4
        source, coding = (kind >> 4, MODEL) if version == 1 else ((kind >> 4) & 7, kind >> 7)
        entries.append(Entry(h, w, kind & 15, source, name.decode("utf-8"), slen, coding))
        checks.append(scrc)
    if off != len(body):
        raise struct.error(f"{len(body) - off} unexplained header bytes")
    return entries, checks


def _entries_v3(body, version: int = VERSION) -> tuple[list[Entry], int, list[int]]:
    """Versions 3 and 4: runs of one size and kind (4: and images per stream) with Rice-coded stream lengths,
    then the names, then the checks."""
    (n,) = struct.unpack_from("<I", body, _FIXED.size - 4)
    group, off = _read_varint(body, _FIXED.size)
    n_runs, off = _read_varint(body, off)
    if group < 1 or n_runs > n:
        raise struct.error(f"{n_runs} runs of images in groups of {group} for {n} images")
    entries: list[Entry] = []
    for _ in range(n_runs):
        count, off = _read_varint(body, off)
        h, off = _read_varint(body, off)
        w, off = _read_varint(body, off)
        kind, off = _byte(body, off)
        size, off = _read_varint(body, off) if version >= 4 else (1, off)
        if not 0 < count <= n - len(entries):
            raise struct.error(f"a run of {count} images after {len(entries)} of {n}")
        if not 1 <= size <= MAX_PACK or (size > 1 and kind >> 7 == RAW):
            raise struct.error(f"a run of {count} images in streams of {size}")
        lengths, off = _read_run_lengths(body, off, -(-count // size))
        for j, ln in enumerate(lengths):
            first = Entry(h, w, kind & 15, (kind >> 4) & 7, "", ln, kind >> 7, min(size, count - j * size))
            rest = [Entry(h, w, first.mode, first.source, "", 0, first.coding, 0) for _ in range(first.pack - 1)]
            entries += [first] + rest
    if len(entries) != n:
        raise struct.error(f"the runs hold {len(entries)} of {n} images")
    n_named, off = _read_varint(body, off)
    index = -1
    for _ in range(min(n_named, n + 1)):  # a false count fails at an index past the last image
        gap, off = _read_varint(body, off)
        nlen, off = _read_varint(body, off)
        name, off = _take(body, off, nlen)
        index += gap + 1
        if index >= n:
            raise struct.error(f"a name for image {index} of {n}")
        entries[index].name = name.decode("utf-8")
    n_checks = -(-n // group)
    if len(body) - off != 4 * n_checks:
        raise struct.error(f"{len(body) - off} bytes where {n_checks} checks take {4 * n_checks}")
    return entries, group, list(struct.unpack_from(f"<{n_checks}I", body, off))


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
        if e.pack == 0:
            continue  # inside the stream of an earlier image of its run, checked with it
        if e.coding == RAW:
            least = 1 + (e.values + 7) // 8  # 1 to 8 bits per value, after the width byte
            most = 1 + e.values
        else:
            blocks = -(-e.pack * _PLANES[e.mode] * -(-e.height // ph) * -(-e.width // pw) // block)
            least, most = 2 * blocks - 1, None  # a table byte per block but the last, a byte at least per block
        if e.stream_len < least or (most is not None and e.stream_len > most):
            what = f"image {i} declares" if e.pack == 1 else f"images {i}-{i + e.pack - 1} declare"
            raise PczFormatError(
                f"corrupt .pcz file ({what} {e.width}x{e.height} but the stream holds {e.stream_len} bytes)"
            )


def check_work(header: Header, work_per_value: int, max_ratio: float | None = MAX_RATIO) -> int:
    """Refuse a file whose model-coded images ask for more decoding work than their bytes allow; return the work.

    Work = declared values x ``work_per_value`` (:attr:`Program.work_per_value
    <probcirc.compress.program.Program.work_per_value>`); allowed: ``max_ratio * WORK_UNIT`` units per
    stream byte, and :data:`WORK_FLOOR` units in any case. Raw images are exempt (at most 8 values per
    byte, and fast). ``max_ratio`` None: no limit. Deterministic: it reads only the header and the model.

    Raises:
        LimitError: over the budget (exit 7; ``--max-work`` raises it).
    """
    coded = [e for e in header.entries if e.coding == MODEL]
    values, nbytes = sum(e.values for e in coded), sum(e.stream_len for e in coded)
    work = values * int(work_per_value)
    if max_ratio is not None and work > max(WORK_FLOOR, max_ratio * WORK_UNIT * nbytes):
        need = work / (WORK_UNIT * max(nbytes, 1))
        raise LimitError(
            f"the file's model-coded images declare {values} values in {nbytes} bytes: {work:.3g} units of "
            f"decoding work ({work_per_value} per value with this model), {need:.3g} per byte over the limit "
            f"{max_ratio:g}; raise it (--max-work {math.ceil(need)}) if the file is trusted"
        )
    return work


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
    payload = data[end + 4 :]
    try:
        fp, ph, pw, nv, prec, block, sha, plen, n = _FIXED.unpack_from(body, 0)
        # every stream takes a byte at least: no entry is made for bytes that are not there
        if n > (1 if version < 4 else MAX_PACK) * len(payload):
            raise struct.error(f"{n} images cannot fit in a payload of {len(payload)} bytes")
        if version < 3:
            entries, checks = _entries_v12(body, version)
            group = 1
        else:
            entries, group, checks = _entries_v3(body, version)
    except (struct.error, ValueError) as err:  # ValueError: bad UTF-8 in a name, or bad Rice-coded lengths
        raise PczFormatError(f"corrupt .pcz header ({err})") from None
    header = Header(fp, ph, pw, nv, prec, block, entries, sha, plen, version, group, checks)
    if len(payload) < plen or sum(e.stream_len for e in entries) != plen:
        raise PczFormatError(f"truncated .pcz file (payload has {len(payload)} of {plen} bytes)")
    if len(payload) > plen:
        raise PczFormatError(f"corrupt .pcz file ({len(payload) - plen} trailing bytes after the payload)")
    check_sizes(header, max_values)
    if verify_payload and hashlib.sha256(payload).digest() != sha:
        bad = [g for g in range(len(checks)) if zlib.crc32(header.group_bytes(payload, g)) != checks[g]]
        where = f": {header.damaged(bad[0])} damaged" if bad else ""
        more = f", and {len(bad) - 1} more groups of images" if len(bad) > 1 else ""
        raise PczFormatError(f"corrupt .pcz file (payload checksum mismatch{where}{more})")
    return header, payload


def stream(header: Header, payload: memoryview, index: int) -> bytes:
    """The stream that starts at image ``index`` (with ``entries[index].pack`` images; empty for an image
    inside an earlier one's stream, :meth:`Header.lead`), after checking its group's CRC-32 (once per group)."""
    if not 0 <= index < len(header.entries):
        raise IndexError(f"image index {index} out of range: the file holds {len(header.entries)} images")
    g = index // header.group
    verified = header.__dict__.setdefault("_verified", set())
    if g not in verified:
        if zlib.crc32(header.group_bytes(payload, g)) != header.checks[g]:
            raise PczFormatError(f"corrupt .pcz file ({header.damaged(g)}: checksum mismatch)")
        verified.add(g)
    off = header.offset(index)
    return bytes(payload[off : off + header.entries[index].stream_len])
