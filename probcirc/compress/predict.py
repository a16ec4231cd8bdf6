"""Reversible spatial prediction: code each pixel's residual from its causal neighbours.

``"med"`` is the median edge detector of LOCO-I / JPEG-LS: with a the left, b
the upper and c the upper-left neighbour, the prediction is min(a, b) when
c >= max(a, b), max(a, b) when c <= min(a, b), else a + b - c. The first row
predicts from the left, the first column from above, the first pixel is
predicted as 128. The stored residual is ``(x - prediction + 128) mod 256``:
still one byte, 128 meaning "as predicted".

The transform is a bijection on 8-bit planes: decoding rebuilds the pixels in
raster order from the residuals, each prediction reading only pixels already
rebuilt. Residuals of photographs are far more concentrated than their
pixels, so a circuit over residual patches codes them in fewer bits; on
drawings with large flat areas, such as MNIST digits, raw pixels code better.

``"blend"`` adapts to each image as it goes, in integer arithmetic only (so
encoder and decoder agree on every machine). Six predictions (MED, W, N,
W+N-NW, (W+NE)/2, W+NE-N) are averaged with weights ``2**30 // (e + 1)**2``,
where e sums each one's absolute errors at the causal neighbours W, N, NW, NE
(and half those at WW and NN): whichever predictor has been right nearby
counts most, as in JPEG-XL's weighted predictor, whose clamp to the range of
W, N and NE it also takes. Then a bias correction as in CALIC: per context (8
activity levels x the signs of W, N and NW against the prediction) the mean
error so far (counts halved at 128) is added. Values are read as residues mod
256, each neighbour as the one nearest W: YCoCg-R chroma planes wrap from 255
to 0, where an average of raw values would predict mid-grey (adding a constant
mod 256 to a plane changes only its first residual). Borders read the nearest
causal pixel; the first pixel is predicted as 128.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PREDICTORS = ("none", "med", "blend", "guided")

#: the blend's sub-predictors, and the count at which a bias context's running sums are halved
_K = 6
_BIAS_HALVE = 128
#: no guide, no errors recorded (:func:`_blend`)
_NONE = np.zeros((_K, 0, 0), np.int64)


@njit(cache=True, inline="always")
def _med(x, i, j):
    if i == 0 and j == 0:
        return 128
    if i == 0:
        return x[i, j - 1]
    if j == 0:
        return x[i - 1, j]
    a, b, c = x[i, j - 1], x[i - 1, j], x[i - 1, j - 1]
    if c >= max(a, b):
        return min(a, b)
    if c <= min(a, b):
        return max(a, b)
    return a + b - c


@njit(cache=True)
def _med_residuals(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i, j] = (x[i, j] - _med(x, i, j) + 128) & 255
    return out


@njit(cache=True)
def _med_restore(r):
    x = np.empty_like(r)
    for i in range(r.shape[0]):
        for j in range(r.shape[1]):
            x[i, j] = (r[i, j] + _med(x, i, j) - 128) & 255
    return x


@njit(cache=True, inline="always")
def _causal(x, i, j):
    """W, N, NW, NE, WW, NN of pixel (i, j), each falling back to the nearest causal pixel at a border."""
    w = x.shape[1]
    if i == 0:
        if j == 0:
            return 128, 128, 128, 128, 128, 128
        W = x[i, j - 1]
        return W, W, W, W, (x[i, j - 2] if j > 1 else W), W
    N = x[i - 1, j]
    W = x[i, j - 1] if j > 0 else N
    NW = x[i - 1, j - 1] if j > 0 else N
    NE = x[i - 1, j + 1] if j + 1 < w else N
    WW = x[i, j - 2] if j > 1 else W
    NN = x[i - 2, j] if i > 1 else N
    return W, N, NW, NE, WW, NN


@njit(cache=True, inline="always")
def _near(v, ref):
    """The integer congruent to v mod 256 nearest ref (in ref - 128 .. ref + 127)."""
    return ref + ((v - ref + 128) & 255) - 128


@njit(cache=True)
def _blend(x, r, forward, G, E):
    """Blend residuals of ``x`` into ``r`` (forward) or pixels from ``r`` into ``x``; one loop, so both agree.

    ``G``: empty ``(K, 0, 0)``, or each sub-predictor's error at every pixel of an earlier plane (guided
    chroma: counted twice with its own causal errors). ``E``: empty, or ``(K, h, w)`` to receive this
    plane's errors."""
    h, w = x.shape
    guided = G.shape[1] > 0
    record = E.shape[1] > 0
    err = np.zeros((_K, 3, w), np.int64)  # |error| of each sub-predictor, rows i % 3 (i, i-1, i-2)
    bsum = np.zeros(64, np.int64)
    bcnt = np.zeros(64, np.int64)
    ps = np.zeros(_K, np.int64)
    for i in range(h):
        c0, c1, c2 = i % 3, (i + 2) % 3, (i + 1) % 3
        for j in range(w):
            W, N, NW, NE, WW, NN = _causal(x, i, j)
            # values are residues mod 256 (chroma planes wrap): read each neighbour as the one nearest W
            N, NW, NE = _near(N, W), _near(NW, W), _near(NE, W)
            hi, lo = max(W, N), min(W, N)
            ps[0] = lo if hi <= NW else (hi if lo >= NW else W + N - NW)
            ps[1] = W
            ps[2] = N
            ps[3] = W + N - NW
            ps[4] = (W + NE + 1) >> 1
            ps[5] = W + NE - N
            num = 0
            den = 0
            for k in range(_K):
                e = 0
                if j > 0:
                    e += err[k, c0, j - 1]
                if i > 0:
                    e += err[k, c1, j] + (err[k, c1, j - 1] if j > 0 else 0)
                    e += err[k, c1, j + 1] if j + 1 < w else err[k, c1, j]
                if j > 1:
                    e += err[k, c0, j - 2] >> 1
                if i > 1:
                    e += err[k, c2, j] >> 1
                if guided:
                    e += 2 * G[k, i, j]
                wk = (1 << 30) // ((e + 1) * (e + 1))
                num += wk * ps[k]
                den += wk
            p = (num + (den >> 1)) // den
            p = min(max(W, N, NE), max(min(W, N, NE), p))  # as JPEG-XL's weighted predictor
            act = abs(W - NW) + abs(N - NW) + abs(N - NE)
            q = 0
            while act > 1 and q < 7:
                act >>= 1
                q += 1
            ctx = 8 * q + (4 if p < W else 0) + (2 if p < N else 0) + (1 if p < NW else 0)
            n = bcnt[ctx]
            if n > 0:
                s = bsum[ctx]
                p += (2 * s + n) // (2 * n) if s >= 0 else -((n - 2 * s) // (2 * n))
            if forward:
                r[i, j] = (x[i, j] - p + 128) & 255
            else:
                x[i, j] = (r[i, j] + p - 128) & 255
            v = _near(x[i, j], p)
            if i + j == 0:  # 128 is a guess, not a prediction: no bias to learn from it
                continue
            bsum[ctx] += v - p
            bcnt[ctx] = n + 1
            if n + 1 >= _BIAS_HALVE:
                s = bsum[ctx]
                bsum[ctx] = s // 2 if s >= 0 else -((-s) // 2)
                bcnt[ctx] = (n + 1) // 2
            for k in range(_K):
                err[k, c0, j] = abs(_near(v, ps[k]) - ps[k])
                if record:
                    E[k, i, j] = err[k, c0, j]
    return r if forward else x


