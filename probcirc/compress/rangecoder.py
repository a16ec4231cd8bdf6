"""constriction's range coder, word for word, as numba functions the codec's kernels call per symbol.

The codec's streams are those of ``constriction.stream.queue.RangeEncoder``
(32-bit words, 64-bit state, 24-bit precision; constriction 0.5,
``src/stream/queue.rs``). Calling constriction from Python costs a few
microseconds per symbol, more than computing the symbol's PMF, and a decoder
must call it once per pixel; so the same arithmetic runs here, inside the
compiled loop that computes the PMFs. Every operation is on unsigned 64-bit
integers, so the bytes are those of constriction's coder exactly
(``tests/probcirc/test_codec_speed.py`` checks both directions on random
symbols and on MNIST digits), up to the termination: :func:`seal` is
constriction's, :func:`seal_short` (``.pcz`` version 4) picks a shorter one.

A coder's state is a small ``uint64`` array: ``[lower, range, n_inverted,
first_inverted_word, words_written_or_read, failed]``; its words live in a
``uint32`` array.

Example:

    >>> import numpy as np
    >>> from probcirc.compress import rangecoder as rc
    >>> freq = np.full(256, 1 << 16, dtype=np.int64)          # uniform, sums to 2**24
    >>> st, words = rc.encoder(), np.zeros(8, np.uint32)
    >>> for s in (3, 250, 7):
    ...     rc.encode(st, words, int(freq[:s].sum()), int(freq[s]), 24)
    >>> n = rc.seal(st, words)
    >>> dec = rc.decoder(words[:n])
    >>> [rc.decode(dec, words[:n], freq, 24) for _ in range(3)]
    [3, 250, 7]
"""

from __future__ import annotations

import numpy as np
from numba import njit

LOWER, RANGE, NINV, FIRST, POS, FAILED = range(6)
POINT = NINV  # a decoder keeps its point where an encoder counts its held-back words
_WORD = np.uint64(32)
_ONE = np.uint64(1)
_WMASK = np.uint64(0xFFFFFFFF)
_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)
_SMALL = np.uint64(1 << 32)  # range below this: shift one word out
_B0, _B1, _8, _24 = np.uint64(0xFF), np.uint64(0xFF00), np.uint64(8), np.uint64(24)  # a 32-bit byte swap


def encoder() -> np.ndarray:
    """A fresh encoder's state (lower 0, range 2**64 - 1, no inverted words, nothing written)."""
    st = np.zeros(6, dtype=np.uint64)
    reset(st, np.zeros(0, np.uint32), True)
    return st


def decoder(words: np.ndarray) -> np.ndarray:
    """A decoder's state for ``words``."""
    st = np.zeros(6, dtype=np.uint64)
    reset(st, words, False)
    return st


@njit(cache=True)
def reset(st, words, encode):
    """Start ``st`` afresh: an encoder, or a decoder of ``words`` (its point: the first two words, zeros past
    the end)."""
    st[LOWER] = 0
    st[RANGE] = _MAX
    st[NINV] = 0
    st[FIRST] = 0
    st[POS] = 0
    st[FAILED] = 0
    if not encode:
        n = min(2, words.shape[0])
        point = np.uint64(0)
        for j in range(n):
            point = (point << _WORD) | np.uint64(words[j])
        if n == 1:
            point = point << _WORD
        st[POINT] = point
        st[POS] = n


@njit(cache=True)
def encode(st, words, cum, prob, precision):
    """Append the symbol with left cumulative ``cum`` and frequency ``prob`` (of 2**precision)."""
    lower, rng = st[LOWER], st[RANGE]
    scale = rng >> np.uint64(precision)
    rng = scale * np.uint64(prob)
    new_lower = lower + scale * np.uint64(cum)
    ninv = st[NINV]
    if ninv != 0 and new_lower + rng > new_lower:
        # the carry is settled: the held-back words are known now
        if new_lower < lower:
            first, cons = (st[FIRST] + _ONE) & _WMASK, np.uint64(0)
        else:
            first, cons = st[FIRST], _WMASK
        pos = np.int64(st[POS])
        words[pos] = first
        for t in range(1, np.int64(ninv)):
            words[pos + t] = cons
        st[POS] = np.uint64(pos) + ninv
        ninv = np.uint64(0)
    lower = new_lower
    if rng < _SMALL:
        rng = rng << _WORD
        lower_word = lower >> _WORD
        lower = lower << _WORD
        if ninv != 0:
            ninv += _ONE
        elif lower + rng > lower:
            words[st[POS]] = lower_word
            st[POS] += _ONE
        else:
            ninv = _ONE
            st[FIRST] = lower_word
    st[LOWER], st[RANGE], st[NINV] = lower, rng, ninv


