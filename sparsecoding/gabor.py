"""A quality measure for learned dictionaries that needs no human: how well 2-D Gabor functions fit them.

Dictionaries learned from whitened natural image patches should look like
localised, oriented, band-pass filters (Olshausen & Field 1996), which a 2-D
Gabor function describes. For each field (a column of ``W``, as a ``h x w``
image) :func:`fit_gabor` fits

    g(x, y) = A exp(-u²/(2 σu²) - v²/(2 σv²)) cos(2π f u + φ),
    u = (x - x0) cos θ + (y - y0) sin θ,  v = -(x - x0) sin θ + (y - y0) cos θ

by least squares (``scipy.optimize.least_squares`` with the analytic Jacobian)
from several starts, and reports ``R² = 1 - SS_res / SS_tot``. :func:`gabor_summary`
then gives the share of fields with ``R² >= 0.7`` and how the well-fitted
ones cover orientations and spatial frequencies.

``θ`` is the direction of the carrier (the field's stripes run at ``θ + 90°``);
orientations are reported in degrees in [0, 180) and frequencies in cycles
per pixel (at most 0.5, the Nyquist limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FREQ_BINS",
    "GOOD_R2",
    "N_ORIENTATION_BINS",
    "GaborFit",
    "fit_gabor",
    "gabor",
    "gabor_summary",
]

#: a field counts as Gabor-like when a Gabor explains at least this share of its variance
GOOD_R2 = 0.7
#: orientation coverage: share of these equal bins of [0°, 180°) that hold a Gabor-like field
N_ORIENTATION_BINS = 8
#: frequency coverage: share of these octave bins (cycles per pixel) that hold a Gabor-like field
FREQ_BINS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 0.5)
#: parameter order of :attr:`GaborFit.params`
PARAM_NAMES = ("x0", "y0", "theta", "freq", "phase", "sigma_u", "sigma_v", "amplitude")


@dataclass(frozen=True)
class GaborFit:
    """One field's best Gabor: ``params`` in :data:`PARAM_NAMES` order, the ``r2`` and the fitted image."""

    params: np.ndarray
    r2: float
    fitted: np.ndarray

    @property
    def orientation(self) -> float:
        """Carrier direction ``θ`` in degrees, in [0, 180)."""
        return float(np.degrees(self.params[2]) % 180.0)

    @property
    def frequency(self) -> float:
        """Carrier frequency in cycles per pixel."""
        return float(self.params[3])


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    return x.ravel().astype(np.float64), y.ravel().astype(np.float64)


def _parts(p: np.ndarray, x: np.ndarray, y: np.ndarray):
    x0, y0, th, f, ph, su, sv, A = p
    c, s = np.cos(th), np.sin(th)
    dx, dy = x - x0, y - y0
    u, v = dx * c + dy * s, -dx * s + dy * c
    E = np.exp(-0.5 * (u * u / (su * su) + v * v / (sv * sv)))
    arg = 2 * np.pi * f * u + ph
    return c, s, u, v, E, np.cos(arg), np.sin(arg)


def gabor(params: Any, shape: tuple[int, int]) -> np.ndarray:
    """The Gabor function with ``params`` (:data:`PARAM_NAMES` order) sampled on a ``shape`` pixel grid.

    Example:
        >>> g = gabor([2, 2, 0, 0.25, 0, 2, 2, 1], (5, 5))
        >>> float(g[2, 2]), float(g[2, 4]).__round__(3)   # centre, then half a period along x
        (1.0, -0.607)
    """
    x, y = _grid(shape)
    _, _, _, _, E, C, _ = _parts(np.asarray(params, dtype=np.float64), x, y)
    return (float(params[7]) * E * C).reshape(shape)


