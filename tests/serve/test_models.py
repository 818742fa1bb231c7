"""Any MLflow model the registry holds, served by a real uvicorn: a mixed-type scikit-learn Pipeline (pyfunc
path), a numeric regressor (sklearn fast path) and a PythonModel with every column type, several at once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from tests.serve.conftest import READ, WRITE, Server
from tests.serve.model_factories import ServingStore, churn_row, greeter_row, start_api

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def post(models_api: Server, path: str, body: dict, headers: dict = READ) -> httpx.Response:
    return httpx.post(models_api.url + path, json=body, headers=headers, timeout=30)


def test_models_lists_every_served_model_with_its_path_and_task(models_api: Server) -> None:
    body = httpx.get(models_api.url + "/v1/models", headers=READ, timeout=30).json()
    entries = {m["name"]: m for m in body["models"]}
    assert list(entries) == ["churn", "price", "greeter"]
    assert [m["name"] for m in body["models"] if m["default"]] == ["churn"]
    assert {n: (m["path"], m["task"], m["version"]) for n, m in entries.items()} == {
        "churn": ("pyfunc", "classification", "1"),
        "price": ("sklearn", "regression", "1"),
        "greeter": ("pyfunc", "other", "1"),
    }
    assert httpx.get(models_api.url + "/v1/models", timeout=60).status_code == 401
    missing = httpx.get(models_api.url + "/v1/models/nope", headers=READ, timeout=60)
    assert missing.status_code == 404 and "churn, price, greeter" in missing.json()["detail"]


def test_model_details_show_types_kinds_categories_and_params(models_api: Server) -> None:
    churn = httpx.get(models_api.url + "/v1/model", headers=READ, timeout=60).json()  # the default model
    assert (
        churn["model"]["name"] == "churn"
        and churn["path"] == "pyfunc"
        and churn["flavor"] == "mlflow.sklearn"
    )
    assert churn["classes"] == ["no", "yes"]
    features = {f["name"]: f for f in churn["features"]}
    assert features["plan"] == {
        "name": "plan",
        "type": "string",
        "optional": False,
        "kind": "categorical",
        "categories": ["basic", "plus", "pro"],
    }
    assert (features["support_calls"]["type"], features["paperless"]["type"]) == ("long", "boolean")
    greeter = httpx.get(models_api.url + "/v1/models/greeter", headers=READ, timeout=60).json()
    assert greeter["task"] == "other" and greeter["classes"] is None
    assert {f["name"]: (f["type"], f["optional"]) for f in greeter["features"]} == {
        "name": ("string", False),
        "born": ("datetime", False),
        "nickname": ("string", True),
        "photo": ("binary", False),
        "score": ("float", False),
        "visits": ("integer", False),
    }
    assert greeter["params"] == [
        {"name": "greeting", "type": "string", "default": "hello", "shape": None},
        {"name": "times", "type": "long", "default": 1, "shape": None},
    ]


def test_mixed_pipeline_answers_an_unseen_category_and_names_a_wrong_type(
    models_api: Server, serving_store: ServingStore
) -> None:
    unseen = dict(churn_row(1), plan="enterprise", region="atlantis")
    r = post(models_api, "/v1/predict", {"rows": [churn_row(0), unseen]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "churn" and body["task"] == "classification"
    for p in body["predictions"]:
        assert p["label"] in ("no", "yes")  # the classes' own JSON type: strings
        assert set(p["probabilities"]) == {"no", "yes"}
        assert p["probabilities"][p["label"]] >= 0.5
    # probabilities computed column by column (the verified plan) equal the pipeline's own on a DataFrame
    import mlflow
    import pandas as pd

    info = httpx.get(models_api.url + "/v1/models/churn", headers=READ, timeout=60).json()
    assert info["path"] == "pyfunc" and info["column_plan"] is True
    mlflow.set_tracking_uri(serving_store.tracking_uri)
    mlflow.set_registry_uri(serving_store.tracking_uri)
    pipeline = mlflow.sklearn.load_model(f"models:/churn/{info['model']['version']}")
    frame = pd.DataFrame([churn_row(0), unseen])
    expected = pipeline.predict_proba(frame)
    got = [[p["probabilities"][c] for c in ("no", "yes")] for p in body["predictions"]]
    assert sum(got, []) == pytest.approx(expected.ravel().tolist(), rel=1e-12, abs=1e-15)
    # the same answers under the model's own name
    again = post(models_api, "/v1/models/churn/predict", {"rows": [churn_row(0), unseen]}).json()
    assert [p["probabilities"] for p in again["predictions"]] == [
        p["probabilities"] for p in body["predictions"]
    ]
    wrong = post(
        models_api, "/v1/predict", {"rows": [churn_row(0), dict(churn_row(2), support_calls="many", plan=3)]}
    )
    assert wrong.status_code == 422
    problems = {(p["row"], p["feature"], p["problem"]) for p in wrong.json()["problems"]}
    assert problems == {(1, "support_calls", "type"), (1, "plan", "type")}
    assert "support_calls" in wrong.json()["detail"] and "plan" in wrong.json()["detail"]
    messages = " ".join(p["message"] for p in wrong.json()["problems"])
    assert "an integer (MLflow type long)" in messages and "a string (MLflow type string)" in messages


@pytest.mark.parametrize(
    ("feature", "value", "expected"),
    [
        ("tenure_months", "12", "a finite number"),
        ("tenure_months", True, "a finite number"),
        ("support_calls", 2.5, "an integer"),
        ("paperless", "yes", "true or false"),
        ("plan", None, "a string"),
    ],
)
def test_each_column_type_refuses_other_json_types(
    models_api: Server, feature: str, value: object, expected: str
) -> None:
    r = post(models_api, "/v1/models/churn/predict", {"rows": [dict(churn_row(0), **{feature: value})]})
    assert r.status_code == 422, r.text
    (problem,) = r.json()["problems"]
    assert (problem["row"], problem["feature"], problem["problem"]) == (0, feature, "type")
    assert expected in problem["message"]


def test_missing_and_unknown_features_are_named(models_api: Server) -> None:
    row = churn_row(0)
    del row["region"]
    row["regoin"] = "north"
    r = post(models_api, "/v1/predict", {"rows": [row]})
    assert r.status_code == 422
    assert {(p["feature"], p["problem"]) for p in r.json()["problems"]} == {
        ("region", "missing"),
        ("regoin", "unknown"),
    }


def test_regressor_answers_a_value_per_row(models_api: Server) -> None:
    rows = [{"area_m2": 50.0, "rooms": 2}, {"area_m2": 150.0, "rooms": 5}]
    r = post(models_api, "/v1/models/price/predict", {"rows": rows})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "regression" and body["model"]["name"] == "price"
    small, big = (p["value"] for p in body["predictions"])
    # trained on 3000 per m2 + 10000 per room: the values are prices, not classes
    assert 150_000 < small < 190_000 and 460_000 < big < 510_000
    assert all("label" not in p and "probabilities" not in p for p in body["predictions"])
    split = post(
        models_api, "/v1/models/price/predict", {"columns": ["rooms", "area_m2"], "data": [[2, 50.0]]}
    ).json()
    assert split["predictions"][0]["value"] == pytest.approx(small)


def test_python_model_takes_every_column_type_optional_columns_and_params(models_api: Server) -> None:
    rows = [greeter_row(), greeter_row(name="bob", nickname=None), greeter_row(name="cy", nickname=...)]
    r = post(
        models_api, "/v1/models/greeter/predict", {"rows": rows, "params": {"greeting": "hi", "times": 2}}
    )
    assert r.status_code == 200, r.text
    outputs = [p["output"] for p in r.json()["predictions"]]
    assert outputs == [
        "hi ANN!! born 1990 nick=annie photo=10B score=0.25 visits=3",
        "hi BOB!! born 1990 nick=- photo=10B score=0.25 visits=3",
        "hi CY!! born 1990 nick=- photo=10B score=0.25 visits=3",
    ]
    defaults = post(models_api, "/v1/models/greeter/predict", {"rows": rows[:1]}).json()
    assert defaults["predictions"][0]["output"].startswith("hello ANN! born")


@pytest.mark.parametrize(
    ("feature", "value"),
    [("born", "yesterday"), ("born", 1700000000), ("photo", "not base64!"), ("visits", "3"), ("name", 5)],
)
def test_python_model_wrong_types_are_a_422_naming_the_feature(
    models_api: Server, feature: str, value: object
) -> None:
    r = post(
        models_api, "/v1/models/greeter/predict", {"rows": [greeter_row(), greeter_row(**{feature: value})]}
    )
    assert r.status_code == 422, r.text
    assert [(p["row"], p["feature"]) for p in r.json()["problems"]] == [(1, feature)]


def test_bad_params_are_a_422_naming_the_param(models_api: Server) -> None:
    r = post(
        models_api, "/v1/models/greeter/predict", {"rows": [greeter_row()], "params": {"times": "twice"}}
    )
    assert r.status_code == 422 and "times" in r.json()["detail"]
    r = post(models_api, "/v1/models/greeter/predict", {"rows": [greeter_row()], "params": {"volume": 3}})
    assert r.status_code == 422 and "volume" in r.json()["detail"]
    r = post(
        models_api, "/v1/models/price/predict", {"rows": [{"area_m2": 1.0, "rooms": 1.0}], "params": {"x": 1}}
    )
    assert r.status_code == 422 and "no params" in r.json()["detail"]


def test_recent_predictions_keep_each_values_json_type(models_api: Server) -> None:
    post(models_api, "/v1/predict", {"rows": [dict(churn_row(3), plan="pro")]})
    time.sleep(1.5)  # the background writer flushes every 0.5 s
    body = httpx.get(models_api.url + "/v1/predictions", params={"limit": 1}, headers=READ, timeout=60).json()
    assert body["columns"] == [
        "tenure_months",
        "monthly_charges",
        "support_calls",
        "plan",
        "region",
        "paperless",
    ]
    (row,) = body["rows"]
    assert (
        isinstance(row[0], float) and isinstance(row[2], int) and row[3] == "pro" and isinstance(row[5], bool)
    )
    assert body["labels"][0] in ("no", "yes")


def test_prediction_lineage_of_a_python_model_row(models_api: Server) -> None:
    pid = post(models_api, "/v1/models/greeter/predict", {"rows": [greeter_row()]}).json()["predictions"][0]
    r = httpx.get(
        models_api.url + f"/v1/predictions/{pid['prediction_id']}/lineage", headers=READ, timeout=30
    )
    assert r.status_code == 200, r.text
    stored = r.json()["prediction"]
    assert stored["label"] == pid["output"] and stored["probabilities"] is None
    assert stored["features"]["born"] == "1990-05-01T08:30:00" and stored["features"]["visits"] == 3


def test_openapi_has_a_request_schema_per_served_version(models_api: Server) -> None:
    schema = httpx.get(models_api.url + "/openapi.json", timeout=60).json()
    components = schema["components"]["schemas"]
    greeter_row_schema = components["Row_greeter_v1"]
    assert greeter_row_schema["properties"]["born"] == {
        "format": "date-time",
        "title": "Born",
        "type": "string",
    }
    assert greeter_row_schema["properties"]["photo"]["format"] == "base64"
    assert "nickname" not in greeter_row_schema["required"]
    assert components["Params_greeter_v1"]["properties"]["times"]["type"] == "integer"
    assert components["Row_churn_v1"]["properties"]["paperless"]["type"] == "boolean"
    refs = {f.get("$ref") for f in components["ModelPredictRequest"]["oneOf"]}
    assert {
        "#/components/schemas/PredictRequest_churn_v1",
        "#/components/schemas/PredictRequest_greeter_v1",
    } <= refs
    for path in (
        "/v1/models/{name}/predict",
        "/v1/models/{name}/invocations",
        "/v1/models",
        "/v1/models/{name}",
    ):
        assert path in schema["paths"]


def _hammer(url: str, path: str, body: dict, stop: threading.Event, seen: Counter, failures: list) -> None:
    with httpx.Client(base_url=url, headers=READ, timeout=30) as client:
        while not stop.is_set():
            try:
                r = client.post(path, json=body)
            except httpx.HTTPError as exc:
                failures.append(f"{path}: {exc!r}")
                continue
            if r.status_code != 200:
                failures.append(f"{path}: {r.status_code} {r.text[:200]}")
                continue
            seen[r.json()["model"]["version"]] += 1


def _wait_for_version(url: str, name: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            httpx.get(f"{url}/v1/models/{name}", headers=READ, timeout=60).json()["model"]["version"]
            == version
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} did not swap to version {version} within {timeout}s")


def test_two_models_swap_on_their_own_alias_under_load_without_failed_requests(
    serving_store: ServingStore, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from mlflow.tracking import MlflowClient

    server = start_api(
        serving_store,
        tmp_path_factory.mktemp("swap-api"),
        {"SERVE_MODELS": "churn@champion,price@champion", "SERVE_MODEL_POLL_INTERVAL": "0.3"},
    )
    client = MlflowClient(serving_store.tracking_uri)
    stop, failures = threading.Event(), []
    seen = {"churn": Counter(), "price": Counter()}
    bodies = {
        "churn": {"rows": [churn_row(0)] * 20},
        "price": {"rows": [{"area_m2": 80.0, "rooms": 3.0}] * 20},
    }
    threads = [
        threading.Thread(
            target=_hammer, args=(server.url, f"/v1/models/{n}/predict", bodies[n], stop, seen[n], failures)
        )
        for n in ("churn", "price")
        for _ in range(2)
    ]
    try:
        for t in threads:
            t.start()
        time.sleep(1)
        c1, c2 = serving_store.versions["churn"]
        p1, p2 = serving_store.versions["price"]
        for _ in range(2):
            client.set_registered_model_alias("churn", "champion", c2)  # only churn moves
            _wait_for_version(server.url, "churn", c2)
            before = Counter(seen["price"])
            time.sleep(1)
            # price kept serving its version 1 while churn swapped
            assert seen["price"][p2] == before[p2] and seen["price"][p1] > before[p1]
            client.set_registered_model_alias("price", "champion", p2)  # now price, churn stays at v2
            _wait_for_version(server.url, "price", p2)
            time.sleep(1)
            churn = httpx.get(f"{server.url}/v1/models/churn", headers=READ, timeout=60).json()
            assert churn["model"]["version"] == c2
            client.set_registered_model_alias("churn", "champion", c1)
            client.set_registered_model_alias("price", "champion", p1)
            _wait_for_version(server.url, "churn", c1)
            _wait_for_version(server.url, "price", p1)
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        client.set_registered_model_alias("churn", "champion", serving_store.versions["churn"][0])
        client.set_registered_model_alias("price", "champion", serving_store.versions["price"][0])
        server.stop()
    assert failures == []
    assert set(seen["churn"]) == {c1, c2} and min(seen["churn"].values()) > 5, seen
    assert sum(seen["price"].values()) > 5
    reloads = [
        line
        for line in server.log().splitlines()
        if "serving churn version" in line or "serving price" in line
    ]
    assert len(reloads) >= 2 + 8  # the first loads and every swap, each model on its own


def test_write_key_reads_too_and_feedback_takes_a_string_class(models_api: Server) -> None:
    p = post(models_api, "/v1/predict", {"rows": [churn_row(5)]}, headers=WRITE).json()["predictions"][0]
    r = httpx.post(
        models_api.url + "/v1/feedback",
        json={"prediction_id": p["prediction_id"], "label": p["label"]},
        headers=WRITE,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    assert r.json()["correct"] is True
    assert r.json()["true_label"] == r.json()["predicted_label"] == p["label"] and isinstance(p["label"], str)


def test_regressor_feedback_takes_true_values_reports_mae_rmse_and_triggers_retraining(
    models_api: Server,
) -> None:
    rows = [{"area_m2": 40.0 + 10 * i, "rooms": 1 + i % 5} for i in range(6)]
    predictions = post(models_api, "/v1/models/price/predict", {"rows": rows}).json()["predictions"]
    # a class label is no true value for a regressor: named, nothing stored
    wrong = post(
        models_api,
        "/v1/feedback",
        {"prediction_id": predictions[0]["prediction_id"], "label": "cheap"},
        WRITE,
    )
    assert wrong.status_code == 422 and "number" in wrong.json()["detail"]
    answers = []
    for i, p in enumerate(predictions):
        off = 2000.0 if i % 2 else -2000.0  # every value 2000 off: MAE 2000, RMSE 2000
        r = post(
            models_api,
            "/v1/feedback",
            {"prediction_id": p["prediction_id"], "label": p["value"] + off},
            WRITE,
        )
        assert r.status_code == 201, r.text
        assert r.json()["predicted_label"] == p["value"] and r.json()["true_label"] == p["value"] + off
        answers.append(r.json())
    last = answers[-1]["accuracy"]
    assert last["task"] == "regression" and last["accuracy"] is None
    assert last["labelled"] == 6 and last["threshold"] == 1000
    assert last["mae"] == pytest.approx(2000.0) and last["rmse"] == pytest.approx(2000.0)
    assert last["below_threshold"] is True  # MAE above SERVE_FEEDBACK_MAE_THRESHOLD after 5 samples
    # the trigger fired once (disarmed until MAE is back under the threshold)
    retrain = last["retrain"]
    assert retrain is not None and retrain["armed"] is False and retrain["crossings"] == 1
