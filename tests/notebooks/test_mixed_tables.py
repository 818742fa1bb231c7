"""The example pipeline on a table of every column kind with missing values: multiclass and regression.

The table is generated (tests/fixtures/tables.py), written as CSV like a user's file, and run through the
four notebooks on real kernels, with a real MLflow store (the test project's SQLite file). Checked: what
the user sees (metrics, plots, the registry alias and decision) and what the served model needs (the raw
columns in, the `jobrunner` metadata, a prediction for a category never seen in training).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from tests.fixtures.tables import FEATURES, SPECIES, mixed_table, unseen_category_row
from tests.notebooks.pipeline_runner import copy_notebooks, run_pipeline, run_stage

pytestmark = pytest.mark.slow


@pytest.fixture
def mixed_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import mlflow

    uri = f"sqlite:///{project / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the executor's store, also for this process's reads
    mlflow.set_tracking_uri(uri)
    copy_notebooks(project)
    mixed_table(rows=240, seed=0).to_csv(project / "penguins.csv", index=False)
    return project


def _ok(results: dict) -> None:
    for name, result in results.items():
        assert result.ok, f"{name}: {result.failure}"
    assert len(results) == 4


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _champion_model(project: Path, name: str):
    import mlflow

    return mlflow.pyfunc.load_model(f"models:/{name}@champion")


def test_multiclass_from_a_csv_with_text_bool_date_columns_and_gaps(mixed_project: Path) -> None:
    project = mixed_project
    results = run_pipeline(
        source="penguins.csv",
        target="species",
        model_name="penguin-species",
        prepare={"drop_columns": ["weight_gain"]},
    )
    _ok(results)
    raw = pd.read_parquet(project / "data/raw/dataset.parquet")
    assert str(raw["seen_on"].dtype).startswith("datetime64") and str(raw["tagged"].dtype) == "boolean"
    schema = json.loads((project / "data/prepared/schema.json").read_text())
    assert schema["task"] == "classification" and schema["target"] == "species"
    assert schema["classes"] == sorted(SPECIES)
    assert {f["name"]: f["kind"] for f in schema["features"]} == {
        "bill_length": "numeric",
        "flipper_length": "numeric",
        "body_mass": "numeric",
        "island": "categorical",
        "sex": "categorical",
        "tagged": "boolean",
        "seen_on": "datetime",
    }

    # multiclass metrics (macro F1, one-vs-rest ROC AUC) in DVC's metrics files
    train = json.loads((project / "metrics/train.json").read_text())
    holdout = json.loads((project / "metrics/evaluate.json").read_text())
    assert train["cv_f1"] > 0.8 and train["cv_roc_auc"] > 0.9
    assert set(holdout) == {f"holdout_{m}" for m in ("accuracy", "f1", "roc_auc", "precision", "recall")}
    assert holdout["holdout_f1"] > 0.8 and holdout["holdout_roc_auc"] > 0.9
    confusion = pd.read_csv(project / "plots/confusion.csv")
    assert set(confusion["actual"]) == set(SPECIES) and len(confusion) == 60
    assert list(pd.read_csv(project / "plots/roc.csv").columns) == ["fpr", "tpr"]
    assert pd.read_csv(project / "plots/residuals.csv").empty  # regression plot: header only
    assert (project / "plots/evaluation.png").stat().st_size > 10_000

    # registered and promoted, with the decision on the version
    client = _client(project)
    version = client.get_model_version_by_alias("penguin-species", "champion")
    assert int(version.version) == 1 and version.tags["promotion.decision"] == "promoted"
    assert (
        version.tags["promotion.metric"] == "roc_auc" and version.tags["promotion.task"] == "classification"
    )

    # the served model: raw columns in, metadata out, unseen category tolerated
    import mlflow

    info = mlflow.models.get_model_info("models:/penguin-species@champion")
    meta = info.metadata["jobrunner"]
    assert (
        meta["task"] == "classification"
        and meta["target"] == "species"
        and meta["classes"] == sorted(SPECIES)
    )
    island = next(f for f in meta["features"] if f["name"] == "island")
    assert island == {"name": "island", "kind": "categorical", "categories": ["Biscoe", "Dream", "Torgersen"]}
    assert [f["name"] for f in meta["features"]] == list(FEATURES)
    inputs = {c.name: (str(c.type), c.required) for c in info.signature.inputs.inputs}
    assert inputs["island"] == ("DataType.string", True) and inputs["seen_on"][0] == "DataType.datetime"
    assert inputs["sex"] == ("DataType.string", False) and inputs["tagged"] == ("DataType.boolean", False)

    model = _champion_model(project, "penguin-species")
    row = unseen_category_row(mixed_table(rows=240, seed=0))
    assert row["island"].iloc[0] not in island["categories"]
    predicted = model.predict(row)
    assert list(predicted) and predicted[0] in SPECIES
    local = mlflow.sklearn.load_model(str(project / "models/model"))
    proba = local.predict_proba(row)
    assert proba.shape == (1, 3) and abs(proba.sum() - 1) < 1e-9

    # the API serves the pipeline's champion: an unseen category answered, a wrong type a 422 naming it
    with _served(project, "penguin-species", tmp=project / "api") as url:
        body = _predict(
            url, "penguin-species", [_json_row(row), _json_row(mixed_table(rows=240, seed=0).loc[[5]])]
        )
        assert body["task"] == "classification" and body["model"]["name"] == "penguin-species"
        for p in body["predictions"]:
            assert p["label"] in SPECIES and set(p["probabilities"]) == set(SPECIES)
            assert abs(sum(p["probabilities"].values()) - 1) < 1e-6
        _wrong_type_is_named(url, "penguin-species", _json_row(row))


def test_regression_lower_rmse_wins_and_another_task_is_refused(mixed_project: Path) -> None:
    project = mixed_project
    first = run_pipeline(
        source="penguins.csv",
        target="weight_gain",
        model_name="penguin-gain",
        prepare={"drop_columns": ["species"]},
        train={"model_type": "linear"},
    )
    _ok(first)
    schema = json.loads((project / "data/prepared/schema.json").read_text())
    assert schema["task"] == "regression" and "classes" not in schema
    holdout = json.loads((project / "metrics/evaluate.json").read_text())
    assert set(holdout) == {"holdout_rmse", "holdout_mae", "holdout_r2"}
    assert holdout["holdout_r2"] > 0.8
    residuals = pd.read_csv(project / "plots/residuals.csv")
    assert list(residuals.columns) == ["actual", "predicted"] and len(residuals) == 60
    assert pd.read_csv(project / "plots/roc.csv").empty and pd.read_csv(project / "plots/confusion.csv").empty

    client = _client(project)
    v1 = client.get_model_version_by_alias("penguin-gain", "champion")
    assert v1.tags["promotion.metric"] == "rmse" and v1.tags["promotion.decision"] == "promoted"
    model = _champion_model(project, "penguin-gain")
    value = model.predict(unseen_category_row(mixed_table(rows=240, seed=0)))
    assert 50 < float(value[0]) < 200  # a number near the generated gains (about 80-130)
    with _served(project, "penguin-gain", tmp=project / "api") as url:
        row = _json_row(unseen_category_row(mixed_table(rows=240, seed=0)))
        body = _predict(url, "penguin-gain", [row])
        assert body["task"] == "regression"
        assert body["predictions"][0]["value"] == pytest.approx(float(value[0]), rel=1e-6)
        _wrong_type_is_named(url, "penguin-gain", row)

    # a much weaker regressor: its RMSE is higher, so the champion stays (lower is better)
    weak = run_stage(
        "train", {"model_type": "gradient_boosting", "n_estimators": 1, "learning_rate": 0.01, "cv_folds": 0}
    )
    assert weak.ok, weak.failure
    kept = run_stage("evaluate", {"model_name": "penguin-gain"})
    assert kept.ok, kept.failure
    v2 = client.get_model_version("penguin-gain", "2")
    assert v2.tags["promotion.decision"] == "kept" and "lower is better" in v2.tags["promotion.reason"]
    assert float(v2.tags["holdout_rmse"]) > float(v1.tags["holdout_rmse"])
    assert int(client.get_model_version_by_alias("penguin-gain", "champion").version) == 1

    # the regressor offered to a classifier's name: refused, not registered, not a crash
    _register_classifier_champion("penguin-species")
    refused = run_stage("evaluate", {"model_name": "penguin-species"})
    assert refused.ok, refused.failure
    tags = client.get_run(refused.run_id).data.tags
    assert tags["promotion.decision"] == "refused" and tags["promotion.version"] == "none"
    assert "task is 'regression', the champion's is 'classification'" in tags["promotion.reason"]
    assert "evaluate.model_name" in tags["promotion.reason"]
    assert [int(v.version) for v in client.search_model_versions("name = 'penguin-species'")] == [1]


def _json_row(frame: pd.DataFrame) -> dict:
    """The first row of `frame`'s features as a client sends it: JSON types, ISO dates, null for gaps."""
    row = json.loads(frame[list(FEATURES)].iloc[[0]].to_json(orient="records", date_format="iso"))[0]
    return {
        k: (v.removesuffix("Z").removesuffix(".000") if k == "seen_on" and v else v) for k, v in row.items()
    }


