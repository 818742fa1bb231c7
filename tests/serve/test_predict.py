"""Predictions through the in-process app: single rows, batches, schema errors, limits, storage, metrics."""

from __future__ import annotations

import pytest

from tests.serve.conftest import MODEL, READ

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def predict(client, rows, headers=READ):
    return client.post("/v1/predict", json={"rows": rows}, headers=headers)


def test_single_row_returns_class_probabilities_and_model_identity(app_client, model_store):
    r = predict(app_client, model_store.rows[:1])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": MODEL, "version": "1", "alias": "champion", "run_id": model_store.run_id}
    (p,) = body["predictions"]
    assert p["label"] == model_store.labels[0]
    assert set(p["probabilities"]) == {"0", "1"}
    assert abs(sum(p["probabilities"].values()) - 1) < 1e-9
    assert p["probabilities"][str(p["label"])] > 0.5
    assert len(r.headers["x-trace-id"]) == 32


def test_batch_predicts_every_row_in_order(app_client, model_store):
    rows = model_store.rows[:40]
    body = predict(app_client, rows).json()
    labels = [p["label"] for p in body["predictions"]]
    assert len(labels) == 40
    # a fitted logistic regression on its own training rows: nearly all right, and in request order
    assert sum(a == b for a, b in zip(labels, model_store.labels, strict=True)) >= 37
    ids = [p["prediction_id"] for p in body["predictions"]]
    assert len(set(ids)) == 40


def test_missing_unknown_and_mistyped_features_are_named_in_a_422(app_client, model_store):
    row = dict(model_store.rows[0])
    del row["mean_radius"]
    row["mean_radiuss"] = 1.0
    row["worst_area"] = "big"
    r = predict(app_client, [model_store.rows[1], row])
    assert r.status_code == 422
    body = r.json()
    assert (
        "mean_radius" in body["detail"]
        and "mean_radiuss" in body["detail"]
        and "worst_area" in body["detail"]
    )
    problems = {(p["row"], p["feature"], p["problem"]) for p in body["problems"]}
    assert problems == {
        (1, "mean_radius", "missing"),
        (1, "mean_radiuss", "unknown"),
        (1, "worst_area", "type"),
    }


@pytest.mark.parametrize("value", [None, True, "1.0", [1.0]])
def test_non_numbers_are_refused(app_client, model_store, value):
    row = dict(model_store.rows[0], mean_texture=value)
    r = predict(app_client, [row])
    assert r.status_code == 422
    assert r.json()["problems"] == [
        {
            "row": 0,
            "feature": "mean_texture",
            "problem": "type",
            "message": r.json()["problems"][0]["message"],
        }
    ]


