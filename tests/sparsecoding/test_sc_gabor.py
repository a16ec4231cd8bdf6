"""The Gabor quality measure: fits recover known Gabors, noise gets a low R², coverage counts bins."""

import numpy as np
import pytest

from sparsecoding.gabor import GOOD_R2, fit_gabor, gabor, gabor_summary


def _angle_diff(a, b):
    """Distance between two orientations in degrees, modulo 180."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


@pytest.mark.parametrize(
    "true",
    [
        [5.5, 6.0, 0.6, 0.15, 1.0, 2.0, 3.0, 1.0],
        [4.0, 7.0, 2.3, 0.25, -2.0, 1.5, 2.5, -3.0],
        [6.2, 5.1, 1.2, 0.1, 0.3, 3.0, 1.8, 0.7],
    ],
)
def test_fit_recovers_a_synthetic_gabor(true):
    field = gabor(true, (12, 12))
    fit = fit_gabor(field)
    assert fit.r2 > 0.9999
    x0, y0, theta, f, _, su, sv, A = fit.params
    assert abs(x0 - true[0]) < 1e-3 and abs(y0 - true[1]) < 1e-3
    assert abs(f - true[3]) < 1e-4
    assert _angle_diff(np.degrees(theta), np.degrees(true[2])) < 0.05
    assert abs(su - true[5]) < 1e-3 and abs(sv - true[6]) < 1e-3
    assert abs(A - abs(true[7])) < 1e-3  # the sign goes into the phase
    np.testing.assert_allclose(fit.fitted, field, atol=1e-5)


def test_fit_with_noise_stays_close():
    true = [5.5, 6.0, 0.6, 0.15, 1.0, 2.0, 3.0, 1.0]
    rng = np.random.default_rng(1)
    fit = fit_gabor(gabor(true, (12, 12)) + 0.05 * rng.standard_normal((12, 12)))
    assert fit.r2 > 0.9
    assert abs(fit.frequency - 0.15) < 0.01 and _angle_diff(fit.orientation, np.degrees(0.6)) < 3


def test_noise_fields_get_a_low_r2():
    rng = np.random.default_rng(0)
    r2 = [fit_gabor(rng.standard_normal((12, 12))).r2 for _ in range(4)]
    assert max(r2) < 0.4
    assert fit_gabor(np.zeros((4, 4))).r2 == 0.0  # nothing to explain


def test_summary_counts_share_and_coverage():
    shape = (11, 11)
    good = [gabor([5, 5, t, f, 0, 2, 2, 1], shape).ravel() for t, f in ((0.1, 0.2), (1.7, 0.2), (0.9, 0.07))]
    noise = np.random.default_rng(3).standard_normal((121, 1))
    s = gabor_summary(np.column_stack(good + [noise[:, 0]]), shape)
    assert s["r2"].shape == (4,) and s["params"].shape == (4, 8)
    assert s["gabor_share"] == 0.75 and (s["r2"][:3] >= GOOD_R2).all()
    # orientations 5.7°, 97.4° and 51.6° fall in three of eight 22.5° bins; 0.07 c/px in [1/16, 1/8), 0.2 in [1/8, 1/4)
    assert s["orientation_hist"].sum() == 3 and s["orientation_coverage"] == 3 / 8
    assert s["frequency_hist"].tolist() == [0, 1, 2, 0] and s["frequency_coverage"] == 0.5
    with pytest.raises(ValueError, match="D = 11x11"):
        gabor_summary(np.zeros((120, 2)), shape)
    with pytest.raises(ValueError, match="n_starts >= 1, got 0"):
        fit_gabor(good[0].reshape(shape), n_starts=0)  # no start, no fit (it used to fail on None.x)


def test_plot_stores_the_gabor_numbers_in_the_results_file(tmp_path, no_mpi, capsys, monkeypatch):
    from sparsecoding.cli import main
    from sparsecoding.io import load_quality, load_results

    data, run = tmp_path / "bars.h5", tmp_path / "run"
    assert main(["data", "bars", "-o", str(data), "--N", "200"]) == 0
    args = ["train", "--model", "bsc", "--data", str(data), "--H", "10", "--steps", "3", "-o", str(run), "-q"]
    assert main([*args, "--no-plot"]) == 0
    assert load_quality(run) is None  # no plot, no fits
    assert main(["plot", str(run)]) == 0
    assert "Gabor share" in capsys.readouterr().out
    q = load_quality(run)
    assert q["r2"].shape == (10,) and q["params"].shape == (10, 8)
    assert sorted(q["order"].tolist()) == list(range(10))
    assert 0.0 <= q["gabor_share"] <= 1.0 and q["gabor_share"] == np.mean(q["r2"] >= GOOD_R2)
    assert "W" in load_results(run)  # the results file is still whole (and its seal renewed)
    assert (run / "results.h5").read_bytes().startswith(b"probmod sha256 ")

    def no_fitting(*args, **kwargs):
        raise AssertionError("fitted again")

    monkeypatch.setattr("sparsecoding.gabor.gabor_summary", no_fitting)
    assert main(["plot", str(run), "-o", str(tmp_path / "again")]) == 0  # the same fields: their fits are reused
    again = load_quality(run)
    for k in ("r2", "params", "order", "gabor_share"):
        np.testing.assert_array_equal(again[k], q[k])


def test_onoff_patches_are_judged_as_on_minus_off(tmp_path):
    from sparsecoding.plot import receptive_fields

    field = gabor([3, 3, 0.4, 0.2, 0, 1.5, 2, 1], (7, 7)).ravel()
    W = np.concatenate([np.maximum(field, 0), np.maximum(-field, 0)])[:, None]
    F, shape = receptive_fields(W, (7, 7))
    np.testing.assert_allclose(F[:, 0], field)
    assert gabor_summary(F, shape)["gabor_share"] == 1.0