@contextlib.contextmanager
def _served(project: Path, name: str, tmp: Path) -> Iterator[str]:
    """A real uvicorn serving `name`@champion from the pipeline's MLflow store."""
    from types import SimpleNamespace

    from tests.serve.conftest import start_server

    tmp.mkdir(exist_ok=True)
    store = SimpleNamespace(tracking_uri=f"sqlite:///{project / 'mlflow.db'}", project=project)
    server = start_server(
        store,
        tmp,
        {"SERVE_MODELS": f"{name}@champion", "SERVE_MODEL_NAME": name, "SERVE_MODEL_POLL_INTERVAL": "0"},
    )
    try:
        yield server.url
    finally:
        server.stop()


def _predict(url: str, name: str, rows: list[dict]) -> dict:
    from tests.serve.conftest import READ

    r = httpx.post(f"{url}/v1/models/{name}/predict", json={"rows": rows}, headers=READ, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == len(rows)
    return r.json()


def _wrong_type_is_named(url: str, name: str, row: dict) -> None:
    from tests.serve.conftest import READ

    bad = dict(row, bill_length="long", tagged="maybe")
    r = httpx.post(f"{url}/v1/models/{name}/predict", json={"rows": [row, bad]}, headers=READ, timeout=60)
    assert r.status_code == 422, r.text
    problems = {(p["row"], p["feature"], p["problem"]) for p in r.json()["problems"]}
    assert problems == {(1, "bill_length", "type"), (1, "tagged", "type")}, r.text


def _register_classifier_champion(name: str) -> None:
    """A species classifier on the same columns, with the pipeline's metadata, as `name`@champion."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipelines.features import describe_features, infer_kinds, model_metadata
    from pipelines.models import build_model

    frame = mixed_table(rows=240, seed=0)
    X, y = frame[list(FEATURES)], frame["species"]
    X = X.assign(tagged=X["tagged"].astype("boolean"))
    kinds = infer_kinds(X)
    model = build_model(
        "random_forest", "classification", kinds, {"n_estimators": 5, "max_depth": None, "seed": 0}
    ).fit(X, y)
    meta = model_metadata(
        task="classification",
        target="species",
        features=describe_features(X, kinds),
        classes=list(model.classes_),
    )
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", serialization_format="cloudpickle", metadata=meta, registered_model_name=name
        )
    MlflowClient().set_registered_model_alias(name, "champion", info.registered_model_version)