def test_infinite_value_is_a_422_not_a_500(app_client, model_store):
    raw = '{"rows": [' + str(model_store.rows[0]).replace("'", '"').replace("17.99", "1e999") + "]}"
    r = app_client.post("/v1/predict", content=raw, headers={**READ, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert "infinity" in r.json()["detail"]


def test_empty_batch_and_malformed_bodies(app_client):
    r = predict(app_client, [])
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = app_client.post("/v1/predict", content=b"{not json", headers=READ)
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = app_client.post("/v1/predict", json={"row": {}}, headers=READ)
    assert r.status_code == 422 and '"rows"' in r.json()["detail"]
    r = app_client.post("/v1/predict", json={"rows": [1, 2]}, headers=READ)
    assert r.status_code == 422


def test_batch_over_the_limit_is_refused_with_413(app_client, model_store):
    # the app fixture sets SERVE_BATCH_LIMIT=100
    r = predict(app_client, model_store.rows[:1] * 101)
    assert r.status_code == 413
    assert "limit of 100" in r.json()["detail"]
    assert predict(app_client, model_store.rows[:1] * 100).status_code == 200


def test_predictions_are_stored_and_counted(app_client, model_store):
    from serve.store import db, models, predictions

    services = app_client.app.state.services
    assert services.writer.flush(5)
    before = db.count_rows(services.engine, models.PredictionBatch)
    body = predict(app_client, model_store.rows[:3]).json()
    assert services.writer.flush(5)
    assert db.count_rows(services.engine, models.PredictionBatch) == before + 1
    found = predictions.get_prediction(services.engine, body["predictions"][2]["prediction_id"])
    assert found.features == pytest.approx(list(model_store.rows[2].values()))
    assert found.label == body["predictions"][2]["label"]
    metrics = app_client.get("/metrics").text
    assert f'serve_predictions_total{{label="1",model="{MODEL}",version="1"}}' in metrics
    assert 'serve_http_requests_total{method="POST",route="/v1/predict",status="200"}' in metrics
    assert 'serve_model_reloads_total{outcome="success"} 1.0' in metrics


def test_recent_predictions_are_the_newest_rows_of_the_served_version(app_client, model_store):
    services = app_client.app.state.services
    first = predict(app_client, model_store.rows[5:7]).json()
    last = predict(app_client, model_store.rows[7:10]).json()
    assert services.writer.flush(5)
    recent = app_client.get("/v1/predictions", params={"limit": 4}, headers=READ)
    assert recent.status_code == 200, recent.text
    body = recent.json()
    assert body["model"]["version"] == "1" and body["columns"] == model_store.features
    assert body["count"] == 4 and len(body["rows"]) == len(body["labels"]) == 4
    newest_rows = [list(r.values()) for r in model_store.rows[7:10]] + [list(model_store.rows[5].values())]
    assert body["rows"] == newest_rows  # newest request first, rows in request order (floats round-trip)
    assert body["labels"][:3] == [p["label"] for p in last["predictions"]]
    assert body["labels"][3] == first["predictions"][0]["label"]
    assert body["newest"] >= body["oldest"]
    for bad in ("0", "10001", "many"):
        refused = app_client.get("/v1/predictions", params={"limit": bad}, headers=READ)
        assert refused.status_code == 422 and "limit" in refused.json()["detail"]
    assert app_client.get("/v1/predictions").status_code == 401


def test_model_endpoint_shows_signature_features(app_client, model_store):
    body = app_client.get("/v1/model", headers=READ).json()
    assert [f["name"] for f in body["features"]] == model_store.features
    assert {f["type"] for f in body["features"]} == {"double"}
    assert body["classes"] == [0, 1]


def test_openapi_request_schema_lists_the_models_features(app_client, model_store):
    schema = app_client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    records_ref = components["PredictRequest"]["oneOf"][0]["$ref"]
    records = components[records_ref.rsplit("/", 1)[1]]  # generated from the signature (create_model)
    assert "v1" in records["title"] and records["properties"]["rows"]["maxItems"] == 100
    row = components[records["properties"]["rows"]["items"]["$ref"].rsplit("/", 1)[1]]
    assert row["required"] == model_store.features
    assert row["additionalProperties"] is False
    assert {p["type"] for p in row["properties"].values()} == {"number"}
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/PredictRequest"}
    # the key requirement is documented like on every other protected route
    assert (
        schema["paths"]["/v1/predict"]["post"]["security"] == schema["paths"]["/v1/model"]["get"]["security"]
    )
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_columns_and_data_form_gives_the_same_answers_in_any_column_order(app_client, model_store):
    rows = model_store.rows[:5]
    by_records = predict(app_client, rows).json()["predictions"]
    columns = list(reversed(model_store.features))
    data = [[row[c] for c in columns] for row in rows]
    r = app_client.post("/v1/predict", json={"columns": columns, "data": data}, headers=READ)
    assert r.status_code == 200, r.text
    by_split = r.json()["predictions"]
    assert [p["label"] for p in by_split] == [p["label"] for p in by_records]
    for a, b in zip(by_split, by_records, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"])
    # stored like records (in signature order), so lineage and feedback work for it too
    from serve.store import predictions

    services = app_client.app.state.services
    assert services.writer.flush(5) and services.writer.dropped == 0
    found = predictions.get_prediction(services.engine, by_split[4]["prediction_id"])
    assert found.features == pytest.approx([rows[4][f] for f in model_store.features])


def test_columns_and_data_errors_name_the_feature(app_client, model_store):
    cols = list(model_store.features)
    data = [[1.0] * 30]
    r = app_client.post("/v1/predict", json={"columns": cols[:-1] + ["bogus"], "data": data}, headers=READ)
    assert r.status_code == 422
    assert {(p["feature"], p["problem"]) for p in r.json()["problems"]} == {
        ("worst_fractal_dimension", "missing"),
        ("bogus", "unknown"),
    }
    r = app_client.post("/v1/predict", json={"columns": cols, "data": [[1.0] * 29]}, headers=READ)
    assert r.status_code == 422 and r.json()["problems"][0]["row"] == 0
    r = app_client.post("/v1/predict", json={"columns": cols, "data": [[1.0] * 29 + ["x"]]}, headers=READ)
    assert r.status_code == 422 and r.json()["problems"][0]["feature"] == cols[-1]
    r = app_client.post("/v1/predict", json={"columns": cols, "data": []}, headers=READ)
    assert r.status_code == 422 and "empty" in r.json()["detail"]
    r = app_client.post("/v1/predict", json={"columns": cols, "data": [[1.0] * 30] * 101}, headers=READ)
    assert r.status_code == 413


def test_loading_a_model_leaves_mlflows_process_state_alone(model_store):
    """The loader passes URIs explicitly: mlflow.set_registry_uri would export MLFLOW_REGISTRY_URI, and every
    later child process (in CI: every later test's kernels, dvc repro, uvicorn) used that store's registry."""
    import os

    import mlflow

    from serve.model_loader import load_serving_model

    before = (
        os.environ.get("MLFLOW_REGISTRY_URI"),
        os.environ.get("MLFLOW_TRACKING_URI"),
        mlflow.get_registry_uri(),
    )
    loaded = load_serving_model(MODEL, "champion", model_store.tracking_uri)
    assert loaded.version == "1"
    assert (
        os.environ.get("MLFLOW_REGISTRY_URI"),
        os.environ.get("MLFLOW_TRACKING_URI"),
        mlflow.get_registry_uri(),
    ) == before
    assert "MLFLOW_REGISTRY_URI" not in os.environ  # nor did building the test store export one
