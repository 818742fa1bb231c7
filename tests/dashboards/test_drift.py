"""The drift measure of the monitoring dashboard: PSI on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from serve.drift import drift_report, psi, status_of


def test_same_distribution_is_stable_and_a_shift_is_drift():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, rng.normal(0, 1, 2000)) < 0.02
    assert 0.1 < psi(reference, rng.normal(0.3, 1, 2000)) < 0.25  # a moderate shift: watch
    assert psi(reference, rng.normal(1.5, 1, 2000)) > 0.25
    assert psi(reference, rng.normal(0, 1, 2000) * 3) > 0.25  # same mean, wider spread


def test_values_beyond_the_reference_range_count_in_the_outer_bins():
    reference = np.arange(1000.0)
    assert psi(reference, np.full(100, 1e9)) > 5  # everything in the top bin: a huge shift, finite
    assert np.isfinite(psi(reference, np.full(100, -1e9)))


def test_constant_reference_and_non_finite_values():
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0, abs=1e-9)
    assert psi(np.ones(100), np.full(50, 2.0)) > 0.25
    assert psi([1.0, 2.0, np.nan, 3.0], [1.0, np.inf, 2.0]) >= 0
    with pytest.raises(ValueError, match="at least one finite value"):
        psi([np.nan], [1.0])


def test_report_orders_by_psi_names_the_status_and_refuses_missing_features():
    rng = np.random.default_rng(1)
    ref = {"a": rng.normal(0, 1, 3000), "b": rng.normal(0, 1, 3000)}
    cur = {"a": rng.normal(0, 1, 500), "b": rng.normal(2, 1, 500)}
    report = drift_report(ref, cur, ["a", "b"])
    assert [d.feature for d in report] == ["b", "a"]
    assert report[0].status == "drift" and report[1].status == "stable"
    assert report[0].current_mean == pytest.approx(2, abs=0.2)
    assert report[0].as_dict()["status"] == "drift"
    assert [status_of(v) for v in (0.05, 0.2, 0.3)] == ["stable", "watch", "drift"]
    with pytest.raises(ValueError, match="no data for feature"):
        drift_report(ref, cur, ["a", "c"])
