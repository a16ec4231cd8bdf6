"""COLEP, SplitCP and RSCP as scikit-learn estimators: clone, get/set_params, fitted attributes, random_state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone

from probcirc.colep import COLEP, RSCP, Knowledge, SplitCP
from probmod.errors import UsageError
from probmod.estimator import Estimator, NotFittedError


def _problem():
    """Sensor readings as X (the sensors are the identity), a softmax model over the class columns."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    X = np.clip(0.4 * np.eye(3)[y] + rng.uniform(0, 0.6, (200, 3)), 0, 1)
    X = np.concatenate([X, (X[:, :1] + rng.uniform(0, 0.3, (200, 1))).clip(0, 1)], 1).astype(np.float32)
    kb = Knowledge.from_concept_classes(["0", "1", "2"], {"c": ["0"]})
    return X, y, kb


def _sensors(X):
    return torch.as_tensor(X, dtype=torch.float64)


def _model(X):
    return torch.softmax(4 * torch.as_tensor(X[:, :3], dtype=torch.float64), 1)


MAKERS = {
    "COLEP": lambda kb, **kw: COLEP(_sensors, kb, mode="marginal", **kw),
    "SplitCP": lambda kb, **kw: SplitCP(_model, "aps", **kw),
    "RSCP": lambda kb, **kw: RSCP(_model, sigma=0.25, n_samples=16, **kw),
}


def _public_fitted(est) -> list[str]:
    return sorted(k for k in vars(est) if k.endswith("_") and not k.startswith("_"))


@pytest.mark.parametrize("name", MAKERS)
def test_clone_is_unfitted_with_equal_params_and_refits_alike(name):
    X, y, kb = _problem()
    est = MAKERS[name](kb, random_state=7).calibrate(X[:100], y[:100], 0.1)
    assert isinstance(est, Estimator) and "q_" in _public_fitted(est)
    twin = clone(est)
    assert type(twin) is type(est) and _public_fitted(twin) == [] and twin.q is None
    params, twin_params = est.get_params(), twin.get_params()
    assert params.keys() == twin_params.keys() and "random_state" in params
    for key, value in params.items():
        assert twin_params[key] == value or twin_params[key] is value, key  # Knowledge compares by value
    with pytest.raises(NotFittedError, match="calibrate"):
        twin.predict_set(X[100:])
    # the same hyperparameters on the same data give the same thresholds and sets
    twin.calibrate(X[:100], y[:100], 0.1)
    assert np.array_equal(np.asarray(twin.q), np.asarray(est.q))
    assert torch.equal(twin.predict_set(X[100:]), est.predict_set(X[100:]))


@pytest.mark.parametrize("name", MAKERS)
def test_init_stores_only_and_fit_validates(name):
    _, _, kb = _problem()
    est = MAKERS[name](kb, random_state=0).set_params(score="nonsense")  # no error: __init__ and set_params only store
    assert est.score == "nonsense" and _public_fitted(est) == []
    X, y, _ = _problem()
    with pytest.raises(UsageError, match="score must be .* got 'nonsense'"):
        est.calibrate(X[:50], y[:50], 0.1)
    with pytest.raises(UsageError, match="no parameter 'sede'"):
        est.set_params(sede=1)


def test_colep_validates_its_own_params_at_calibrate():
    X, y, kb = _problem()
    for bad, msg in [
        ({"mode": "both"}, "mode must be"),
        ({"beta_fraction": 1.0}, "beta_fraction must be in"),
        ({"knowledge": {"classes": []}}, "knowledge must be a Knowledge"),
    ]:
        with pytest.raises(UsageError, match=msg):
            COLEP(_sensors, kb).set_params(**bad).calibrate(X[:50], y[:50], 0.1)
    with pytest.raises(UsageError, match="alpha must be in"):
        COLEP(_sensors, kb).calibrate(X[:50], y[:50], 1.5)


@pytest.mark.parametrize("name", MAKERS)
def test_random_state_none_draws_fresh_int_repeats(name):
    """An int gives identical results; None gives a new draw each time (here: which samples set the threshold)."""
    X, y, kb = _problem()

    def fingerprint(est):
        est.calibrate(X[:100], y[:100], 0.2)
        if name == "COLEP":
            return tuple(est._y_conf.tolist()) + tuple(est.reasoner_.beta.tolist())
        return tuple(np.round(np.asarray(est._cal_scores, dtype=float), 12).tolist())

    make = MAKERS[name]
    assert fingerprint(make(kb, random_state=3)) == fingerprint(make(kb, random_state=3))
    fresh = {fingerprint(make(kb, random_state=None)) for _ in range(3)}
    assert len(fresh) == 3
    assert fingerprint(make(kb, random_state=np.random.default_rng(1))) == fingerprint(
        make(kb, random_state=np.random.default_rng(1))
    )


def test_fit_sets_trained_attributes_and_leaves_hyperparameters_alone():
    X, y, kb = _problem()
    cp = COLEP(None, kb, random_state=0).fit(X[:100], y[:100], hidden=(), epochs=2)
    assert cp.sensors is None and isinstance(cp.sensors_, torch.nn.Module)
    again = COLEP(None, kb, random_state=0).fit(X[:100], y[:100], hidden=(), epochs=2)
    for a, b in zip(cp.sensors_.parameters(), again.sensors_.parameters()):
        assert torch.equal(a, b)  # random_state seeds the training
    assert not hasattr(clone(cp), "sensors_")
    base = SplitCP(None, "lac").fit(X[:100], y[:100], hidden=(), epochs=2)
    assert base.model is None and isinstance(base.model_, torch.nn.Module)
    assert base.calibrate(X[100:150], y[100:150], 0.1).predict_set(X[150:]).shape == (50, 3)


def test_library_progress_is_off_by_default_and_reports_when_asked(capfd):
    import io

    from probcirc.colep import smoothed_counts, train_sensors

    X, y, kb = _problem()
    train_sensors(X[:50], y[:50], kb, hidden=(), epochs=2)
    smoothed_counts(_sensors, X[:5], 0.25, 8)
    assert capfd.readouterr().err == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    from probmod import progress as progress_module

    stream = Tty()
    with pytest.MonkeyPatch.context() as mp:  # a terminal: the bar is drawn on it
        mp.setattr(progress_module.sys, "stderr", stream)
        smoothed_counts(_sensors, X[:5], 0.25, 8, progress=True)
    assert "smoothing (8 draws)" in stream.getvalue()