@njit(cache=True)
def _settle_inverted(st, words, pos, point, lower):
    """Write the pending inverted words, settled by whether ``point`` carried past ``lower``; return ``pos``."""
    ninv = st[NINV]
    if ninv != 0:
        if point >= lower:
            first, cons = st[FIRST], _WMASK
        else:
            first, cons = (st[FIRST] + _ONE) & _WMASK, np.uint64(0)
        words[pos] = first
        for t in range(1, np.int64(ninv)):
            words[np.int64(pos) + t] = cons
        pos += ninv
    return pos


@njit(cache=True)
def seal(st, words):
    """Write the words that identify the final range (as constriction's ``get_compressed``); return the word count."""
    lower, rng = st[LOWER], st[RANGE]
    pos = st[POS]
    if rng == _MAX:
        return pos
    point = lower + _WMASK
    pos = _settle_inverted(st, words, pos, point, lower)
    point_word = point >> _WORD
    words[pos] = point_word
    pos += _ONE
    if ((lower + rng) >> _WORD) == point_word:
        words[pos] = 0
        pos += _ONE
    return pos


@njit(cache=True)
def seal_short(st, words):
    """Like :func:`seal`, but with the fewest significant bytes: return the word count.

    The final point may be any value in ``[lower, lower + range)``; a decoder reads zeros past the end.
    So take the one with the most trailing zero bits (``2**(32 + z)`` divides it, ``z`` <= 24), write
    its top word byte-swapped (its low bytes, zero, come last in the little-endian stream, where the
    codec drops up to 3 zero bytes) and nothing after it. :func:`unswap` undoes the swap before decoding.
    About 1.6 bytes shorter than constriction's termination on average (version-4 streams).
    """
    lower, rng = st[LOWER], st[RANGE]
    pos = st[POS]
    if rng == _MAX:
        return pos
    point = lower + _WMASK  # constriction's choice (low word dropped): always in range as range >= 2**32
    for z in range(24, -1, -8):
        m = _ONE << np.uint64(32 + z)
        cand = (lower + (m - _ONE)) & ~(m - _ONE)  # the first multiple of m at or after lower (mod 2**64)
        if cand - lower < rng:
            point = cand
            break
    point = point & ~_WMASK
    pos = _settle_inverted(st, words, pos, point, lower)
    w = point >> _WORD
    words[pos] = ((w & _B0) << _24) | ((w & _B1) << _8) | ((w >> _8) & _B1) | (w >> _24)
    return pos + _ONE


def unswap(words: np.ndarray) -> np.ndarray:
    """Undo :func:`seal_short`'s byte swap of the last word (in place; returns ``words``)."""
    if len(words):
        words[-1:] = words[-1:].byteswap()
    return words


@njit(cache=True)
def decode(st, words, freq, precision):
    """The next symbol under frequencies ``freq`` (each >= 1, summing to 2**precision); -1 on damaged data."""
    lower, rng, point = st[LOWER], st[RANGE], st[POINT]
    scale = rng >> np.uint64(precision)
    quantile = (point - lower) // scale
    if quantile >= (_ONE << np.uint64(precision)):
        st[FAILED] = _ONE
        return -1
    q = np.int64(quantile)
    cum = np.int64(0)
    s = 0
    while cum + freq[s] <= q:
        cum += freq[s]
        s += 1
    lower = lower + scale * np.uint64(cum)
    rng = scale * np.uint64(freq[s])
    if rng < _SMALL:
        lower = lower << _WORD
        rng = rng << _WORD
        point = point << _WORD
        pos = st[POS]
        if pos < np.uint64(words.shape[0]):
            point = point | np.uint64(words[pos])
            st[POS] = pos + _ONE
    st[LOWER], st[RANGE], st[POINT] = lower, rng, point
    return s
