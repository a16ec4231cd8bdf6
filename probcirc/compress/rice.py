"""Rice codes for lists of integers near a centre: the stream lengths of a ``.pcz`` run (issue #17).

Each value ``x`` is written as ``v = zigzag(x - center)`` (0, -1, 1, -2, ... become
0, 1, 2, 3, ...): ``v >> k`` in unary (that many 1 bits, then a 0) and the low ``k``
bits of ``v``. A quotient of :data:`ESCAPE` or more is written as :data:`ESCAPE` 1 bits
then ``v`` in 64 bits, so no value costs more than 88 bits however far it lies from
the centre. Bits go most significant first, zero-padded to a whole byte.

Example:
    >>> lengths = [120, 152, 80, 131]
    >>> center, k, data = encode(lengths)
    >>> decode(data, len(lengths), center, k) == lengths, len(data)
    (True, 4)
"""

from __future__ import annotations

from collections.abc import Sequence

#: quotients from this on are escaped (the value follows in 64 bits)
ESCAPE = 24
#: largest ``k`` a writer picks or a reader accepts
MAX_K = 62


def _zigzag(d: int) -> int:
    return 2 * d if d >= 0 else -2 * d - 1


def _cost(vs: Sequence[int], k: int) -> int:
    return sum(k + 1 + (v >> k) if v >> k < ESCAPE else ESCAPE + 64 for v in vs)


def encode(values: Sequence[int], center: int | None = None, k: int | None = None) -> tuple[int, int, bytes]:
    """``(center, k, bytes)`` coding ``values`` (each 0 .. 2**62); by default the median and the shortest ``k``."""
    if center is None:
        center = sorted(values)[len(values) // 2] if len(values) else 0
    vs = [_zigzag(x - center) for x in values]
    if k is None:
        k = min(range(MAX_K + 1), key=lambda j: _cost(vs, j))
    bits = []
    for v in vs:
        q = v >> k
        if q < ESCAPE:
            bits.append("1" * q + "0" + (format(v & ((1 << k) - 1), f"0{k}b") if k else ""))
        else:
            bits.append("1" * ESCAPE + format(v, "064b"))
    text = "".join(bits)
    text += "0" * (-len(text) % 8)
    return center, k, int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def decode(data: bytes, count: int, center: int, k: int) -> list[int]:
    """The ``count`` values that :func:`encode` wrote into ``data``.

    Raises:
        ValueError: ``data`` ends early, holds bytes beyond the values' last one, or decodes to a negative value.
    """
    if k > MAX_K:
        raise ValueError(f"Rice parameter {k} over {MAX_K}")
    if count > 8 * len(data):  # every value takes a bit at least: refuse before looping
        raise ValueError(f"{count} values cannot fit in {len(data)} bytes")
    text = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
    out: list[int] = []
    pos = 0
    for _ in range(count):
        zero = text.find("0", pos, pos + ESCAPE)
        if zero < 0:
            start, pos = pos + ESCAPE, pos + ESCAPE + 64
            v = 0
        else:
            v = (zero - pos) << k
            start, pos = zero + 1, zero + 1 + k
        if pos > len(text):
            raise ValueError("lengths cut off")
        v |= int(text[start:pos], 2) if pos > start else 0
        x = center + (v >> 1 if not v & 1 else -(v >> 1) - 1)
        if x < 0:
            raise ValueError(f"negative length {x}")
        out.append(x)
    if (len(text) - pos) >= 8:
        raise ValueError(f"{(len(text) - pos) // 8} unexplained bytes after the lengths")
    return out
