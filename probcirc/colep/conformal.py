"""Split conformal prediction: COLEP, and the standard-CP (APS, LAC) and RSCP baselines.

All three follow one pattern (MAPIE / TorchCP habits)::

    cp = COLEP(sensors, knowledge).calibrate(X_cal, y_cal, alpha=0.1)
    sets = cp.predict_set(X_test)          # torch.bool (n, num_classes)
    coverage(sets, y_test), set_size(sets)

Every threshold is an order statistic of the n calibration scores (no
interpolation), +inf when its rank exceeds n. By default it is the
⌈(n+1)(1-α)⌉-th smallest, so coverage is ≥ 1-α on average over the draw
of the calibration data. ``calibrate(..., confidence=c)`` takes the rank
that makes coverage ≥ 1-α hold for the calibration set at hand, with
probability ≥ c over its draw (training-conditional, Vovk 2012): the
guarantee to ask for when one calibrated model serves one test set.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Self, overload

import numpy as np
import torch
from scipy.stats import binom

from probmod.errors import UsageError
from probmod.estimator import Estimator, NotFittedError, check_random_state

from ._signatures import with_keywords_of
from .knowledge import Knowledge
from .reasoning import Reasoner
from .sensors import as_probabilities, predict_proba
from .smoothing import bounds_from_counts, smoothed_counts

__all__ = [
    "conformal_quantile",
    "quantile_index",
    "coverage",
    "set_size",
    "colep_scores",
    "colep_score_bounds",
    "SplitCP",
    "COLEP",
    "RSCP",
    "CertifiedSets",
    "NotCalibratedError",
]


class NotCalibratedError(NotFittedError, RuntimeError):
    """A method that needs thresholds was called before ``calibrate`` (still a ``RuntimeError``, as before)."""


def _seed(random_state: None | int | np.random.Generator) -> int:
    """An int seed from ``random_state``: the int itself, fresh entropy for None, a draw from a Generator."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).integers(2**62))


def _fitted_or_given(est: object, name: str, what: str) -> Callable:
    """``est.<name>_`` where ``fit`` trained one, else the ``est.<name>`` given to the constructor.

    Raises:
        NotCalibratedError: neither is there.
    """
    value = getattr(est, name + "_", None)
    value = getattr(est, name) if value is None else value
    if value is None:
        raise NotCalibratedError(f"no {name}: pass {what} to {type(est).__name__}(...) or call fit(X, y) first")
    return value


