"""The drift measure of the monitoring dashboard: PSI on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from dashboards.drift import categorical_psi, drift_report, feature_drift, psi, status_of


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
    assert report[0].current_mean == pytest.approx(2, abs=0.2) and report[0].kind == "numeric"
    assert report[0].as_dict()["status"] == "drift"
    assert [status_of(v) for v in (0.05, 0.2, 0.3)] == ["stable", "watch", "drift"]
    with pytest.raises(ValueError, match="no data for feature"):
        drift_report(ref, cur, ["a", "c"])


def test_categorical_psi_over_categories_counts_unseen_ones():
    rng = np.random.default_rng(2)
    reference = rng.choice(["Biscoe", "Dream", "Torgersen"], 3000, p=[0.5, 0.35, 0.15]).tolist()
    same = rng.choice(["Biscoe", "Dream", "Torgersen"], 1000, p=[0.5, 0.35, 0.15]).tolist()
    value, unseen = categorical_psi(reference, same)
    assert value < 0.02 and unseen == 0
    shifted = rng.choice(["Biscoe", "Dream", "Torgersen"], 1000, p=[0.1, 0.2, 0.7]).tolist()
    assert categorical_psi(reference, shifted)[0] > 0.25
    new = same[:900] + ["Atlantis"] * 100  # 10% of a category the training data never had
    value, unseen = categorical_psi(reference, new)
    assert unseen == 100 and value > 0.25
    # declared categories (from the model) win over what the reference happens to contain
    assert categorical_psi(["a"] * 10, ["b"] * 10, categories=["a", "b"])[1] == 0


def test_report_mixes_kinds_from_dtypes_or_from_the_model():
    import pandas as pd

    rng = np.random.default_rng(3)
    ref = pd.DataFrame(
        {
            "x": rng.normal(0, 1, 2000),
            "island": rng.choice(["A", "B"], 2000),
            "flag": rng.choice([True, False], 2000),
            "day": pd.date_range("2024-01-01", periods=2000, freq="h"),
        }
    )
    cur = {
        "x": rng.normal(0, 1, 500).tolist(),
        "island": ["C"] * 250 + ["A"] * 250,  # half unseen
        "flag": [True] * 500,
        "day": [d.isoformat() for d in pd.date_range("2024-01-01", periods=500, freq="4h")],
    }
    report = {d.feature: d for d in drift_report({c: ref[c] for c in ref}, cur, list(ref))}
    assert report["island"].kind == "categorical" and report["island"].unseen == 250
    assert report["island"].status == "drift" and report["island"].reference_mean is None
    assert report["flag"].kind == "boolean" and report["flag"].status == "drift"
    assert report["day"].kind == "datetime" and report["day"].psi >= 0
    assert report["x"].kind == "numeric" and report["x"].status == "stable"
    # the model's word wins: a numeric-looking code column declared categorical
    codes = feature_drift("code", [1, 2, 3] * 100, [4] * 50, kind="categorical")
    assert codes.kind == "categorical" and codes.unseen == 50
    with pytest.raises(ValueError, match="unknown kind"):
        feature_drift("x", [1.0], [1.0], kind="text")
