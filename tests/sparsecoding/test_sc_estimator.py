"""The scikit-learn estimator contract of the six models: clone, sklearn's own checks, defaults, randomness."""

import warnings

import numpy as np
import pytest
from sklearn.base import clone

from probmod.errors import UsageError
from probmod.estimator import ConvergenceWarning, Estimator, NotFittedError
from sparsecoding import BSC, DSC, GSC, MCA, MMCA, MODELS, TSC, bars_data, hyperparameter_defaults
from sparsecoding.cli import make_model

CLASSES = [BSC, TSC, DSC, MCA, MMCA, GSC]

#: sklearn's checks that do not apply, and why (every other check of check_estimator runs and must pass)
NOT_APPLICABLE = {
    # array-API dispatch (torch/cupy namespaces) is for estimators written against the array API; ours is numpy
    "check_array_api_input": "skipped by sklearn unless SCIPY_ARRAY_API=1",
}


@pytest.mark.parametrize("cls", CLASSES)
def test_clone_and_params(cls):
    m = cls(H=6, Hprime=4, gamma=2, steps=7, anneal="3:1@0.5", random_state=3)
    assert isinstance(m, Estimator)
    c = clone(m)
    assert c is not m and type(c) is cls and c.get_params() == m.get_params()
    assert c.set_params(steps=9).steps == 9 and m.steps == 7
    with pytest.raises(UsageError, match="no parameter 'seed'"):
        m.set_params(seed=1)
    # the signature is the whole set of hyperparameters: no catch-all
    assert set(m.get_params()) >= {
        "H",
        "Hprime",
        "gamma",
        "steps",
        "anneal",
        "Ncut_factor",
        "W_noise",
        "chunk_size",
        "tol",
        "max_memory",
        "warm_start",
        "random_state",
    }


@pytest.mark.parametrize("cls", CLASSES)
def test_sklearn_check_estimator(cls):
    """scikit-learn's check_estimator on each model (tiny H and steps so it runs in a second or two).

    It runs every API, input-validation, pickling, idempotence, subset- and order-invariance and transformer
    check (about 40); the only one that does not apply is listed in NOT_APPLICABLE.
    """
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after 3 steps; "does not inherit BaseEstimator"
        results = check_estimator(cls(H=3, steps=3), on_fail=None)
    failed = {r["check_name"]: str(r["exception"]) for r in results if r["status"] == "failed"}
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed, failed
    assert skipped <= set(NOT_APPLICABLE), skipped
    names = {r["check_name"] for r in results if r["status"] == "passed"}
    assert len(names) > 35
    for must in (
        "check_estimators_overwrite_params",
        "check_fit_idempotent",
        "check_transformer_general",
        "check_n_features_in_after_fitting",
        "check_estimators_pickle",
        "check_estimators_nan_inf",
        "check_methods_subset_invariance",
        "check_no_attributes_set_in_init",
        "check_dict_unchanged",
    ):
        assert must in names


@pytest.mark.parametrize("name", sorted(MODELS))
def test_python_defaults_are_the_command_lines(name):
    cls = MODELS[name]
    d = hyperparameter_defaults(name)
    assert d["steps"] == 100 and d["anneal"] == "2:1@0.6" and d["random_state"] is None
    # a run configuration that names only what it must gets the estimator's defaults; --seed is random_state
    config = {"model": name, "H": 10, "seed": 0, "data": "x.h5", "key": "y", "values": "0,1,2"}
    m = make_model(config)
    expected = cls(H=10, random_state=0).get_params()
    if name == "dsc":
        expected["values"] = (0.0, 1.0, 2.0)
    assert m.get_params() == expected
    # where the command line keeps its own table of defaults, it holds the same values
    from sparsecoding import cli

    for k, v in getattr(cli, "DEFAULTS", {}).items():
        if k in d and k != "random_state":
            v = tuple(float(x) for x in v.split(",")) if k == "values" else v  # "0,1" on the command line
            assert v == d[k], k


