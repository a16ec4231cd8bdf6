"""COLEP: reasoning circuits against brute-force enumeration, conformal validity, certification, knowledge."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import probcirc
from probcirc.colep import (
    COLEP,
    RSCP,
    CertifiedSets,
    ClusterCircuit,
    Knowledge,
    KnowledgeError,
    Reasoner,
    SplitCP,
    as_probabilities,
    clopper_pearson,
    conformal_quantile,
    coverage,
    digits_knowledge,
    gaussian_shift,
    pgd_l2,
    quantile_index,
)
from probcirc.colep.knowledge import Cluster, Literal, Rule
from probcirc.inputs import Bernoulli
from probcirc.nodes import inputs, multiply, summate
from probcirc.queries import soft_evidence
from probmod.errors import UsageError


# --------------------------------------------------------------- references
def brute_force(q: np.ndarray, rules: list[tuple[int, bool, int, bool, float]], one_hot=()) -> np.ndarray:
    """π̃_j = Σ_{μ_j=1} F(μ) / Σ_μ F(μ) by enumerating μ, in plain numpy (shares no code with colep).

    F(μ) = 0 unless exactly one variable of ``one_hot`` is 1 (when given).
    """
    m = q.shape[1]
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        num, den = np.zeros(m), 0.0
        for mu in itertools.product([0, 1], repeat=m):
            if one_hot and sum(mu[k] for k in one_hot) != 1:
                continue
            f = 1.0
            for j in range(m):
                f *= q[b, j] if mu[j] else 1 - q[b, j]
            log_r = 0.0
            for body, bpos, head, hpos, w in rules:
                bv = mu[body] if bpos else 1 - mu[body]
                hv = mu[head] if hpos else 1 - mu[head]
                if (not bv) or hv:
                    log_r += w
            f *= math.exp(log_r)
            den += f
            num += f * np.array(mu)
        out[b] = num / den
    return out


def random_cluster(rng, m: int, n_rules: int, n_hot: int = 0):
    """Random rules over m variables; the first ``n_hot`` are one-hot (exclusive classes)."""
    rules = []
    for _ in range(n_rules):
        a, c = rng.choice(m, 2, replace=False)
        rules.append((int(a), bool(rng.random() < 0.7), int(c), bool(rng.random() < 0.7), float(rng.uniform(0, 3))))
    cl = Cluster(
        "c",
        tuple(Rule(Literal(a, ap), Literal(c, cp), w) for a, ap, c, cp, w in rules),
        tuple(range(m)),
        tuple(range(n_hot)),
    )
    return cl, rules


# ------------------------------------------------------------- reasoning
@pytest.mark.parametrize("structure", ["cover", "enumerate"])
@pytest.mark.parametrize("n_hot", [0, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_cluster_circuit_matches_brute_force(seed, n_hot, structure):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(n_hot + 1, 7))
    cl, rules = random_cluster(rng, m, int(rng.integers(1, 2 * m)), n_hot)
    q = rng.uniform(0, 1, size=(7, m))
    q[0, 0], q[1, -1] = 0.0, 1.0  # hard evidence, log 0 in the leaves
    circuit = ClusterCircuit(cl, structure)
    got = circuit.corrected(torch.tensor(q)).numpy()
    np.testing.assert_allclose(got, brute_force(q, rules, tuple(range(n_hot))), rtol=1e-10, atol=1e-12)
    covered = set(circuit.cover) | set(circuit.one_hot)
    assert all(a in covered or c in covered for a, _, c, _, _ in rules)


@pytest.mark.parametrize("exclusive", [False, True])
def test_cover_circuit_is_small_for_star_clusters(exclusive):
    for cl in digits_knowledge(exclusive_classes=exclusive).compiled_clusters:
        circuit = ClusterCircuit(cl)
        m = len(cl.variables)
        if exclusive:  # ten one-hot branches, each a product over the 11 variables: linear, not 2^m
            assert circuit.cover == () and m == 11
            assert circuit.pc.num_nodes < 3 * 10 * m
        else:
            assert len(circuit.cover) == 1  # the concept
            assert circuit.pc.num_nodes < 4 * m + 4


def test_published_example_0667():
    """One sensor at 0.9, one rule of weight 1.5: 0.9 / (0.1·e^1.5 + 0.9) ≈ 0.6676.

    Which variable is it? Take the rule A ⇒ B (weight w = 1.5), the sensor of
    A at π_A = 0.9, and B known false (π_B = 0). Only the states with μ_B = 0
    have mass: F(μ_A=1, μ_B=0) = 0.9·1·1 (rule violated, factor e^0) and
    F(μ_A=0, μ_B=0) = 0.1·1·e^w (rule satisfied). So the corrected
    probability of the *body* A is 0.9 / (0.9 + 0.1·e^1.5) = 0.6676: a class
    whose implied concept is absent loses belief. (Equivalently, with A known
    true, π_A = 1, and the sensor of B at 0.1, the corrected P(μ_B = 0) is the
    same 0.6676: the rule lifts the head.) The uncorrected value would be 0.9.
    """
    expected = 0.9 / (0.1 * math.exp(1.5) + 0.9)
    assert expected == pytest.approx(0.6676, abs=1e-4)
    kb = Knowledge(["A"], ["B"], [{"if": "A", "then": "B", "weight": 1.5}], [{"name": "c", "rules": [0]}])
    circuit = ClusterCircuit(kb.compiled_clusters[0])
    got = circuit.corrected(torch.tensor([[0.9, 0.0], [1.0, 0.1]], dtype=torch.float64))
    assert float(got[0, 0]) == pytest.approx(expected, abs=1e-12)
    assert 1 - float(got[1, 1]) == pytest.approx(expected, abs=1e-12)
    # the full reasoner with β all on this cluster gives the same
    r = Reasoner(kb, include_sensor=False)
    assert float(r(torch.tensor([[0.9, 0.0]], dtype=torch.float64))[0, 0]) == pytest.approx(expected, abs=1e-12)


def test_soft_evidence_on_general_bernoulli_circuit():
    """Soft evidence through a non-deterministic circuit with non-indicator leaves, vs enumeration of log_prob."""
    g = torch.Generator().manual_seed(0)
    prods = [
        multiply(
            *[inputs(v, 3, Bernoulli(), params=torch.rand(3, 1, generator=g, dtype=torch.float64)) for v in range(3)]
        )
        for _ in range(2)
    ]
    w = torch.rand(1, 6, generator=g, dtype=torch.float64)
    pc = probcirc.compile(summate(*prods, num_nodes=1, params=w / w.sum()), dtype=torch.float64)
    xs = torch.tensor(list(itertools.product([0, 1], repeat=3)))
    px = pc.log_prob(xs).exp()
    q = torch.rand(5, 3, generator=g, dtype=torch.float64)
    like = torch.prod(torch.where(xs[None].bool(), q[:, None], 1 - q[:, None]), -1) * px[None]  # (5, 8)
    want = (like[:, :, None] * xs[None]).sum(1) / like.sum(1, keepdim=True)
    post, logz = soft_evidence(pc, q)
    torch.testing.assert_close(post, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logz, like.sum(1).log(), rtol=1e-10, atol=1e-12)


def test_reasoner_mixture_and_passthrough():
    kb = Knowledge(
        ["a", "b", "c"],
        ["k"],
        [{"if": "a", "then": "k", "weight": 2.0}, {"if": "b", "then": "not k", "weight": 1.0}],
        [{"name": "x", "rules": [0]}, {"name": "y", "rules": [1]}],
    )
    r = Reasoner(kb)
    r.beta = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    p = torch.tensor([[0.7, 0.4, 0.3, 0.2]], dtype=torch.float64)
    c1 = brute_force(p[:, [0, 3]].numpy(), [(0, True, 1, True, 2.0)])
    c2 = brute_force(p[:, [1, 3]].numpy(), [(0, True, 1, False, 1.0)])
    got = r(p)[0].numpy()
    pn = p[0].numpy()
    assert got[0] == pytest.approx(0.2 * pn[0] + 0.5 * c1[0, 0] + 0.3 * pn[0])
    assert got[1] == pytest.approx(0.2 * pn[1] + 0.5 * pn[1] + 0.3 * c2[0, 0])
    assert got[2] == pytest.approx(pn[2])  # in no cluster: untouched
    assert got[3] == pytest.approx(0.2 * pn[3] + 0.5 * c1[0, 1] + 0.3 * c2[0, 1])


@pytest.mark.parametrize("n_hot", [0, 2])
@pytest.mark.parametrize("seed", range(3))
def test_vertex_bounds_are_exact_over_the_box(seed, n_hot):
    """Extremes over a box sit at vertices: no dense interior/edge point escapes, and vertices attain them.

    With a one-hot group the bounds visit only some vertices (the one-hot
    directions are fixed by the monotonicity argument); the grid checks that
    argument too.
    """
    rng = np.random.default_rng(100 + seed)
    m = 3
    cl, rules = random_cluster(rng, m, 4, n_hot)
    circ = ClusterCircuit(cl)
    lo = rng.uniform(0, 0.6, size=(1, m))
    hi = np.minimum(1, lo + rng.uniform(0.05, 0.4, size=(1, m)))
    blo, bhi = circ.corrected_bounds(torch.tensor(lo), torch.tensor(hi))
    grid = np.stack(np.meshgrid(*[np.linspace(lo[0, j], hi[0, j], 9) for j in range(m)], indexing="ij"), -1).reshape(
        -1, m
    )
    grid = np.concatenate([grid, lo + (hi - lo) * rng.uniform(size=(500, m))])
    vals = circ.corrected(torch.tensor(grid)).numpy()
    assert (vals >= blo.numpy() - 1e-12).all() and (vals <= bhi.numpy() + 1e-12).all()
    np.testing.assert_allclose(vals.min(0), blo[0].numpy(), atol=1e-12)  # the grid includes the vertices
    np.testing.assert_allclose(vals.max(0), bhi[0].numpy(), atol=1e-12)


@pytest.mark.parametrize("exclusive", [False, True])
def test_mixture_bounds_are_sound(exclusive):
    kb = digits_knowledge(exclusive_classes=exclusive)
    r = Reasoner(kb)
    rng = np.random.default_rng(3)
    r.beta = torch.tensor(rng.dirichlet(np.ones(5)))
    lo = rng.uniform(0, 0.7, size=(2, 14))
    hi = np.minimum(1, lo + 0.2)
    blo, bhi = r.bounds(torch.tensor(lo), torch.tensor(hi))
    pts = lo[:, None] + (hi - lo)[:, None] * rng.uniform(size=(2, 200, 14))
    vals = r(torch.tensor(pts.reshape(-1, 14))).reshape(2, 200, 14)
    assert bool((vals >= blo[:, None] - 1e-12).all()) and bool((vals <= bhi[:, None] + 1e-12).all())


def test_mixture_class_bounds_are_exact_with_exclusive_classes():
    """The class bounds equal the extremes of the whole mixture over all 2^14 vertices of the box."""
    kb = digits_knowledge(exclusive_classes=True)
    r = Reasoner(kb)
    rng = np.random.default_rng(4)
    r.beta = torch.tensor(rng.dirichlet(np.ones(5)))
    lo = rng.uniform(0, 0.7, size=(1, 14))
    hi = np.minimum(1, lo + rng.uniform(0.05, 0.3, size=(1, 14)))
    blo, bhi = r.bounds(torch.tensor(lo), torch.tensor(hi), range(10))
    corners = np.array(list(itertools.product([0, 1], repeat=14)), dtype=bool)
    vals = r(torch.tensor(np.where(corners, hi, lo)))[:, :10]
    np.testing.assert_allclose(blo[0].numpy(), vals.amin(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(bhi[0].numpy(), vals.amax(0).numpy(), atol=1e-12)


# ------------------------------------------------------------- conformal
@pytest.mark.parametrize(
    "n,alpha,k", [(9, 0.1, 9), (8, 0.1, 9), (99, 0.1, 90), (19, 0.05, 19), (100, 0.1, 91), (4, 0.2, 4)]
)
def test_quantile_index(n, alpha, k):
    exact = math.ceil((n + 1) * (1 - Fraction(str(alpha))))
    assert quantile_index(n, alpha) == k == exact
    s = np.random.default_rng(n).permutation(n).astype(float)  # scores 0..n-1, shuffled
    assert conformal_quantile(s, alpha) == (k - 1 if k <= n else math.inf)


@pytest.mark.parametrize(
    "n,alpha,confidence", [(9, 0.1, 0.9), (50, 0.1, 0.9), (200, 0.1, 0.95), (1000, 0.2, 0.3), (8000, 0.1, 0.9)]
)
def test_training_conditional_rank_by_the_beta_law(n, alpha, confidence):
    """The smallest rank whose uniform order statistic U_(k) ~ Beta(k, n-k+1) is below 1-α with probability ≤ 1-c,
    and never below the average rule's rank."""
    from scipy.stats import beta

    conditional = next((k for k in range(1, n + 1) if beta.cdf(1 - alpha, k, n - k + 1) <= 1 - confidence), n + 1)
    assert quantile_index(n, alpha, confidence) == max(conditional, quantile_index(n, alpha))
    with pytest.raises(ValueError, match="confidence"):
        quantile_index(n, alpha, 1.0)