def check_predictor(name: str) -> str:
    if name not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {name!r}")
    return name


def residuals(plane: np.ndarray, predictor: str) -> np.ndarray:
    """The plane's residuals under ``predictor`` (uint8, same shape); ``"none"`` returns the plane.

    Example:
        >>> p = np.array([[10, 12], [11, 40]], dtype=np.uint8)
        >>> residuals(p, "med").tolist()      # 128 = exactly as predicted
        [[10, 130], [129, 156]]
        >>> bool((restore(residuals(p, "med"), "med") == p).all())
        True
    """
    if check_predictor(predictor) == "none":
        return plane
    x = np.ascontiguousarray(plane, dtype=np.int64)
    if predictor in ("blend", "guided"):
        return _blend(x, np.empty_like(x), True, _NONE, _NONE).astype(np.uint8)
    return _med_residuals(x).astype(np.uint8)


def restore(res: np.ndarray, predictor: str) -> np.ndarray:
    """Invert :func:`residuals` exactly."""
    if check_predictor(predictor) == "none":
        return res
    r = np.ascontiguousarray(res, dtype=np.int64)
    if predictor in ("blend", "guided"):
        return _blend(np.empty_like(r), r, False, _NONE, _NONE).astype(np.uint8)
    return _med_restore(r).astype(np.uint8)


