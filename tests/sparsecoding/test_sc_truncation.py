"""State enumeration, truncation factors, candidate selection and annealing schedules."""

from math import comb

import numpy as np
import pytest

from sparsecoding import BSC, DSC, TSC
from sparsecoding.em import parse_anneal
from sparsecoding.truncation import (
    multi_state_template,
    n_multi_states,
    n_use,
    select_candidates,
    singleton_template,
    truncation_factors,
)


def test_multi_state_count_closed_form():
    # multi-cause states: 2..gamma active among Hprime candidates
    assert n_multi_states(8, 5) == sum(comb(8, k) for k in range(2, 6))
    assert sum(comb(8, k) for k in range(2, 6)) == 28 + 56 + 70 + 56
    T = multi_state_template(8, 5, np.array([1.0]))
    assert T.shape == (sum(comb(8, k) for k in range(2, 6)), 8)
    active = (T != 0).sum(axis=1)
    assert active.min() == 2 and active.max() == 5
    assert len({tuple(r) for r in T}) == len(T)  # no duplicates
    for k in range(2, 6):
        assert np.sum(active == k) == comb(8, k)


@pytest.mark.parametrize("Hp,gamma,values", [(6, 3, (-1.0, 1.0)), (5, 5, (1.0, 2.0, 3.0)), (4, 1, (1.0,))])
def test_multi_state_count_multivalued(Hp, gamma, values):
    T = multi_state_template(Hp, gamma, np.array(values))
    V = len(values)
    assert len(T) == sum(comb(Hp, k) * V**k for k in range(2, gamma + 1)) == n_multi_states(Hp, gamma, V)
    assert len({tuple(r) for r in T}) == len(T)
    assert set(np.unique(T)) <= {0.0, *values}


def test_engine_state_set_size():
    # zero state + all H singletons + the multi-cause states among the candidates
    et = BSC(H=20, Hprime=8, gamma=5).engine()
    assert et.n_states == 1 + 20 + sum(comb(8, k) for k in range(2, 6))
    et = TSC(H=10, Hprime=6, gamma=3).engine()
    assert et.n_states == 1 + 2 * 10 + sum(comb(6, k) * 2**k for k in range(2, 4))
    et = DSC(H=4, Hprime=4, gamma=4, values=(0, 1, 2)).engine()
    assert et.n_states == 3**4  # the full state space


def test_singleton_template():
    S = singleton_template(3, np.array([-1.0, 1.0]))
    assert S.shape == (7, 3)
    assert np.all(S[0] == 0)
    assert np.all((S[1:] != 0).sum(axis=1) == 1)
    assert S[1 + 2 * 2 + 1, 2] == 1.0 and S[1 + 2 * 2, 2] == -1.0


@pytest.mark.parametrize("pi,H,gamma", [(0.2, 10, 5), (0.1, 30, 3), (0.5, 6, 2)])
def test_truncation_factors(pi, H, gamma):
    A, B, E = truncation_factors(pi, H, gamma)
    # direct: binomial probabilities of the number of active causes
    p = np.array([comb(H, g) * pi**g * (1 - pi) ** (H - g) for g in range(H + 1)])
    assert pytest.approx(p[: gamma + 1].sum()) == A
    assert pytest.approx((np.arange(gamma + 1) * p[: gamma + 1]).sum()) == B
    # E maps the truncated mean activity back to the full one: E * B/A == pi H
    assert pytest.approx(pi * H) == E * B / A
    assert truncation_factors(pi, H, H)[2] == pytest.approx(1.0)


def test_n_use():
    A = truncation_factors(0.2, 10, 3)[0]
    assert n_use(1000, 0.2, 10, 3, 0.0) == 1000
    assert n_use(1000, 0.2, 10, 3, 1.0) == int(1000 * A)
    assert n_use(1000, 0.2, 10, 3, 0.5) == int(1000 * (1 - (1 - A) * 0.5))


def test_select_candidates_topk_sorted_and_ties():
    score = np.array([[0.1, 5.0, 3.0, 5.0, -1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    K = select_candidates(score, 3)
    assert K.tolist() == [[1, 2, 3], [0, 1, 2]]  # ties go to the lower index; rows sorted
    assert select_candidates(score, 5).tolist() == [list(range(5))] * 2


def test_anneal_schedule():
    s = parse_anneal("5:1@0.8")
    T = [s(t, 100) for t in range(100)]
    assert T[0] == 5 and T[80] == 1 and T[-1] == 1
    assert np.all(np.diff(T) <= 0)
    assert T[40] == pytest.approx(3.0)
    assert parse_anneal("1")(0, 10) == 1.0
    for bad in ("x", "0.5", "5:1@2", "5:0.5@0.5", "5:1"):
        with pytest.raises(ValueError):
            parse_anneal(bad)