def test_training_conditional_coverage_of_uniform_scores():
    """With U(0, 1) scores the coverage given the calibration set is the threshold itself, so it can be counted."""
    n, alpha, c, trials = 200, 0.1, 0.9, 4000
    calibration_sets = np.random.default_rng(7).uniform(size=(trials, n))
    q = {rule: np.array([conformal_quantile(s, alpha, rule) for s in calibration_sets]) for rule in (None, c)}
    se = math.sqrt(c * (1 - c) / trials)
    assert np.mean(q[c] >= 1 - alpha) >= c - 3 * se  # the promise: coverage ≥ 1 - α for a fraction c of the sets
    assert np.mean(q[None] >= 1 - alpha) < c - 10 * se  # the average rule does not make it (about 0.53)...
    assert np.mean(q[None]) >= 1 - alpha - 4 * np.std(q[None]) / math.sqrt(trials)  # ...only on average


def test_recalibrated_matches_a_fresh_calibration():
    X, y, kb, sensors, clf = _toy_problem()
    cal, test = slice(120, 200), slice(200, None)
    cp = COLEP(sensors, kb, mode="marginal", random_state=3).calibrate(X[cal], y[cal], 0.2)
    strict = cp.recalibrated(0.2, confidence=0.9)
    torch.testing.assert_close(
        strict.q, COLEP(sensors, kb, mode="marginal", random_state=3).calibrate(X[cal], y[cal], 0.2, confidence=0.9).q
    )
    assert bool((strict.q > cp.q).all()) and cp.confidence is None  # stricter, and the original is untouched
    assert bool((cp.predict_set(X[test]) <= strict.predict_set(X[test])).all())
    per_class = COLEP(sensors, kb, random_state=3).calibrate(X[cal], y[cal], 0.2)
    assert bool((per_class.recalibrated(0.2, confidence=0.9).q >= per_class.q).all())
    with pytest.raises(ValueError, match="3 labels for 80 samples"):
        COLEP(sensors, kb).calibrate(X[cal], y[cal][:3], 0.2)
    for make in (
        lambda: SplitCP(clf, "aps", random_state=5),
        lambda: RSCP(clf, sigma=0.25, n_samples=32, random_state=5),
    ):
        moved = make().calibrate(X[cal], y[cal], 0.2).recalibrated(0.1, confidence=0.9)
        assert moved.q == make().calibrate(X[cal], y[cal], 0.1, confidence=0.9).q
    # Smoothed: re-reading the base model's certificates against the stricter thresholds is certifying with them.
    kw = dict(sigma=0.25, n_samples=64, method="pipeline")
    for a, b in zip(cp.certify(X[test], [0.0, 0.2], **kw), strict.certify(X[test], [0.0, 0.2], **kw)):
        moved = a.with_threshold(strict.smoothed_thresholds(**kw))
        for f in ("sets", "certified", "certain"):
            assert torch.equal(getattr(moved, f), getattr(b, f))