def _jacobian(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    _, _, _, f, _, su, sv, A = p
    c, s, u, v, E, C, S = _parts(p, x, y)
    dg_du = A * E * (-C * u / su**2 - 2 * np.pi * f * S)
    dg_dv = -A * E * C * v / sv**2
    return np.stack(
        [
            -dg_du * c + dg_dv * s,  # x0
            -dg_du * s - dg_dv * c,  # y0
            dg_du * v - dg_dv * u,  # theta
            -A * E * S * 2 * np.pi * u,  # freq
            -A * E * S,  # phase
            A * E * C * u * u / su**3,  # sigma_u
            A * E * C * v * v / sv**3,  # sigma_v
            E * C,  # amplitude
        ],
        axis=1,
    )


def _starts(field: np.ndarray, n_starts: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Starting points: the spectrum's peak (orientation, frequency) and the energy's centre, at several phases."""
    h, w = field.shape
    F = np.abs(np.fft.fft2(field - field.mean()))
    F[0, 0] = 0.0
    ky, kx = np.unravel_index(np.argmax(F), F.shape)
    fy = (ky if ky <= h // 2 else ky - h) / h
    fx = (kx if kx <= w // 2 else kx - w) / w
    f0 = float(np.clip(np.hypot(fx, fy), 0.02, 0.5))
    th0 = float(np.arctan2(fy, fx))
    energy = field**2
    yy, xx = np.mgrid[0:h, 0:w]
    tot = energy.sum() or 1.0
    cx, cy = float((xx * energy).sum() / tot), float((yy * energy).sum() / tot)
    spread = float(np.sqrt(((xx - cx) ** 2 + (yy - cy) ** 2) * energy).sum() / tot) / np.sqrt(2) + 0.5
    A0 = float(np.abs(field).max())
    out = []
    for i in range(n_starts):
        ph = (np.pi / 2) * (i % 4)
        if i < 4:
            x0, y0, th, f, s = cx, cy, th0, f0, spread
        else:  # random restarts around the patch
            x0, y0 = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
            th, f, s = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4), rng.uniform(1.0, max(1.5, w / 3))
        out.append(np.array([x0, y0, th, f, ph, s, s, A0]))
    return out


def fit_gabor(field: np.ndarray, n_starts: int = 5, seed: int = 0, max_nfev: int = 200) -> GaborFit:
    """Least-squares fit of a 2-D Gabor function to ``field`` (h, w) from ``n_starts`` starts; the best one.

    The first four starts take orientation and frequency from the spectrum's peak and the
    centre and size from the field's energy, at phases 0, 90, 180 and 270 degrees; the others
    are drawn from ``seed``; the fit stops early once a start reaches ``R² >= 0.99``. The
    frequency stays in (0, 0.5) cycles per pixel and the envelope widths in (0.4, 2 max(h, w)).

    Example:
        >>> true = [5.5, 6.0, 0.6, 0.15, 1.0, 2.0, 3.0, 1.0]
        >>> fit = fit_gabor(gabor(true, (12, 12)))
        >>> fit.r2 > 0.999, round(fit.frequency, 3), round(fit.orientation, 1)
        (True, 0.15, 34.4)
    """
    from scipy.optimize import least_squares

    field = np.asarray(field, dtype=np.float64)
    if field.ndim != 2 or min(field.shape) < 2:
        raise ValueError(f"fit_gabor needs a 2-D field of at least 2x2 pixels, got shape {field.shape}")
    if n_starts < 1:
        raise ValueError(f"fit_gabor needs n_starts >= 1, got {n_starts}")
    h, w = field.shape
    x, y = _grid(field.shape)
    target = field.ravel()
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    if ss_tot == 0.0 or not np.isfinite(ss_tot):
        return GaborFit(np.full(len(PARAM_NAMES), np.nan), 0.0, np.zeros_like(field))
    box = _Box(0.4, 2.0 * max(h, w))
    rng = np.random.default_rng(seed)
    best, best_cost = None, np.inf
    for p0 in _starts(field, n_starts, rng):

        def resid(q):
            p = box.params(q)
            _, _, _, _, E, C, _ = _parts(p, x, y)
            return p[7] * E * C - target

        def jac(q):
            return _jacobian(box.params(q), x, y) * box.dparams(q)

        # MINPACK's Levenberg-Marquardt on box-free coordinates: several times faster than a bounded solver
        r = least_squares(resid, box.coords(p0), jac=jac, method="lm", max_nfev=max_nfev)
        if r.cost < best_cost:
            best, best_cost = r, r.cost
        if best_cost <= 0.01 * 0.5 * ss_tot:  # R² >= 0.99 already: the other starts cannot matter
            break
    assert best is not None  # n_starts >= 1 starts ran
    p = _canonical(box.params(best.x))
    fitted = gabor(p, field.shape)
    r2 = 1.0 - float(np.sum((fitted.ravel() - target) ** 2)) / ss_tot
    return GaborFit(p, r2, fitted)


@dataclass(frozen=True)
class _Box:
    """Frequency in (0, 0.5) and envelope widths in (lo, hi) through logistic coordinates; the rest free."""

    lo: float
    hi: float

    @staticmethod
    def _sig(q):
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(q)))  # the logistic function, without overflow

    def params(self, q: np.ndarray) -> np.ndarray:
        p = np.array(q, dtype=np.float64)
        p[3] = 0.5 * self._sig(q[3])
        p[5:7] = self.lo + (self.hi - self.lo) * self._sig(q[5:7])
        return p

    def dparams(self, q: np.ndarray) -> np.ndarray:
        d = np.ones(len(q))
        sf, su = self._sig(q[3]), self._sig(q[5:7])
        d[3] = 0.5 * sf * (1 - sf)
        d[5:7] = (self.hi - self.lo) * su * (1 - su)
        return d

    def coords(self, p: np.ndarray) -> np.ndarray:
        q = np.array(p, dtype=np.float64)
        f = np.clip(p[3] / 0.5, 1e-6, 1 - 1e-6)
        s = np.clip((p[5:7] - self.lo) / (self.hi - self.lo), 1e-6, 1 - 1e-6)
        q[3], q[5:7] = np.log(f / (1 - f)), np.log(s / (1 - s))
        return q


def _canonical(p: np.ndarray) -> np.ndarray:
    """Same function, with ``A >= 0``, ``θ`` in [0, π) and ``φ`` in (-π, π]."""
    p = np.array(p, dtype=np.float64)
    if p[7] < 0:  # -A cos(a) = A cos(a + π)
        p[7], p[4] = -p[7], p[4] + np.pi
    turns = np.floor(p[2] / np.pi)
    if turns % 2:  # θ + π flips u: cos(-2πfu + φ) = cos(2πfu - φ)
        p[4] = -p[4]
    p[2] -= turns * np.pi
    p[4] = np.pi - (np.pi - p[4]) % (2 * np.pi)
    return p


def gabor_summary(W: np.ndarray, patch_shape: tuple[int, int], n_starts: int = 5, seed: int = 0) -> dict[str, Any]:
    """Fit a Gabor to every column of ``W`` (D, H) shown as a ``patch_shape`` image; the numbers that judge it.

    Returns ``r2`` (H,), ``params`` (H, 8) in :data:`PARAM_NAMES` order, ``gabor_share``
    (the share of fields with ``R² >= GOOD_R2``), ``orientation_coverage`` (share of
    :data:`N_ORIENTATION_BINS` orientation bins holding a Gabor-like field),
    ``frequency_coverage`` (share of the octave bins :data:`FREQ_BINS` holding one) and
    ``orientation_hist`` / ``frequency_hist``, the counts per bin.

    Example:
        >>> W = np.stack([gabor([5, 5, t, 0.2, 0, 2, 2, 1], (11, 11)).ravel() for t in (0, 1.6)], 1)
        >>> s = gabor_summary(W, (11, 11))
        >>> s["gabor_share"], s["orientation_coverage"]
        (1.0, 0.25)
    """
    W = np.asarray(W, dtype=np.float64)
    h, w = int(patch_shape[0]), int(patch_shape[1])
    if W.ndim != 2 or W.shape[0] != h * w:
        raise ValueError(f"W must be (D, H) with D = {h}x{w} = {h * w}, got shape {W.shape}")
    fits = [fit_gabor(W[:, j].reshape(h, w), n_starts, seed) for j in range(W.shape[1])]
    r2 = np.array([f.r2 for f in fits])
    params = np.stack([f.params for f in fits]) if fits else np.zeros((0, len(PARAM_NAMES)))
    good = r2 >= GOOD_R2
    theta = np.degrees(params[good, 2]) % 180.0
    freq = params[good, 3]
    o_hist = np.histogram(theta, bins=N_ORIENTATION_BINS, range=(0.0, 180.0))[0]
    f_hist = np.histogram(freq, bins=np.array(FREQ_BINS))[0]
    return {
        "r2": r2,
        "params": params,
        "gabor_share": float(good.mean()) if len(r2) else 0.0,
        "orientation_coverage": float(np.mean(o_hist > 0)),
        "frequency_coverage": float(np.mean(f_hist > 0)),
        "orientation_hist": o_hist,
        "frequency_hist": f_hist,
    }