def _first_plane_errors(plane: np.ndarray) -> np.ndarray:
    """Each blend sub-predictor's error at every pixel of ``plane`` (the guide of the planes after it)."""
    x = np.ascontiguousarray(plane, dtype=np.int64)
    E = np.zeros((_K, *x.shape), np.int64)
    _blend(x, np.empty_like(x), True, _NONE, E)
    return E


def image_residuals(planes: list[np.ndarray], predictor: str) -> list[np.ndarray]:
    """:func:`residuals` of an image's planes; ``"guided"`` predicts the planes after the first (chroma) with
    the blend, each sub-predictor weighed also by its error on the first plane at the same pixel.

    Example:
        >>> import numpy as np
        >>> y = np.add.outer(np.arange(6), np.arange(7)).astype(np.uint8) * 9
        >>> planes = [y, (y // 3).astype(np.uint8), (255 - y).astype(np.uint8)]
        >>> res = image_residuals(planes, "guided")
        >>> bool((res[0] == residuals(y, "blend")).all())   # the first plane is plain blend
        True
        >>> all((a == b).all() for a, b in zip(image_restore(res, "guided"), planes))
        True
    """
    if check_predictor(predictor) != "guided" or len(planes) == 1:
        return [residuals(p, predictor) for p in planes]
    G = _first_plane_errors(planes[0])
    out = [residuals(planes[0], "blend")]
    for p in planes[1:]:
        x = np.ascontiguousarray(p, dtype=np.int64)
        out.append(_blend(x, np.empty_like(x), True, G, _NONE).astype(np.uint8))
    return out


def image_restore(res: list[np.ndarray], predictor: str) -> list[np.ndarray]:
    """Invert :func:`image_residuals` exactly: the first plane, then its errors, then the others."""
    if check_predictor(predictor) != "guided" or len(res) == 1:
        return [restore(r, predictor) for r in res]
    first = restore(res[0], "blend")
    G = _first_plane_errors(first)
    out = [first]
    for q in res[1:]:
        r = np.ascontiguousarray(q, dtype=np.int64)
        out.append(_blend(np.empty_like(r), r, False, G, _NONE).astype(np.uint8))
    return out


def choose(planes: list[np.ndarray]) -> str:
    """The predictor whose values have the lowest empirical (order-0) entropy over ``planes``.

    A cheap proxy for which representation the circuit will code better: it
    picks ``"blend"`` for photographs and ``"none"`` for MNIST-like drawings
    (ties go to the earlier of :data:`PREDICTORS`).
    """

    def entropy(arrays) -> float:
        counts = np.zeros(256, np.int64)
        for a in arrays:
            counts += np.bincount(np.asarray(a, dtype=np.int64).ravel(), minlength=256)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())

    scores = [entropy([residuals(p, name) for p in planes]) for name in PREDICTORS]
    return PREDICTORS[int(np.argmin(scores))]