def _synthetic(rng, n, k=3, signal=0.5):
    """Exchangeable data: noisy sensor readings for 3 classes and concept 'c' (carried by class 0)."""
    y = rng.integers(0, k, n)
    cls = np.clip(signal * np.eye(k)[y] + rng.uniform(0, 0.5, (n, k)), 0, 1)
    con = np.clip(0.5 * (y == 0) + rng.uniform(0, 0.5, n), 0, 1)
    return np.concatenate([cls, con[:, None]], 1), y


@pytest.mark.parametrize(
    "mode,score", [("per_class", "lac"), ("marginal", "lac"), ("marginal", "aps"), ("per_class", "aps")]
)
def test_colep_coverage_over_random_splits(mode, score):
    rng = np.random.default_rng(0)
    table, y = _synthetic(rng, 600, signal=0.5 if score == "lac" else 0.15)  # APS: top-1 accuracy below 1 - α
    sensors = lambda idx: torch.as_tensor(table[np.asarray(idx)])  # noqa: E731 - X holds row indices
    kb = Knowledge.from_concept_classes(["0", "1", "2"], {"c": ["0"]})
    alpha, covs, top1 = 0.1, [], []
    for split in range(60):
        perm = np.random.default_rng(split).permutation(600)
        cal, test = perm[:300], perm[300:]
        cp = COLEP(sensors, kb, mode=mode, fit_beta=split % 10 == 0, random_state=split, score=score).calibrate(
            cal, y[cal], alpha
        )
        covs.append(coverage(cp.predict_set(test), y[test]))
        top1.append(float((cp.probabilities(test)[:, :3].argmax(1).numpy() == y[test]).mean()))
    # E[coverage] ≥ 1 - α exactly; 60 splits × 300 test points leave a standard error ≈ 0.003.
    assert np.mean(covs) >= 1 - alpha - 0.012
    # Conservative, not vacuous. APS's top class scores exactly 0, so its sets hold at least the top class:
    # coverage is then at least the top-1 accuracy, and the bound allows for it.
    assert np.mean(covs) <= max(1 - alpha, np.mean(top1) if score == "aps" else 0) + 0.06
    assert score == "lac" or np.mean(top1) < 0.85, "the APS case needs ranks that matter"