def _choice(name: str, value, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{name} must be {' or '.join(repr(a) for a in allowed)}, got {value!r}")


def _radii(delta: float | Sequence[float]) -> list[float]:
    """The L2 radii in ``delta``, one number or a 1-D sequence of them, as floats.

    Raises:
        UsageError: ``delta`` has more than one dimension, or a radius is negative or NaN (a
            negative radius would narrow the Gaussian-smoothing bounds and certify what is not).
    """
    radii = np.asarray(delta, dtype=float)
    if radii.ndim > 1:
        raise UsageError(f"delta must be a radius or a 1-D sequence of radii, got shape {radii.shape}")
    if not (radii >= 0).all():
        raise UsageError(f"delta must be a radius >= 0 or a sequence of them (no NaN), got {delta!r}")
    return [float(d) for d in radii.reshape(-1)]


def _fitted_alias(name: str, doc: str) -> property:
    """Read-only alias of the fitted attribute ``name`` (the pre-``_`` spelling; None before it is set)."""
    return property(lambda self: getattr(self, name, None), doc=doc)


def quantile_index(n: int, alpha: float, confidence: float | None = None) -> int:
    """The 1-based rank of the conformal threshold among n sorted scores.

    ``confidence=None``: ⌈(n+1)(1-α)⌉, which covers with probability
    ≥ 1-α over calibration and test draw together. ``confidence=c``: the
    smallest k with P(Binomial(n, 1-α) ≥ k) ≤ 1-c, and never below
    ⌈(n+1)(1-α)⌉, so the average guarantee holds as well (c < 0.5 would
    otherwise lower it). The coverage given the calibration set, F(s_(k)),
    is the k-th of n uniform order statistics (or larger, with ties), which
    falls below 1-α only when at least k of n uniforms do; so it is ≥ 1-α
    with probability ≥ c.

    Example:
        >>> quantile_index(1000, alpha=0.1), quantile_index(1000, alpha=0.1, confidence=0.9)
        (901, 913)
    """
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    # round() strips binary noise such as 90.00000000000001 before the ceiling.
    marginal = int(math.ceil(round((n + 1) * (1 - alpha), 9)))
    if confidence is None:
        return marginal
    if not 0 < confidence < 1:
        raise UsageError(f"confidence must be in (0, 1) or None, got {confidence}")
    k = int(binom.ppf(confidence, n, 1 - alpha)) + 1
    # ppf inverts a floating-point cdf; step to the exact smallest rank that meets the bound.
    while k > 1 and binom.sf(k - 2, n, 1 - alpha) <= 1 - confidence:
        k -= 1
    while k <= n and binom.sf(k - 1, n, 1 - alpha) > 1 - confidence:
        k += 1
    return max(k, marginal)


def conformal_quantile(scores, alpha: float, confidence: float | None = None) -> float:
    """The conformal threshold (:func:`quantile_index`-th smallest score), or +inf if that rank exceeds n.

    Example:
        >>> conformal_quantile([0.1, 0.5, 0.2, 0.9], alpha=0.2)   # ⌈5·0.8⌉ = 4th smallest
        0.9
        >>> conformal_quantile([0.1, 0.5, 0.2], alpha=0.2)        # ⌈4·0.8⌉ = 4 > 3
        inf
    """
    s = np.sort(np.asarray(scores, dtype=float).ravel())
    k = quantile_index(len(s), alpha, confidence)
    return float(s[k - 1]) if k <= len(s) else math.inf


def coverage(sets: torch.Tensor, y) -> float:
    """Fraction of samples whose set contains the label."""
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    return float(sets[torch.arange(len(y)), y].double().mean())


def set_size(sets: torch.Tensor) -> float:
    """Mean number of classes per set."""
    return float(sets.double().sum(1).mean())


def _labels(y, num_classes: int, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
        raise UsageError(f"y must be a 1-D array of integer class labels in [0, {num_classes})")
    if len(y) != n:
        raise UsageError(f"y has {len(y)} labels for {n} samples")
    return y.astype(int)


def lac_scores(p: torch.Tensor) -> torch.Tensor:
    """LAC (least ambiguous set) score of every class: 1 - p_y."""
    return 1 - p


def aps_scores(p: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
    """APS score of every class: mass of the classes more probable than y, plus p_y (times u if randomised)."""
    above = (p[:, None, :] > p[:, :, None]).to(p.dtype)  # [b, y, j] = p_j > p_y
    mass = (above * p[:, None, :]).sum(-1)
    return mass + (p if u is None else u * p)


def colep_scores(pi: torch.Tensor, score: str) -> torch.Tensor:
    """Nonconformity score of every class from corrected class probabilities ``(n, K)``.

    ``"lac"``: 1 - π̃_j. ``"aps"``: the corrected probabilities normalised
    over the classes, then the mass of the classes ranked above j,
    Σ_{i: p_i > p_j} p_i: APS with the class that crosses the threshold
    kept (its own-mass term dropped), so the top class scores 0 and sets are
    never empty. It is deterministic, so it can be smoothed and bounded like
    any [0, 1]-valued function, and a confidently ranked class sits near 0,
    where the smoothing bound Φ(Φ⁻¹(s) + δ/σ) moves least.
    """
    if score == "lac":
        return 1 - pi
    p = pi / pi.sum(1, keepdim=True).clamp_min(torch.finfo(pi.dtype).tiny)
    return aps_scores(p, p.new_zeros(())).clamp(0, 1)


def colep_score_bounds(lo: torch.Tensor, hi: torch.Tensor, score: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds on :func:`colep_scores` over every π̃ with ``lo <= π̃ <= hi`` (elementwise, ``(n, K)``).

    For APS: each normalised p_j lies in [lo_j / (lo_j + Σ_{i≠j} hi_i),
    hi_j / (hi_j + Σ_{i≠j} lo_i)]; class i can rank above j only if its upper
    bound exceeds j's lower one, and surely does if its lower bound exceeds
    j's upper one. Sound, not tight (the normalised p's are treated as free
    within their intervals).
    """
    if score == "lac":
        return 1 - hi, 1 - lo
    others_hi, others_lo = hi.sum(1, keepdim=True) - hi, lo.sum(1, keepdim=True) - lo
    p_lo = torch.where(lo > 0, lo / (lo + others_hi).clamp_min(torch.finfo(lo.dtype).tiny), 0.0)
    p_hi = torch.where(hi > 0, hi / (hi + others_lo).clamp_min(torch.finfo(hi.dtype).tiny), 0.0).clamp(max=1.0)
    off = ~torch.eye(lo.shape[1], dtype=torch.bool, device=lo.device)
    # Rounding can split ties between equal bounds computed through different sums, so ranks are
    # decided with a relative margin that errs toward "may" and away from "must".
    slack = 1e3 * torch.finfo(lo.dtype).eps
    may = (p_hi[:, None, :] > p_lo[:, :, None] * (1 - slack)) & off  # [n, j, i]: i may rank above j
    must = (p_lo[:, None, :] > p_hi[:, :, None] * (1 + slack)) & off
    s_hi = (may * p_hi[:, None, :]).sum(-1) * (1 + slack)
    s_lo = (must * p_lo[:, None, :]).sum(-1) * (1 - slack)
    return s_lo.clamp(0, 1), s_hi.clamp(0, 1)


class _OneThreshold(Estimator):
    """One threshold ``q_`` on the true-class calibration scores, which are kept so that it can be moved."""

    q = _fitted_alias("q_", "The threshold ``q_`` (None before calibrate).")
    alpha = _fitted_alias("alpha_", "The ``alpha`` of the last calibration (None before calibrate).")
    confidence = _fitted_alias("confidence_", "The ``confidence`` of the last calibration.")
    q_: float | None

    def _calibrate_on(self, true_scores: np.ndarray, alpha: float, confidence: float | None) -> Self:
        q = conformal_quantile(true_scores, alpha, confidence)  # validates alpha and confidence first
        self._cal_scores = true_scores
        self.alpha_, self.confidence_, self.q_ = alpha, confidence, q
        return self

    def _check_calibrated(self, method: str) -> float:
        """The threshold ``q_``; NotCalibratedError naming ``method`` before calibrate (or after a new fit)."""
        q = getattr(self, "q_", None)
        if q is None:
            raise NotCalibratedError(f"call calibrate(X_cal, y_cal, alpha) before {method}")
        return q

    def recalibrated(self, alpha: float, confidence: float | None = None) -> Self:
        """A copy thresholded for another ``alpha`` or ``confidence`` on the same calibration scores
        (no model calls)."""
        self._check_calibrated("recalibrated")
        return copy.copy(self)._calibrate_on(self._cal_scores, alpha, confidence)


class SplitCP(_OneThreshold):
    """Standard split conformal prediction on one multiclass model (``model(X) -> (n, K)`` probabilities).

    ``score`` is ``"aps"`` (adaptive prediction sets; ``randomized`` uses the
    uniform tie-breaking term) or ``"lac"`` (1 - p_y). ``random_state`` seeds
    the tie-breaking draws and :meth:`fit`'s training (an int repeats them,
    None draws fresh ones). Hyperparameters are checked when fitting or
    calibrating; the fitted attributes are ``model_`` (after :meth:`fit`),
    ``q_``, ``alpha_`` and ``confidence_``.

    Example:
        >>> import torch
        >>> from sklearn.base import clone
        >>> cp = SplitCP(lambda X: torch.softmax(torch.as_tensor(X, dtype=torch.float64), 1), "lac", random_state=0)
        >>> X = torch.randn(100, 3); y = X.argmax(1).numpy()
        >>> cp.calibrate(X, y, alpha=0.1).predict_set(X).shape, hasattr(clone(cp), "q_")
        (torch.Size([100, 3]), False)
    """

    generator_: torch.Generator | None

    def __init__(
        self,
        model: Callable | None = None,
        score: str = "aps",
        randomized: bool = True,
        random_state: None | int | np.random.Generator = 0,
    ):
        self.model = model
        self.score = score
        self.randomized = randomized
        self.random_state = random_state

    def fit(self, X, y, num_classes: int | None = None, **train_kwargs) -> SplitCP:
        """Train an MLP classifier (:func:`train_classifier`) as ``model_``, used instead of ``model``."""
        from .sensors import train_classifier

        _choice("score", self.score, ("aps", "lac"))
        train_kwargs.setdefault("seed", _seed(self.random_state))
        self.model_ = train_classifier(X, y, num_classes or int(np.max(y)) + 1, **train_kwargs)
        self.q_ = None
        return self

    def _model(self) -> Callable:
        return _fitted_or_given(self, "model", "a model")

    def _tie_breaker(self) -> torch.Generator:
        """The tie-break stream, started from ``random_state`` at the first draw after construction or calibrate."""
        gen: torch.Generator | None = getattr(self, "generator_", None)
        if gen is None:
            gen = self.generator_ = torch.Generator().manual_seed(_seed(self.random_state))
        return gen

    def scores(self, X) -> torch.Tensor:
        """Every class's nonconformity score at ``X``, ``(n, K)``."""
        _choice("score", self.score, ("aps", "lac"))
        p = predict_proba(self._model(), X)
        if self.score == "lac":
            return lac_scores(p)
        u = torch.rand(p.shape[0], 1, generator=self._tie_breaker(), dtype=p.dtype) if self.randomized else None
        return aps_scores(p, u)

    def calibrate(self, X, y, alpha: float, confidence: float | None = None) -> SplitCP:
        """Threshold at the conformal quantile of the true-class scores (``confidence``: see :func:`quantile_index`)."""
        self.generator_ = None
        s = self.scores(X)
        y = _labels(y, s.shape[1], s.shape[0])
        return self._calibrate_on(s[np.arange(len(y)), y].numpy(), alpha, confidence)

    def recalibrated(self, alpha: float, confidence: float | None = None) -> Self:
        out = super().recalibrated(alpha, confidence)
        # Its own tie-break stream, so copies do not move each other's draws.
        out.generator_ = torch.Generator().set_state(self._tie_breaker().get_state())
        return out

    def predict_set(self, X) -> torch.Tensor:
        """Boolean ``(n, K)``: class j is in the set iff its score is ≤ ``q_``."""
        q = self._check_calibrated("predict_set")
        return self.scores(X) <= q


@dataclass
class CertifiedSets:
    """Prediction sets of a smoothed model at inputs X, and their certificates for radius ``delta``.

    ``sets``: the smoothed model's own sets at X (point estimates).
    ``certified``: a superset of the sets of every x' with ||x' - x|| ≤ delta,
    i.e. the robust set to report when X may have been attacked.
    ``certain``: the classes that are in the set of every such x'. A label in
    ``certain`` stays covered under any attack of radius delta.
    ``lower``/``upper``: the bounds on the class scores behind them;
    ``scores``: the smoothed model's class scores at X (``sets`` is
    ``scores <= q``), e.g. to recalibrate on other data.
    Bounds hold simultaneously per sample with probability ≥ 1 - alpha_mc.
    """

    delta: float
    sets: torch.Tensor
    certified: torch.Tensor
    certain: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    scores: torch.Tensor

    def certified_coverage(self, y) -> float:
        """Fraction of samples whose label is certified to stay in the set under any δ-perturbation."""
        return coverage(self.certain, y)

    def with_threshold(self, q: float | torch.Tensor) -> CertifiedSets:
        """The same certificates read against threshold ``q`` (a scalar or one per class), without new draws.

        The score bounds hold whatever the threshold, so this is sound for
        any q fixed without looking at these samples, e.g. the thresholds of
        a :meth:`COLEP.recalibrated` model.
        """
        q = torch.as_tensor(q, dtype=self.scores.dtype)
        return CertifiedSets(
            self.delta, self.scores <= q, self.lower <= q, self.upper <= q, self.lower, self.upper, self.scores
        )


class COLEP(Estimator):
    """Learning-reasoning conformal prediction (Kang et al., ICLR 2024).

    ``sensors(X)`` gives the probability of every class and concept (see
    :mod:`probcirc.colep.sensors`); the knowledge's reasoning circuits correct
    them, mixed with weights β. The score of class j is 1 - π̃_j
    (``score="lac"``, the paper's) or the APS score of the corrected class
    distribution (``score="aps"``, :func:`colep_scores`), which grows the set
    where the corrected distribution is flat instead of emptying it.

    ``mode="per_class"`` (default) calibrates each class sensor on the
    calibration samples of that class (split conformal per sensor, Mondrian):
    P(y ∈ C(x) | y = j) ≥ 1 - α for every j, hence also marginally.
    ``mode="marginal"`` uses one threshold over all samples' true-class scores.

    β is fitted on a random ``beta_fraction`` of the calibration data and the
    thresholds on the rest, so the conformal scores stay exchangeable with
    the test scores. ``random_state`` draws that split and seeds :meth:`fit`'s
    training (an int repeats them, None draws fresh ones).

    As a scikit-learn estimator, ``__init__`` only stores its arguments; they
    are checked by ``fit`` and ``calibrate``, which set ``sensors_`` (trained
    sensors, used instead of ``sensors``), ``reasoner_`` (the circuits and the
    fitted β), ``q_`` (one threshold per class), ``alpha_`` and
    ``confidence_``. ``sklearn.base.clone`` gives an uncalibrated copy.

    Example:
        >>> import torch
        >>> from probcirc.colep import COLEP, Knowledge
        >>> kb = Knowledge.from_concept_classes(["a", "b"], {"c": ["a"]})
        >>> sensors = lambda X: torch.as_tensor(X, dtype=torch.float64)   # X holds the readings
        >>> X = torch.rand(200, 3); y = (X[:, 1] > X[:, 0]).long().numpy()
        >>> cp = COLEP(sensors, kb).calibrate(X, y, alpha=0.1)
        >>> cp.predict_set(X[:5]).shape
        torch.Size([5, 2])
    """

    q = _fitted_alias("q_", "The per-class thresholds ``q_`` (None before calibrate).")
    alpha = _fitted_alias("alpha_", "The ``alpha`` of the last calibration.")
    confidence = _fitted_alias("confidence_", "The ``confidence`` of the last calibration.")
    q_: torch.Tensor | None

    def __init__(
        self,
        sensors: Callable | None,
        knowledge: Knowledge,
        mode: str = "per_class",
        beta_fraction: float = 0.2,
        fit_beta: bool = True,
        include_sensor: bool = True,
        random_state: None | int | np.random.Generator = 0,
        score: str = "lac",
    ):
        self.sensors = sensors
        self.knowledge = knowledge
        self.mode = mode
        self.beta_fraction = beta_fraction
        self.fit_beta = fit_beta
        self.include_sensor = include_sensor
        self.random_state = random_state
        self.score = score

    def _check_params(self) -> None:
        _choice("mode", self.mode, ("per_class", "marginal"))
        _choice("score", self.score, ("lac", "aps"))
        if not isinstance(self.knowledge, Knowledge):
            raise UsageError(
                f"knowledge must be a Knowledge (e.g. Knowledge.from_json(path)), got {type(self.knowledge).__name__}"
            )
        if (
            isinstance(self.beta_fraction, bool)
            or not isinstance(self.beta_fraction, (int, float))
            or not 0 <= self.beta_fraction < 1
        ):
            raise UsageError(f"beta_fraction must be in [0, 1), got {self.beta_fraction!r}")

    @property
    def num_classes(self) -> int:
        return self.knowledge.num_classes

    @property
    def reasoner(self) -> Reasoner:
        """The reasoning circuits and their β (``reasoner_`` once calibrated; uniform β before)."""
        r = getattr(self, "reasoner_", None)
        if r is None or r.knowledge is not self.knowledge or r.include_sensor != self.include_sensor:
            self._check_params()
            r = self.reasoner_ = Reasoner(self.knowledge, include_sensor=self.include_sensor)
        return r

    def fit(self, X, y, **train_kwargs) -> COLEP:
        """Train MLP sensors for every class and concept (:func:`train_sensors`) as ``sensors_``,
        used instead of ``sensors``."""
        from .sensors import train_sensors

        self._check_params()
        train_kwargs.setdefault("seed", _seed(self.random_state))
        self.sensors_ = train_sensors(X, y, self.knowledge, **train_kwargs)
        self.q_ = None
        return self

    def _sensors(self) -> Callable:
        return _fitted_or_given(self, "sensors", "a sensors callable")

    def _check_calibrated(self, method: str) -> torch.Tensor:
        """The thresholds ``q_``; NotCalibratedError naming ``method`` before calibrate (or after a new fit)."""
        q = getattr(self, "q_", None)
        if q is None:
            raise NotCalibratedError(f"call calibrate(X_cal, y_cal, alpha) before {method}")
        return q

    def sensor_probabilities(self, X) -> torch.Tensor:
        """The sensors' readings of every class and concept, validated, ``(n, K + C)``."""
        return as_probabilities(self._sensors(), X, self.knowledge.num_classes, self.knowledge.num_concepts)

    def probabilities(self, X) -> torch.Tensor:
        """Corrected, β-mixed probabilities of every class and concept, ``(n, K + C)``."""
        return self.reasoner(self.sensor_probabilities(X))

    def _thresholds(self, scores: torch.Tensor, y: np.ndarray) -> torch.Tensor:
        s = scores[np.arange(len(y)), y].numpy()
        alpha, confidence = self.alpha_, self.confidence_
        if self.mode == "marginal":
            return torch.full((self.num_classes,), conformal_quantile(s, alpha, confidence), dtype=torch.float64)
        return torch.tensor(
            [conformal_quantile(s[y == j], alpha, confidence) for j in range(self.num_classes)], dtype=torch.float64
        )

    def calibrate(self, X, y, alpha: float, confidence: float | None = None) -> COLEP:
        """Fit β (on a held-out part) and the per-sensor thresholds; returns self.

        ``confidence=c`` makes each threshold's coverage hold for this
        calibration set with probability ≥ c (:func:`quantile_index`); per
        class, all K classes together hold with probability ≥ 1 - K(1 - c).
        The split between β and thresholds is drawn from ``random_state``.
        """
        self._check_params()
        quantile_index(1, alpha, confidence)  # a bad alpha fails before the sensors run
        p = self.sensor_probabilities(X)
        y = _labels(y, self.num_classes, len(p))
        n = len(y)
        reasoner = self.reasoner.fresh()  # shares the compiled circuits, starts from the uniform β
        idx = check_random_state(self.random_state).permutation(n)
        n_beta = int(round(self.beta_fraction * n)) if self.fit_beta and reasoner.circuits else 0
        beta_idx, conf_idx = idx[:n_beta], np.sort(idx[n_beta:])
        if n_beta:
            reasoner.fit_beta(p[beta_idx], y[beta_idx])
        self.reasoner_ = reasoner
        self.alpha_, self.confidence_ = alpha, confidence
        self._X_conf = X[conf_idx] if not isinstance(X, (list, tuple)) else [X[i] for i in conf_idx]
        self._y_conf = y[conf_idx]
        self._conf_scores = self._scores(reasoner(p[conf_idx]))
        # (sigma, n_samples, seed, n_calibration, method) -> smoothed scores and labels of the split
        self._smooth_cache: dict[tuple[float, int, int, int | None, str], tuple[torch.Tensor, np.ndarray]] = {}
        self.q_ = self._thresholds(self._conf_scores, self._y_conf)
        return self

    def recalibrated(self, alpha: float, confidence: float | None = None) -> COLEP:
        """A copy thresholded for another ``alpha`` or ``confidence``, on the same calibration scores.

        β, the calibration split and the smoothed calibration scores already
        drawn are kept, so no sensor runs again.

        Example:
            >>> import torch
            >>> from probcirc.colep import COLEP, Knowledge
            >>> kb = Knowledge.from_concept_classes(["a", "b"], {"c": ["a"]})
            >>> X = torch.rand(500, 3); y = (X[:, 1] > X[:, 0]).long().numpy()
            >>> cp = COLEP(lambda X: X.double(), kb).calibrate(X, y, alpha=0.1)
            >>> strict = cp.recalibrated(0.1, confidence=0.9)
            >>> bool((strict.q_ >= cp.q_).all())
            True
        """
        self._check_calibrated("recalibrated")
        out = copy.copy(self)
        out.reasoner_ = copy.copy(self.reasoner_)  # so that calibrating self again (a new β) leaves the copy's β alone
        out.alpha_, out.confidence_ = alpha, confidence
        out.q_ = out._thresholds(self._conf_scores, self._y_conf)
        return out

    def _scores(self, pi: torch.Tensor) -> torch.Tensor:
        return colep_scores(pi[:, : self.num_classes], self.score)

    def predict_set(self, X) -> torch.Tensor:
        """Boolean ``(n, num_classes)``: class j is in the set iff its score at x is ≤ q_j."""
        q = self._check_calibrated("predict_set")
        return self._scores(self.probabilities(X)) <= q[None, :]

    # ------------------------------------------------------- certification
    def _smoothed_fn(self, method: str):
        """The [0, 1]-valued function whose Gaussian smoothing ``method`` certifies."""
        k, c, sensors = self.knowledge.num_classes, self.knowledge.num_concepts, self._sensors()
        if method == "sensors":
            return lambda x: as_probabilities(sensors, x, k, c)
        return lambda x: self._scores(self.reasoner_(as_probabilities(sensors, x, k, c)))

    def _smoothed_scores(self, counts: np.ndarray, n_samples: int, method: str) -> torch.Tensor:
        """Class scores of the smoothed model from its Monte Carlo counts."""
        g = torch.from_numpy(counts / n_samples)
        return self._scores(self.reasoner_(g)) if method == "sensors" else g

    def smoothed_thresholds(
        self,
        sigma: float,
        n_samples: int = 1000,
        seed: int = 0,
        n_calibration: int | None = None,
        method: str = "sensors",
    ) -> torch.Tensor:
        """Per-class thresholds of the smoothed model, recalibrated on the stored calibration split.

        The smoothed calibration scores are drawn once per setting and kept
        (shared with :meth:`recalibrated` copies); ``n_calibration`` uses a
        random subset of the split.
        """
        self._check_calibrated("smoothed_thresholds or certify")
        _choice("method", method, ("sensors", "pipeline"))
        key = (float(sigma), int(n_samples), int(seed), n_calibration, method)
        if key not in self._smooth_cache:
            n = len(self._y_conf)
            sub = (
                np.arange(n)
                if n_calibration is None or n_calibration >= n
                else np.sort(np.random.default_rng(seed).choice(n, n_calibration, replace=False))
            )
            k = smoothed_counts(self._smoothed_fn(method), self._X_conf[sub], sigma, n_samples, seed=seed + 1)
            self._smooth_cache[key] = (self._smoothed_scores(k, n_samples, method), self._y_conf[sub])
        return self._thresholds(*self._smooth_cache[key])

    @overload
    def certify(
        self,
        X,
        delta: float,
        sigma: float,
        n_samples: int = ...,
        alpha_mc: float = ...,
        seed: int = ...,
        n_calibration: int | None = ...,
        method: str = ...,
    ) -> CertifiedSets: ...

    @overload
    def certify(
        self,
        X,
        delta: Sequence[float],
        sigma: float,
        n_samples: int = ...,
        alpha_mc: float = ...,
        seed: int = ...,
        n_calibration: int | None = ...,
        method: str = ...,
    ) -> list[CertifiedSets]: ...

    def certify(
        self,
        X,
        delta: float | Sequence[float],
        sigma: float,
        n_samples: int = 1000,
        alpha_mc: float = 0.001,
        seed: int = 0,
        n_calibration: int | None = None,
        method: str = "sensors",
    ) -> CertifiedSets | list[CertifiedSets]:
        """Certified prediction sets of a Gaussian-smoothed COLEP at ``X`` for L2 radius ``delta``.

        ``method="sensors"`` (the COLEP paper's route) smooths each sensor
        with N(0, σ²I) noise; Clopper-Pearson bounds (Bonferroni over
        sensors, total level ``alpha_mc``) widened by the Gaussian-smoothing
        bound give a box that holds every sensor's smoothed reading at every
        x' within ``delta``. The box is pushed through the reasoning circuits
        exactly (vertex enumeration per cluster) and through the β-mixture
        soundly. The model is reasoning(E[sensors(x + ε)]).

        ``method="pipeline"`` smooths the corrected class probabilities
        themselves, E[reasoning(sensors(x + ε))], and bounds each with the
        same Clopper-Pearson and Gaussian-smoothing argument (the lemma needs
        only a [0, 1]-valued function, and reasoning ∘ sensors is one). It
        does not pay for the box's worst case, in which every sensor moves
        to its own extreme at once, so it certifies more (docs/colep.md).

        Thresholds are recalibrated on the stored calibration split with the
        same smoothing. Pass a list of radii to reuse one Monte Carlo run; a
        list of results comes back. ``n_calibration`` recalibrates on a
        random subset of that split, to save Monte Carlo time (the thresholds
        are cached per setting).

        Raises:
            UsageError: a radius in ``delta`` is negative or NaN (checked before any Monte Carlo draw).
        """
        radii = _radii(delta)
        q = self.smoothed_thresholds(sigma, n_samples, seed, n_calibration, method)
        counts = smoothed_counts(self._smoothed_fn(method), X, sigma, n_samples, seed=seed + 2)
        s = self._smoothed_scores(counts, n_samples, method)
        out = []
        for d in radii:
            _, lo, hi = bounds_from_counts(counts, n_samples, alpha_mc, d, sigma)
            if method == "sensors":
                lo, hi = colep_score_bounds(*self.reasoner_.bounds(lo, hi, range(self.num_classes)), self.score)
            out.append(CertifiedSets(d, s <= q, lo <= q, hi <= q, lo, hi, s))
        return out[0] if np.ndim(delta) == 0 else out

    @with_keywords_of(certify)
    def certified_coverage(self, X, y, delta: float, sigma: float, **options) -> float:
        """Fraction of labelled samples whose label provably stays in the set under any L2 perturbation ≤ delta.

        The other keywords are :meth:`certify`'s, with its defaults."""
        res = self.certify(X, delta, sigma, **options)
        return res.certified_coverage(_labels(y, self.num_classes, len(res.sets)))


class RSCP(_OneThreshold):
    """Randomised-smoothing conformal prediction (Gendler et al., ICLR 2022) on one multiclass model.

    The score (``"lac"``, or ``"aps"`` as in :func:`colep_scores`: the mass
    of the classes ranked above y; both in [0, 1]) is smoothed with N(0, σ²I)
    noise and estimated with the same Bernoulli / Clopper-Pearson machinery
    as COLEP's sensors. Sets at X use the point
    estimate; ``certify`` bounds the smoothed score over the δ-ball with the
    1/σ-Lipschitz bound on Φ⁻¹ of the smoothed score. ``random_state`` seeds
    the Monte Carlo draws (an int repeats them, None draws fresh ones).
    Fitted attributes: ``q_``, ``alpha_``, ``confidence_``, ``seed_``.
    """

    def __init__(
        self,
        model: Callable,
        sigma: float = 0.25,
        n_samples: int = 1000,
        score: str = "lac",
        random_state: None | int | np.random.Generator = 0,
    ):
        self.model = model
        self.sigma = sigma
        self.n_samples = n_samples
        self.score = score
        self.random_state = random_state

    def _score_fn(self):
        def f(x):
            p = predict_proba(self.model, x)
            return colep_scores(p, self.score)

        return f

    def calibrate(self, X, y, alpha: float, confidence: float | None = None) -> RSCP:
        """Smooth the calibration scores and threshold them (``confidence``: see :func:`quantile_index`).

        The Monte Carlo draws come from ``seed_``, an int taken from ``random_state``.
        """
        _choice("score", self.score, ("aps", "lac"))
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, (int, np.integer)) or self.n_samples < 1:
            raise UsageError(f"n_samples must be a positive integer, got {self.n_samples!r}")
        if not isinstance(self.sigma, (int, float)) or not self.sigma > 0:
            raise UsageError(f"sigma must be a positive number, got {self.sigma!r}")
        quantile_index(1, alpha, confidence)
        self.seed_ = _seed(self.random_state)
        k = smoothed_counts(self._score_fn(), X, self.sigma, self.n_samples, seed=self.seed_ + 1)
        s = k / self.n_samples
        y = _labels(y, s.shape[1], s.shape[0])
        return self._calibrate_on(s[np.arange(len(y)), y], alpha, confidence)

    def predict_set(self, X) -> torch.Tensor:
        return self.certify(X, 0.0).sets

    @overload
    def certify(
        self,
        X,
        delta: float,
        sigma: float | None = ...,
        n_samples: int | None = ...,
        alpha_mc: float = ...,
        seed: int | None = ...,
    ) -> CertifiedSets: ...

    @overload
    def certify(
        self,
        X,
        delta: Sequence[float],
        sigma: float | None = ...,
        n_samples: int | None = ...,
        alpha_mc: float = ...,
        seed: int | None = ...,
    ) -> list[CertifiedSets]: ...

    def certify(
        self,
        X,
        delta: float | Sequence[float],
        sigma: float | None = None,
        n_samples: int | None = None,
        alpha_mc: float = 0.001,
        seed: int | None = None,
    ) -> CertifiedSets | list[CertifiedSets]:
        """Sets at ``X`` and their certificates for L2 radius ``delta`` (a list of radii: a list of results).

        ``sigma`` and ``n_samples`` may only repeat the calibrated ones; ``seed`` defaults to ``seed_``.

        Raises:
            UsageError: a radius in ``delta`` is negative or NaN, or ``sigma``/``n_samples`` differ from the RSCP's.
        """
        q = self._check_calibrated("certify")
        radii = _radii(delta)
        if (sigma is not None and sigma != self.sigma) or (n_samples is not None and n_samples != self.n_samples):
            raise UsageError("RSCP is calibrated for its own sigma and n_samples; build a new RSCP to change them")
        seed = self.seed_ if seed is None else seed
        counts = smoothed_counts(self._score_fn(), X, self.sigma, self.n_samples, seed=seed + 2)
        out = []
        for d in radii:
            s, lo, hi = bounds_from_counts(counts, self.n_samples, alpha_mc, d, self.sigma)
            out.append(CertifiedSets(d, s <= q, lo <= q, hi <= q, lo, hi, s))
        return out[0] if np.ndim(delta) == 0 else out

    def certified_coverage(self, X, y, delta: float, alpha_mc: float = 0.001) -> float:
        return self.certify(X, delta, alpha_mc=alpha_mc).certified_coverage(y)
