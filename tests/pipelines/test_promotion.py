"""Promotion: the first model is promoted, a worse one is kept, a better one takes the alias."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.promotion import decide, promote, score


@pytest.mark.parametrize(
    ("candidate", "champion", "min_improvement", "promoted"),
    [
        (0.9, None, 0.0, True),
        (0.95, 0.94, 0.0, True),
        (0.94, 0.94, 0.0, False),  # a tie never churns the alias
        (0.945, 0.94, 0.01, False),
        (0.96, 0.94, 0.01, True),
        (0.90, 0.94, 0.0, False),
    ],
)
def test_decision_rule(candidate: float, champion: float | None, min_improvement: float, promoted: bool) -> None:
    assert decide(candidate, champion, min_improvement)[0] is promoted


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("promotion-test")
    yield uri
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # exported by set_experiment


def _data() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.sample(frac=1.0, random_state=0)
    return frame.drop(columns=["target"]).iloc[:, :6], frame["target"]


def _logged(model: object, X: pd.DataFrame) -> str:
    import mlflow

    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", serialization_format="cloudpickle")
    return info.model_uri


def test_first_promoted_worse_kept_better_promoted(tracking: str) -> None:
    from mlflow.tracking import MlflowClient
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    X_train, y_train, X_hold, y_hold = X.iloc[:400], y.iloc[:400], X.iloc[400:], y.iloc[400:]
    weak = DummyClassifier(strategy="stratified", random_state=0).fit(X_train, y_train)
    good = LogisticRegression(max_iter=5000).fit(X_train, y_train)
    common = dict(model_name="m", metric="roc_auc", min_improvement=0.0, X=X_hold, y=y_hold)

    first = promote(model_uri=_logged(weak, X), candidate_scores=score(weak, X_hold, y_hold), **common)
    assert first.promoted and first.champion_version is None and first.candidate_version == 1

    worse = promote(model_uri=_logged(weak, X), candidate_scores=score(weak, X_hold, y_hold), **common)
    assert not worse.promoted and worse.champion_version == 1
    assert worse.champion_score == pytest.approx(first.candidate_score)

    better = promote(model_uri=_logged(good, X), candidate_scores=score(good, X_hold, y_hold), **common)
    assert better.promoted and better.candidate_score > better.champion_score

    client = MlflowClient(tracking_uri=tracking)
    assert int(client.get_model_version_by_alias("m", "champion").version) == 3
    kept = client.get_model_version("m", "2").tags
    assert kept["promotion.decision"] == "kept" and kept["promotion.champion_before"] == "1"
    assert "below the required" in kept["promotion.reason"]


def test_unknown_metric_is_refused(tracking: str) -> None:
    X, y = _data()
    with pytest.raises(ValueError, match="unknown promotion metric 'auc'"):
        promote(model_name="m", model_uri="runs:/x/model", candidate_scores={}, metric="auc",
                min_improvement=0.0, X=X, y=y)


def test_score_reports_all_metrics() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    scores = score(LogisticRegression(max_iter=5000).fit(X, y), X, y)
    assert set(scores) == {"accuracy", "f1", "roc_auc", "precision", "recall"}
    assert all(0.5 < v <= 1.0 for v in scores.values()) and np.isfinite(list(scores.values())).all()