@pytest.mark.parametrize("score", ["aps", "lac"])
def test_split_cp_coverage_over_random_splits(score):
    rng = np.random.default_rng(1)
    table, y = _synthetic(rng, 600)
    probs = table[:, :3] / table[:, :3].sum(1, keepdims=True)
    model = lambda idx: torch.as_tensor(probs[np.asarray(idx, dtype=int)])  # noqa: E731
    covs = []
    for split in range(60):
        perm = np.random.default_rng(split).permutation(600)
        cp = SplitCP(model, score, randomized=score == "aps", random_state=split).calibrate(
            perm[:300], y[perm[:300]], 0.1
        )
        covs.append(coverage(cp.predict_set(perm[300:]), y[perm[300:]]))
    assert np.mean(covs) >= 0.9 - 0.012


def test_colep_aps_scores_by_definition():
    """APS of the normalised corrected probabilities: the mass ranked strictly above j (ties are not above)."""
    from probcirc.colep import colep_scores

    rng = np.random.default_rng(2)
    pi = rng.uniform(0, 1, (50, 4))
    pi[:5, 1] = pi[:5, 2]  # ties
    want = np.zeros_like(pi)
    for n, row in enumerate(pi / pi.sum(1, keepdims=True)):
        for j in range(4):
            want[n, j] = sum(v for v in row if v > row[j])
    np.testing.assert_allclose(colep_scores(torch.as_tensor(pi), "aps").numpy(), want, atol=1e-12)
    np.testing.assert_allclose(colep_scores(torch.as_tensor(pi), "lac").numpy(), 1 - pi)


