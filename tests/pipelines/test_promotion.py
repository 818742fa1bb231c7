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
def test_decision_rule(
    candidate: float, champion: float | None, min_improvement: float, promoted: bool
) -> None:
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
    with pytest.raises(ValueError, match="unknown promotion metric .auc. for classification"):
        promote(
            model_name="m",
            model_uri="runs:/x/model",
            candidate_scores={},
            metric="auc",
            min_improvement=0.0,
            X=X,
            y=y,
        )


def test_score_reports_all_metrics() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    scores = score(LogisticRegression(max_iter=5000).fit(X, y), X, y)
    assert set(scores) == {"accuracy", "f1", "roc_auc", "precision", "recall"}
    assert all(0.5 < v <= 1.0 for v in scores.values()) and np.isfinite(list(scores.values())).all()


def test_lower_is_better_for_error_metrics() -> None:
    assert decide(2.0, 2.5, 0.0, lower_is_better=True)[0] is True
    assert decide(2.6, 2.5, 0.0, lower_is_better=True)[0] is False
    assert decide(2.45, 2.5, 0.1, lower_is_better=True)[0] is False
    assert "lower is better" in decide(2.6, 2.5, 0.0, lower_is_better=True)[1]


def _meta(task: str = "classification", target: str = "y", **kinds: str) -> dict:
    features = [{"name": n, "kind": k} for n, k in (kinds or {"a": "numeric", "b": "categorical"}).items()]
    return {"jobrunner": {"task": task, "target": target, "features": features}}


def test_compatibility_names_what_differs() -> None:
    from pipelines.promotion import compatibility

    assert compatibility(_meta(), _meta()) is None
    assert "task is 'regression', the champion's is 'classification'" in compatibility(
        _meta("regression"), _meta()
    )
    assert "target is 'z'" in compatibility(_meta(target="z"), _meta())
    changed = compatibility(_meta(a="numeric", c="boolean"), _meta())
    assert "new: ['c'], missing: ['b']" in changed and "evaluate.model_name" in changed
    assert "other kind: ['b']" in compatibility(_meta(a="numeric", b="datetime"), _meta())
    # a champion without the pipeline's metadata: compared by its signature's inputs
    assert compatibility(_meta(), None, ["a", "b"]) is None
    assert "differ from the champion's inputs" in compatibility(_meta(), {}, ["a", "x"])


def test_score_regression_and_multiclass() -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression

    X, y = _data()
    reg = score(LinearRegression().fit(X, y.astype(float)), X, y.astype(float), "regression")
    assert set(reg) == {"rmse", "mae", "r2"} and reg["rmse"] > 0 and 0 < reg["r2"] < 1
    iris = load_iris(as_frame=True)
    names = iris.target.map(dict(enumerate(iris.target_names)))
    multi = score(LogisticRegression(max_iter=2000).fit(iris.data, names), iris.data, names, "classification")
    assert multi["roc_auc"] > 0.95 and 0.9 < multi["f1"] <= 1.0