def test_hyperparameters_are_checked_at_fit_not_in_init():
    m = BSC(H=-1, Hprime=99, anneal="nonsense")  # __init__ stores, never validates
    assert m.H == -1
    Y = np.zeros((5, 3))
    with pytest.raises(UsageError, match="H must be a positive integer"):
        m.fit(Y)
    with pytest.raises(UsageError, match="choose Hprime <= H"):
        BSC(H=3, Hprime=4).fit(Y)
    with pytest.raises(UsageError, match="anneal"):
        BSC(H=3, anneal="nonsense").fit(Y)
    with pytest.raises(UsageError, match="random_state"):
        BSC(H=3, random_state="0").fit(Y)
    with pytest.raises(UsageError, match="max_memory"):
        BSC(H=3, max_memory="lots").fit(Y)
    with pytest.raises(UsageError, match="values"):
        DSC(H=3, values=(1, 2)).fit(Y)
    with pytest.raises(NotFittedError):
        BSC(H=3).transform(Y)
    assert not hasattr(BSC(H=3), "components_")


def test_random_state():
    Y = bars_data(N=200, seed=1)["Y"]
    kw = {"H": 10, "Hprime": 5, "gamma": 3, "steps": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a, b = BSC(**kw, random_state=5).fit(Y), BSC(**kw, random_state=5).fit(Y)
        assert a.params_["W"].tobytes() == b.params_["W"].tobytes()  # an int seeds everything
        c, e = BSC(**kw).fit(Y), BSC(**kw).fit(Y)
        assert not np.array_equal(c.components_, e.components_)  # None: fresh randomness each fit
        g = BSC(**kw, random_state=np.random.default_rng(2)).fit(Y)
        assert np.all(np.isfinite(g.components_))


def test_fitted_attributes_and_convergence_warning():
    d = bars_data(N=300, seed=2)
    with pytest.warns(ConvergenceWarning, match="did not converge in 2 steps"):
        m = BSC(H=10, Hprime=6, gamma=3, steps=2, random_state=0).fit(d["Y"])
    assert m.n_iter_ == 2 and m.converged_ is False and m.n_features_in_ == 25
    assert m.components_.shape == (10, 25) and np.array_equal(m.components_, m.params_["W"].T)
    assert isinstance(m.pi_, float) and isinstance(m.sigma_, float)
    assert [k for k in vars(m) if k.endswith("_") and not k.startswith("_")] == sorted(
        ["params_", "history_", "n_features_in_", "n_iter_", "converged_"], key=list(vars(m)).index
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        codes = BSC(H=10, Hprime=6, gamma=3, steps=2, random_state=0).fit_transform(d["Y"])
    np.testing.assert_array_equal(codes, m.transform(d["Y"]))
    with pytest.raises(UsageError, match="X has 24 features, but BSC is expecting 25 features as input"):
        m.transform(d["Y"][:, :24])


def test_from_params_and_warm_start():
    d = bars_data(N=400, seed=3)
    truth = BSC.from_params(W=d["W"], pi=d["pi"], sigma=d["sigma"], Hprime=8, gamma=5, steps=3, warm_start=True)
    assert truth.H == 10 and truth.n_features_in_ == 25
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        truth.fit(d["Y"])  # starts at the true parameters: row 0 holds their log-likelihood
    start = BSC.from_params(W=d["W"], pi=d["pi"], sigma=d["sigma"], Hprime=8, gamma=5)
    assert truth.history_["loglik"][0] == pytest.approx(start.score(d["Y"]), rel=1e-12)
    with pytest.raises(UsageError, match="unknown keyword"):
        BSC.from_params(W=d["W"], pi=0.2, sigma=2.0, mu=1.0)


@pytest.mark.parametrize("cls", CLASSES)
def test_size_hooks_match_the_statistics(cls):
    # the memory estimate counts statistics and parameters with stat_size/param_size: they must be exact
    H, D = 5, 7
    kw = {"values": (0, 1, 2)} if cls is DSC else {}
    m = cls(H=H, **kw)
    rng = np.random.default_rng(0)
    Y = rng.random((20, D))
    p = m.init_params(D, Y.mean(0), Y.var(0), rng)
    assert m.stat_size(H, D) == sum(np.size(v) for v in m.new_stats(p, D).values())
    assert m.param_size(H, D) == sum(np.size(v) for v in p.values())