@pytest.mark.parametrize("score", ["lac", "aps"])
def test_colep_score_bounds_hold_over_the_box(score):
    """Scores of corrected probabilities drawn inside a box stay within the box's bounds; a point box is exact."""
    from probcirc.colep import colep_score_bounds, colep_scores

    rng = np.random.default_rng(3)
    a, b = rng.uniform(0, 1, (2, 40, 5))
    lo, hi = torch.as_tensor(np.minimum(a, b)), torch.as_tensor(np.maximum(a, b))
    lo[:4] = 0.0  # boxes touching zero
    s_lo, s_hi = colep_score_bounds(lo, hi, score)
    for _ in range(200):
        pi = lo + (hi - lo) * torch.as_tensor(rng.uniform(0, 1, lo.shape) ** rng.choice([0.2, 1, 5]))
        if rng.uniform() < 0.5:
            pi = torch.where(torch.as_tensor(rng.uniform(0, 1, lo.shape) < 0.5), lo, hi)  # corners of the box
        s = colep_scores(pi, score)
        assert bool((s >= s_lo - 1e-12).all()) and bool((s <= s_hi + 1e-12).all())
    point_lo, point_hi = colep_score_bounds(hi, hi, score)
    torch.testing.assert_close(point_lo, colep_scores(hi, score))
    torch.testing.assert_close(point_hi, colep_scores(hi, score))
    # Touching boxes: class 1's upper bound is class 0's lower bound and the others are points, so at the
    # shared corner the two tie exactly; rounding in the two normalisations must not invent a strict rank.
    a = torch.as_tensor(rng.uniform(0.05, 1, 5000))
    rest = torch.as_tensor(rng.uniform(0, 1, (5000, 3)))
    t_lo = torch.cat([a[:, None], a[:, None] * 0.5, rest], 1)
    t_hi = torch.cat([a[:, None] * 1.5, a[:, None], rest], 1)
    b_lo, b_hi = colep_score_bounds(t_lo, t_hi, score)
    tie = torch.cat([a[:, None], a[:, None], rest], 1)
    s = colep_scores(tie, score)
    assert bool((s >= b_lo).all()) and bool((s <= b_hi).all())


def _toy_problem():
    rng = np.random.default_rng(4)
    centers = rng.normal(0, 1.5, (3, 5))
    y = rng.integers(0, 3, 240)
    X = (centers[y] + rng.normal(0, 0.7, (240, 5))).astype(np.float32)
    kb = Knowledge.from_concept_classes(["0", "1", "2"], {"c": ["0", "1"]})
    torch.manual_seed(0)
    from probcirc.colep import train_classifier, train_sensors

    sensors = train_sensors(X[:120], y[:120], kb, hidden=(), epochs=20, lr=0.05, noise_sigma=0.2)
    clf = train_classifier(X[:120], y[:120], 3, hidden=(), epochs=20, lr=0.05)
    return X, y, kb, sensors, clf


@pytest.mark.parametrize(
    "method,score", [("sensors", "lac"), ("pipeline", "lac"), ("sensors", "aps"), ("pipeline", "aps")]
)
def test_certified_sets_contain_clean_sets(method, score):
    X, y, kb, sensors, clf = _toy_problem()
    cp = COLEP(sensors, kb, score=score).calibrate(X[120:180], y[120:180], 0.1)
    res = cp.certify(X[180:], [0.0, 0.1, 0.3], sigma=0.25, n_samples=64, method=method)
    for a, b in zip(res, res[1:]):
        assert bool((a.certified <= b.certified).all()) and bool((b.certain <= a.certain).all())  # monotone in δ
    for r in res:
        assert bool((r.certain <= r.sets).all()) and bool((r.sets <= r.certified).all())
        assert bool((r.lower <= r.upper).all())
    assert res[-1].certified_coverage(y[180:]) <= coverage(res[-1].certified, y[180:])
    rs = RSCP(clf, sigma=0.25, n_samples=64).calibrate(X[120:180], y[120:180], 0.1)
    for r in rs.certify(X[180:], [0.0, 0.3]):
        assert bool((r.certain <= r.sets).all()) and bool((r.sets <= r.certified).all())


