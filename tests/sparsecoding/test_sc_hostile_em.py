"""Hostile and unlucky inputs to the EM engine: non-finite steps, bad parameters, memory bombs."""

import time
import tracemalloc
import warnings

import numpy as np
import pytest

from probmod.errors import FormatError, LimitError, NumericalError, UsageError
from probmod.estimator import ConvergenceWarning
from sparsecoding import BSC, DSC, GSC, MCA, MMCA, TSC, bars_data, run_em
from sparsecoding.models.checks import parse_size
from sparsecoding.parallel import local_chunks_from_array


def test_data_scaled_by_1e200_stops_with_a_numerical_error_not_nan_parameters():
    Y = bars_data(N=300, seed=0)["Y"] * 1e200  # finite, but its squares overflow
    m = BSC(H=10, Hprime=6, gamma=3, steps=5, random_state=0)
    with pytest.raises(NumericalError, match="initialisation.*non-finite.*rescale"):
        m.fit(Y)
    assert not hasattr(m, "params_")  # nothing non-finite was kept


def test_a_step_that_overflows_is_named():
    d = bars_data(N=300, seed=0)
    m = BSC.from_params(W=d["W"], pi=0.2, sigma=2.0, Hprime=6, gamma=3, steps=5, warm_start=True)
    with pytest.raises(NumericalError, match=r"EM step 0 \(T=2\) gave non-finite"):
        m.fit(d["Y"] * 1e155)  # finite start, but the step's sums of squares overflow
    np.testing.assert_array_equal(m.params_["W"], d["W"])  # the start is untouched


GOOD = {"W": np.ones((4, 3)), "pi": 0.2, "sigma": 1.0}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"W": np.full((4, 3), np.nan)}, "W contains NaN"),
        ({"pi": 2.0}, r"pi must lie in \(0, 1\], got 2.0"),
        ({"pi": 0.0}, r"pi must lie in \(0, 1\]"),
        ({"pi": np.inf}, "pi contains NaN or infinity"),
        ({"sigma": 0.0}, "sigma must be positive"),
        ({"sigma": -1.0}, "sigma must be positive"),
        ({"W": np.ones((4, 2))}, r"W must have shape \((4|D), 3\), got \(4, 2\)"),
        ({"W": "abc"}, "W is not numeric"),
    ],
)
def test_check_params_rejects_bad_values(change, message):
    m = BSC(H=3)
    with pytest.raises(UsageError, match=message):
        m.check_params({**GOOD, **change}, D=4)
    with pytest.raises(FormatError, match="checkpoint x.h5: " + message):  # the CLI's checkpoint load
        m.check_params({**GOOD, **change}, D=4, error=FormatError, source="checkpoint x.h5")
    with pytest.raises(UsageError, match=message):  # setting parameters by hand
        BSC.from_params(H=3, **{**GOOD, **change})


def test_model_specific_parameter_checks():
    with pytest.raises(UsageError, match="missing"):
        BSC(H=3).check_params({"W": np.ones((4, 3)), "pi": 0.2})
    with pytest.raises(UsageError, match="W >= 0"):
        MCA.from_params(W=-np.ones((4, 3)), pi=0.2, sigma=1.0)
    MMCA.from_params(W=-np.ones((4, 3)), pi=0.2, sigma=1.0)  # signed causes are MMCA's point
    with pytest.raises(UsageError, match="prior must be 3 positive probabilities"):
        DSC.from_params(values=(0, 1, 2), W=np.ones((4, 3)), prior=[0.5, 0.6, -0.1], sigma=1.0)
    with pytest.raises(UsageError, match="Psi must be a symmetric positive definite"):
        GSC.from_params(**GOOD, mu=np.ones(3), Psi=-np.eye(3))
    assert TSC.from_params(**{**GOOD, "pi": 1.0}).pi_ == 1.0  # pi = 1 is allowed


def test_run_em_validates_resumed_parameters():
    # the command line resumes through run_em: a checkpoint with pi = 2 or NaN in W stops before any step
    Y = bars_data(N=100, seed=0)["Y"]
    m = BSC(H=10, Hprime=6, gamma=3)
    chunks = local_chunks_from_array(Y, 256)
    bad = {"W": np.full((25, 10), np.nan), "pi": np.array(0.2), "sigma": np.array(2.0)}
    for params, message in ((bad, "W contains NaN"), ({**bad, "W": np.ones((25, 10)), "pi": np.array(2.0)}, "pi")):
        with pytest.raises(UsageError, match=message):
            run_em(m, chunks, N=100, D=25, steps=2, params=params)


def test_huge_H_is_refused_before_allocating():
    Y = np.zeros((1000, 25))
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(LimitError) as err:
        BSC(H=18000).fit(Y)
    seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 5 and peak < 50e6
    msg = str(err.value)
    assert "H=18000" in msg and "GiB" in msg and "max_memory" in msg and "--max-memory" in msg
    # transform and score check too: their state tables alone (7.3 GiB here) are over a 1 GiB limit
    fixed = BSC.from_params(W=np.zeros((25, 18000)), pi=0.1, sigma=1.0, max_memory="1GiB")
    for query in (fixed.transform, fixed.score):
        with pytest.raises(LimitError, match="state tables and W 7.3 GiB"):
            query(Y[:2])


def test_max_memory_can_be_raised_or_lowered():
    Y = bars_data(N=200, seed=0)["Y"]
    need = BSC(H=10).check_memory(200, 25)
    with pytest.raises(LimitError):
        BSC(H=10, max_memory=need / 2).fit(Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        BSC(H=10, Hprime=5, gamma=3, steps=2, max_memory="1GiB").fit(Y)
    assert BSC(H=18000, max_memory=None).check_memory(1000, 25) > 8 * 2**30  # None: no limit


def test_memory_estimate_bounds_the_measured_peak():
    rng = np.random.default_rng(0)
    Y = np.abs(rng.normal(size=(1500, 36)))
    for cls in (BSC, MCA, GSC):
        m = cls(H=24, Hprime=6, gamma=3, steps=2, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            m.fit(Y[:20])  # compile the kernels outside the measurement
            tracemalloc.start()
            m.fit(Y)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak <= m.check_memory(1500, 36), cls.__name__


def test_parse_size():
    assert parse_size("512M") == 512e6 and parse_size("2GiB") == 2 * 2**30 and parse_size(1024) == 1024.0
    for bad in ("-1G", "lots", 0, "1X"):
        with pytest.raises(UsageError, match="max_memory"):
            parse_size(bad)
