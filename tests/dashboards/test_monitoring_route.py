"""The history behind the monitoring plots (serve/routes/monitoring.py): live metric per label, volume
buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from serve.routes.monitoring import MAX_POINTS, metric_points, volume_buckets

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_live_accuracy_after_each_label_uses_the_window_of_each_version():
    rows = [(T0 + timedelta(minutes=i), "1", i % 2 == 0, "0", "0") for i in range(6)]
    rows += [(T0 + timedelta(minutes=10), "2", False, "1", "0")]
    points = metric_points(rows, window=4, regression=False)
    assert [p["value"] for p in points[:4]] == [1.0, 0.5, pytest.approx(2 / 3), 0.5]
    assert points[5]["labelled"] == 4 and points[5]["value"] == 0.5  # the window slides
    assert points[6] == {"at": T0 + timedelta(minutes=10), "version": "2", "labelled": 1, "value": 0.0}


def test_a_regressor_gets_the_mean_absolute_error_and_unparseable_labels_are_skipped():
    rows = [(T0, "1", False, "10.0", "12.5"), (T0, "1", False, "3", "2"), (T0, "1", False, "x", "1")]
    points = metric_points(rows, window=10, regression=True)
    assert [p["value"] for p in points] == [2.5, 1.75]


def test_many_labels_are_thinned_to_a_bounded_series_keeping_the_newest():
    rows = [(T0 + timedelta(seconds=i), "1", True, "1", "1") for i in range(5000)]
    points = metric_points(rows, window=200, regression=False)
    assert len(points) == MAX_POINTS and points[-1]["at"] == T0 + timedelta(seconds=4999)


def test_volume_buckets_fit_the_span():
    rows = [(T0 + timedelta(minutes=m), n, "1") for m, n in ((0, 5), (0.5, 1), (3, 2))]
    size, buckets = volume_buckets(rows, T0, T0 + timedelta(minutes=4))
    assert size == 60 and [b["rows"] for b in buckets] == [6, 2] and buckets[0]["requests"] == 2
    rows = [(T0 + timedelta(hours=h), 1, "1") for h in range(0, 48)]
    size, buckets = volume_buckets(rows, T0, T0 + timedelta(hours=48))
    assert size == 3600 and len(buckets) == 48