def _tiny_calibrated(calls: list):
    """A COLEP and an RSCP calibrated on 60 random readings; ``calls`` logs every model call after calibration."""
    kb = Knowledge.from_concept_classes(["a", "b"], {"c": ["a"]})
    X = torch.rand(60, 3, generator=torch.Generator().manual_seed(0))
    y = (X[:, 1] > X[:, 0]).long().numpy()

    def readings(x):
        calls.append(len(x))
        return torch.as_tensor(x, dtype=torch.float64).clamp(0, 1)  # smoothing noise leaves [0, 1]

    cp = COLEP(readings, kb).calibrate(X, y, 0.1)
    rs = RSCP(lambda x: torch.softmax(readings(x)[:, :2], 1), sigma=0.25, n_samples=8).calibrate(X, y, 0.1)
    calls.clear()
    return X, ((cp, {"sigma": 0.25, "n_samples": 8}), (rs, {}))


@pytest.mark.parametrize("delta", [-0.1, float("nan"), [0.0, -0.2], [[0.1]]])
def test_certify_refuses_what_is_not_a_radius_before_sampling(delta):
    """A negative radius would move the Gaussian-smoothing bounds inward, past the point estimate, and
    certify what is not; NaN would make every comparison False. Both are refused up front."""
    calls: list = []
    X, models = _tiny_calibrated(calls)
    for model, kw in models:
        with pytest.raises(UsageError, match="delta"):
            model.certify(X[:4], delta, **kw)
    assert not calls


def test_certify_returns_one_result_for_any_scalar_radius_and_a_list_for_a_sequence():
    X, models = _tiny_calibrated([])
    for model, kw in models:
        for scalar in (0.1, np.float64(0.1), np.array(0.1)):
            res = model.certify(X[:4], scalar, **kw)
            assert isinstance(res, CertifiedSets) and res.delta == 0.1
        assert [r.delta for r in model.certify(X[:4], np.array([0.0, 0.1]), **kw)] == [0.0, 0.1]


@pytest.mark.parametrize("certified_delta,holds", [(0.3, True), (0.0, False)])
def test_pipeline_bounds_hold_at_perturbed_inputs(certified_delta, holds):
    """The smoothed corrected probabilities at x' = x + δ·(worst direction) lie inside bounds certified for δ.

    Bounds certified for radius 0 must miss them (the check can fail).
    """
    from probcirc.colep.smoothing import smoothed_counts

    kb = Knowledge.from_concept_classes(["0", "1", "2"], {"c": ["0", "1"]}, exclusive_classes=True)
    w = torch.tensor([[4.0, -4.0, 0.0, 3.0], [0.0, 4.0, -4.0, 3.0]])
    sensors = lambda x: torch.sigmoid(torch.as_tensor(x, dtype=torch.float32) @ w)  # noqa: E731  steep on purpose
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2)).astype(np.float32)
    y = as_probabilities(sensors, X, 3, 1)[:, :3].argmax(1).numpy()
    cp = COLEP(sensors, kb).calibrate(X[:150], y[:150], 0.1)
    delta, sigma = 0.3, 0.25
    x = torch.as_tensor(X[150:170])
    res = cp.certify(x, certified_delta, sigma=sigma, n_samples=4000, method="pipeline")
    x_far = x - delta * w[:, 0] / w[:, 0].norm()  # lowers class 0, raises class 1
    big = 40000
    est = smoothed_counts(cp._smoothed_fn("pipeline"), x_far, sigma, big, seed=9) / big
    slack = 4 * np.sqrt(0.25 / big)
    inside = (est >= res.lower.numpy() - slack).all() and (est <= res.upper.numpy() + slack).all()
    assert bool(inside) == holds


def test_pgd_stays_in_ball_and_raises_loss():
    X, y, kb, sensors, clf = _toy_problem()
    from probcirc.colep import classifier_loss, sensor_loss

    for loss in (sensor_loss(sensors, kb), classifier_loss(clf)):
        x = torch.as_tensor(X[:50])
        adv = pgd_l2(loss, x, y[:50], eps=0.5, steps=10, clip=None)
        assert float((adv - x).norm(dim=1).max()) <= 0.5 + 1e-5
        with torch.no_grad():
            assert float(loss(adv, torch.as_tensor(y[:50])).mean()) > float(loss(x, torch.as_tensor(y[:50])).mean())


