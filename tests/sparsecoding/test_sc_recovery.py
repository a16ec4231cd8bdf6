"""Learning: the bars test for each model (data drawn from that model's own generative process).

The truth is the bars dictionary from ``bars_data``; recovery is judged by
greedy matching of learned and true columns (mean absolute error < 0.5).
"""

import numpy as np
import pytest

from sparsecoding import BSC, DSC, GSC, MCA, MMCA, TSC, bars_data, greedy_match


def assert_monotone_after_annealing(history, rtol=1e-6):
    """Exact-EM models: the truncated log-likelihood does not decrease once T = 1."""
    ll, T = history["loglik"], history["T"]
    after = ll[np.argmax(T == 1.0) + 1 :]
    assert len(after) > 5
    assert np.all(np.diff(after) >= -rtol * np.abs(after[:-1])), np.diff(after).min()


def assert_recovered(W, W_true, up_to_sign=False, tol=0.5):
    match, mae = greedy_match(W, W_true, up_to_sign=up_to_sign)
    assert np.all(mae < tol), f"bar errors {np.round(mae, 3)}"
    assert len(set(match.tolist())) == W_true.shape[1]


def test_bsc_bars_test_with_the_python_defaults():
    # the README's bars problem: H = 10 bars on 5x5, W = 10 * bars, pi = 0.2, sigma = 2, N = 1000; H' = 8, gamma = 5,
    # everything else the estimator's defaults (100 steps, T 2 -> 1 over the first 60%, as on the command line)
    d = bars_data(N=1000, size=5, pi=0.2, sigma=2.0, amplitude=10.0, model="bsc", seed=0)
    m = BSC(H=10, Hprime=8, gamma=5, random_state=0).fit(d["Y"])
    assert m.steps == 100 and m.anneal == "2:1@0.6"
    assert_recovered(m.components_.T, d["W"])  # all 10 bars
    assert m.pi_ == pytest.approx(0.2, rel=0.15)
    assert m.sigma_ == pytest.approx(2.0, rel=0.15)
    assert m.n_iter_ == 100 and m.converged_
    # after annealing ends the truncated log-likelihood does not decrease
    assert_monotone_after_annealing(m.history_)
    # the history has one row per step
    assert m.history_["W"].shape == (100, 25, 10)
    # codes: MAP states of the generating data match the true states mostly
    S_map = m.transform(d["Y"][:200], kind="map")
    match = greedy_match(m.components_.T, d["W"])[0]
    assert np.mean(S_map[:, match] == d["S"][:200]) > 0.95
    # score is the mean truncated log-likelihood of the final parameters, the value EM raised
    assert m.score(d["Y"]) >= m.history_["loglik"][-1] - 1e-9


@pytest.mark.parametrize("cls, name, kw", [(TSC, "tsc", {}), (DSC, "dsc", {"values": (0, 1, 2)}), (GSC, "gsc", {})])
def test_loglik_monotone_after_annealing_without_data_truncation(cls, name, kw):
    # truncated EM on all points (Ncut_factor = 0): the truncated log-likelihood must not decrease at T = 1
    d = bars_data(N=500, model=name, seed=1)
    m = cls(H=10, Hprime=6, gamma=3, steps=20, anneal="2:1@0.3", random_state=1, **kw).fit(d["Y"])
    assert_monotone_after_annealing(m.history_)


@pytest.mark.parametrize(
    "cls, name, kw",
    [
        (MCA, "mca", {"Hprime": 8, "gamma": 5, "steps": 40}),
        (MMCA, "mmca", {"Hprime": 8, "gamma": 5, "steps": 40}),
        (DSC, "dsc", {"Hprime": 6, "gamma": 3, "steps": 40, "Ncut_factor": 1.0, "values": (0, 1, 2)}),
    ],
)
def test_bars_recovery_other_models(cls, name, kw):
    d = bars_data(N=1000, model=name, seed=0)
    m = cls(H=10, anneal="2:1@0.6", random_state=0, **kw).fit(d["Y"])
    assert_recovered(m.components_.T, d["W"])
    assert m.pi_ == pytest.approx(0.2, rel=0.15)
    assert m.sigma_ == pytest.approx(2.0, rel=0.15)
    if name == "dsc":
        np.testing.assert_allclose(m.prior_, d["prior"], rtol=0.15)
    else:
        # MCA and MMCA soften the max by a ρ-norm in the M-step (a generalised EM step), so their
        # log-likelihood is not guaranteed to increase; it must still end close to its best value
        ll = m.history_["loglik"]
        assert ll[-1] >= ll.max() - 0.01 * abs(ll.max())


def test_tsc_bars_recovery_up_to_sign():
    d = bars_data(N=1000, model="tsc", seed=0)
    m = TSC(H=10, Hprime=7, gamma=3, steps=80, anneal="3:1@0.7", Ncut_factor=1.0, W_noise=2.0, random_state=0)
    m.fit(d["Y"])
    assert_recovered(m.components_.T, d["W"], up_to_sign=True)
    assert m.pi_ == pytest.approx(0.2, rel=0.15)
    assert m.sigma_ == pytest.approx(2.0, rel=0.15)


def test_gsc_recovers_bars_on_its_own_data():
    d = bars_data(N=1000, model="gsc", seed=0)
    # 20 steps (two thirds of the time of 30) recover as well: max bar error 0.23, pi 0.208, sigma 1.98
    m = GSC(H=10, Hprime=6, gamma=3, steps=20, anneal="2:1@0.6", Ncut_factor=1.0, random_state=0).fit(d["Y"])
    # W and the slab trade scale per cause: compare W * mu
    assert_recovered(m.components_.T * m.mu_, d["W"] * d["mu"])
    assert m.pi_ == pytest.approx(0.2, rel=0.15)
    assert m.sigma_ == pytest.approx(2.0, rel=0.15)


def test_mmca_recovers_signed_bars():
    # every other bar is negative (-7 instead of 10): causes compete by magnitude
    d = bars_data(N=1000, model="mmca", seed=0, signed=True)
    assert (d["W"] < 0).any()
    # gamma=4 and 60 steps: half the time of gamma=5 and 80 steps, with the same recovery (max bar error 0.25)
    m = MMCA(H=10, Hprime=8, gamma=4, steps=60, anneal="3:1@0.7", W_noise=2.0, random_state=0).fit(d["Y"])
    assert_recovered(m.components_.T, d["W"])  # signs included
    assert m.sigma_ == pytest.approx(2.0, rel=0.15)