def test_clopper_pearson_and_gaussian_shift():
    lo, hi = clopper_pearson(np.array([0, 5, 10]), 10, 0.05)
    assert lo[0] == 0 and hi[2] == 1
    assert hi[0] == pytest.approx(1 - 0.025 ** (1 / 10))
    assert lo[2] == pytest.approx(0.025 ** (1 / 10))
    assert lo[1] < 0.5 < hi[1]
    a, b = gaussian_shift(lo, hi, 0.5, 0.25)
    assert (a <= lo).all() and (b >= hi).all()


def test_as_probabilities_forms_and_errors():
    a, c = torch.full((2, 3), 0.5), torch.full((2, 1), 0.2)
    for out in (torch.cat([a, c], 1), (a, c), {"classes": a, "concepts": c}, np.concatenate([a.numpy(), c.numpy()], 1)):
        assert as_probabilities(lambda X, o=out: o, None, 3, 1).shape == (2, 4)
    with pytest.raises(ValueError, match="must return"):
        as_probabilities(lambda X: a, None, 3, 1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        as_probabilities(lambda X: torch.full((2, 4), 1.5), None, 3, 1)


# ------------------------------------------------------------- knowledge
def test_knowledge_json_round_trip(tmp_path):
    kb = digits_knowledge()
    path = tmp_path / "kb.json"
    kb.to_json(path)
    back = Knowledge.from_json(path)
    assert back == kb and back.to_dict() == kb.to_dict()
    assert Knowledge.from_json(kb.to_json()) == kb
    assert [c.variables for c in back.compiled_clusters] == [c.variables for c in kb.compiled_clusters]
    assert kb.labels([0, 7]).tolist()[1] == [0] * 7 + [1, 0, 0] + [0, 0, 1, 1]
    assert (
        back.exclusive_classes
        and not Knowledge.from_json(digits_knowledge(exclusive_classes=False).to_json()).exclusive_classes
    )


def _kb(**over):
    d = {
        "classes": ["a", "b"],
        "concepts": ["k"],
        "rules": [{"if": "a", "then": "k", "weight": 1.5}],
        "clusters": [{"name": "c", "rules": [0]}],
    }
    d.update(over)
    return d


@pytest.mark.parametrize(
    "over,msg",
    [
        ({"rules": [{"if": "a", "then": "zzz"}]}, "unknown class or concept 'zzz'"),
        ({"rules": [{"if": "not q", "then": "k"}]}, "unknown class or concept 'q'"),
        ({"rules": [{"if": "a", "then": "k", "weight": -1}]}, "weight must be a finite number"),
        ({"rules": [{"if": "a", "then": "a"}]}, "same variable"),
        ({"rules": [{"if": "a", "then": "k", "wieght": 1}]}, "expected keys"),
        ({"clusters": [{"name": "c", "rules": [3]}]}, "out of range"),
        ({"clusters": []}, "belong to no cluster"),
        ({"clusters": [{"name": "c", "rules": [0]}, {"name": "d", "rules": [0]}]}, "each rule belongs to one cluster"),
        ({"concepts": ["a"]}, "unique"),
        ({"concept_classes": {"k": ["nope"]}}, "unknown class 'nope'"),
        ({"extra": 1}, "unknown knowledge keys"),
        ({"exclusive_classes": "yes"}, "exclusive_classes must be true or false"),
    ],
)
def test_knowledge_validation_errors(over, msg):
    with pytest.raises(KnowledgeError, match=msg):
        Knowledge.from_dict(_kb(**over))


def test_knowledge_cluster_too_large():
    classes = [str(i) for i in range(20)]
    with pytest.raises(KnowledgeError, match="cluster 'big' has 21 variables.*max_cluster_size=12"):
        Knowledge(
            classes, ["k"], [{"if": c, "then": "k"} for c in classes], [{"name": "big", "rules": list(range(20))}]
        )
    with pytest.raises(KnowledgeError, match="not valid JSON"):
        Knowledge.from_json("{not json")
    json.loads(digits_knowledge().to_json())


@pytest.mark.parametrize("seed", range(3))
def test_circuit_distribution_is_the_normalised_rule_factor(seed):
    """With hard inputs the compiled circuit is p(μ) = exp(Σ_h w_h 1[μ ⊨ h]) / Z, checked on every μ."""
    rng = np.random.default_rng(50 + seed)
    cl, rules = random_cluster(rng, 5, 6)
    pc = ClusterCircuit(cl).pc
    mus = np.array(list(itertools.product([0, 1], repeat=5)))
    log_r = np.array([sum(w for a, ap, c, cp, w in rules if mu[a] != ap or mu[c] == cp) for mu in mus])
    want = np.exp(log_r - log_r.max())
    np.testing.assert_allclose(pc.log_prob(torch.tensor(mus)).exp().numpy(), want / want.sum(), rtol=1e-10)


def test_fit_calibrate_predict_pipeline():
    rng = np.random.default_rng(7)
    centers = rng.normal(0, 2, (3, 4))
    y = rng.integers(0, 3, 300)
    X = (centers[y] + rng.normal(0, 0.5, (300, 4))).astype(np.float32)
    kb = Knowledge.from_concept_classes(["0", "1", "2"], {"c": ["0"]})
    with pytest.raises(RuntimeError, match="fit"):
        COLEP(None, kb).calibrate(X, y, 0.1)
    cp = COLEP(None, kb).fit(X[:150], y[:150], hidden=(), epochs=10, lr=0.05).calibrate(X[150:225], y[150:225], 0.1)
    sets = cp.predict_set(X[225:])
    assert sets.dtype == torch.bool and sets.shape == (75, 3)
    assert coverage(sets, y[225:]) >= 0.7
    base = (
        SplitCP(None, "lac").fit(X[:150], y[:150], hidden=(), epochs=10, lr=0.05).calibrate(X[150:225], y[150:225], 0.1)
    )
    assert base.predict_set(X[225:]).shape == (75, 3)


def _blob(r: float, c: float, h: int, w: int, n: int) -> torch.Tensor:
    """n copies of a small Gaussian spot at (r, c): smooth, so bilinear resampling keeps its centre of mass."""
    rows, cols = torch.arange(h, dtype=torch.float64)[:, None], torch.arange(w, dtype=torch.float64)[None, :]
    img = torch.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 1.2**2))
    return (img / img.sum()).reshape(1, h * w).repeat(n, 1)


def _centroid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(row, column) centre of mass of every flattened image."""
    img = x.reshape(-1, h, w)
    m = img.sum((1, 2))
    rows, cols = torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype)
    return torch.stack([(img.sum(2) * rows).sum(1) / m, (img.sum(1) * cols).sum(1) / m], 1)


@pytest.mark.parametrize("h,w", [(25, 25), (25, 33)])
def test_random_affine_moves_points_as_promised(h, w):
    from probcirc.colep import random_affine

    g = torch.Generator().manual_seed(0)
    centre = torch.tensor([(h - 1) / 2, (w - 1) / 2])
    x = torch.rand(4, h * w)
    assert torch.allclose(random_affine((h, w), 0, 0, 0)(x, g), x, atol=1e-5)
    assert random_affine((h, w), 0, 0, 0)(x.double(), g).dtype == torch.float64
    # the centre is fixed by turns and zooms, so it moves by the shift alone: at most 2 px per axis, both ways
    moved = random_affine((h, w), 60, 0.2, 2.0)(_blob(*centre.tolist(), h, w, 400), g)
    d = _centroid(moved, h, w) - centre
    assert float(d.abs().max()) <= 2.0 + 1e-3 and float(d.min()) < -1.5 and float(d.max()) > 1.5
    # turns keep a point's distance from the centre in pixels (also on non-square images) and spread its angle
    turned = random_affine((h, w), 60, 0, 0)(_blob(centre[0], centre[1] + 5, h, w, 400), g)
    d = _centroid(turned, h, w) - centre
    radius, angle = d.norm(dim=1), torch.rad2deg(torch.atan2(d[:, 0], d[:, 1]))
    assert float((radius - 5).abs().max()) < 0.01
    assert float(angle.abs().max()) <= 61 and float(angle.min()) < -45 and float(angle.max()) > 45
    # zooms scale the distance by 1 ± scale and keep the direction
    zoomed = random_affine((h, w), 0, 0.2, 0)(_blob(centre[0], centre[1] + 5, h, w, 400), g)
    d = _centroid(zoomed, h, w) - centre
    assert float(d[:, 0].abs().max()) < 1e-6 and 3.99 < float(d[:, 1].min()) < 4.3 and 5.7 < float(d[:, 1].max()) < 6.01
    with pytest.raises(ValueError, match=str(h * w)):
        random_affine((h, w))(torch.zeros(2, 10), g)


def test_reasoner_mixture_equals_the_weighted_components():
    """The O(B·V) accumulation in Reasoner.__call__ is Σ_r β_r π̃^(r) over the (B, R+1, V) components."""
    kb = digits_knowledge(negative_weight=0.5)
    r = Reasoner(kb)
    r.beta = torch.softmax(
        torch.randn(r.num_components, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0
    )
    p = torch.rand(7, kb.num_variables, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(r(p), torch.einsum("brv,r->bv", r.components(p), r.beta), rtol=1e-12, atol=1e-14)
