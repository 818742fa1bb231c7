"""MLflow's scoring protocol: POST /v1/models/{name}/invocations answers exactly as `mlflow models serve`
(started here as a real process on the same registered model) for every body format MLflow documents."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.serve.conftest import READ, Server
from tests.serve.model_factories import ServingStore, churn_row, greeter_row

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NAMES = ("churn", "price", "greeter")


def start_mlflow_serve(serving_store: ServingStore, name: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "MLFLOW_TRACKING_URI": serving_store.tracking_uri,
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",  # it execs uvicorn
        }
    )
    uri = f"models:/{name}/{serving_store.versions[name][0]}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local"]
    process = subprocess.Popen(
        [*cmd, "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/ping", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"mlflow models serve did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def mlflow_servers(
    serving_store: ServingStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("mlflow-serve")
    started = {name: start_mlflow_serve(serving_store, name, tmp / f"{name}.log") for name in NAMES}
    yield {name: url for name, (_, url) in started.items()}
    for process, _ in started.values():
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def tables() -> dict[str, list[dict]]:
    unseen = dict(churn_row(4), plan="enterprise")
    return {
        "churn": [churn_row(i) for i in range(6)] + [unseen],
        "price": [{"area_m2": 40.0 + 10 * i, "rooms": 1.0 + i % 5} for i in range(7)],
        "greeter": [greeter_row(), greeter_row(name="bob", visits=7, score=1.75)],
    }


def bodies(rows: list[dict]) -> dict[str, dict]:
    """The request formats of MLflow's docs (deployment/deploy-model-locally), built from the same rows."""
    columns = list(rows[0])
    return {
        "dataframe_split": {
            "dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}
        },
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows},
        "inputs": {"inputs": {c: [r[c] for r in rows] for c in columns}},
    }


@pytest.mark.parametrize("name", NAMES)
def test_invocations_answer_exactly_like_mlflow_models_serve(
    models_api: Server, mlflow_servers: dict[str, str], name: str
) -> None:
    rows = tables()[name]
    for form, body in bodies(rows).items():
        if name == "greeter":
            body = {**body, "params": {"greeting": "hey", "times": 3}}
        theirs = httpx.post(mlflow_servers[name] + "/invocations", json=body, timeout=60)
        ours = httpx.post(
            f"{models_api.url}/v1/models/{name}/invocations", json=body, headers=READ, timeout=60
        )
        assert theirs.status_code == 200, (form, theirs.text[:500])
        assert ours.status_code == 200, (form, ours.text[:500])
        if name == "price":  # float64 through numpy (our fast path) vs a DataFrame: equal to the last bits
            assert ours.json()["predictions"] == pytest.approx(theirs.json()["predictions"], rel=1e-12), form
        else:
            assert ours.json() == theirs.json(), form
        assert len(ours.json()["predictions"]) == len(rows)
    if name == "greeter":
        assert ours.json()["predictions"][0].startswith("hey ANN!!! born 1990")


def test_invocations_need_an_api_key_and_are_logged(models_api: Server) -> None:
    body = {"dataframe_records": [churn_row(0)]}
    assert httpx.post(f"{models_api.url}/v1/models/churn/invocations", json=body).status_code == 401
    before = predicted_rows(models_api, "churn")
    r = httpx.post(f"{models_api.url}/v1/models/churn/invocations", json=body, headers=READ)
    assert r.status_code == 200 and len(r.headers["x-trace-id"]) == 32
    time.sleep(1.5)  # the prediction log writes in the background
    recent = httpx.get(
        f"{models_api.url}/v1/predictions", params={"limit": 1}, headers=READ, timeout=60
    ).json()
    assert recent["model"]["name"] == "churn"  # the default model (SERVE_MODEL_NAME)
    assert recent["labels"] == r.json()["predictions"]
    assert recent["rows"][0][3] == churn_row(0)["plan"]
    (label,) = r.json()["predictions"]
    assert predicted_rows(models_api, "churn").get(label, 0) == before.get(label, 0) + 1


def predicted_rows(models_api: Server, model: str) -> dict[str, float]:
    """serve_predictions_total of one model by label, from /metrics."""
    out: dict[str, float] = {}
    for line in httpx.get(models_api.url + "/metrics", timeout=60).text.splitlines():
        if line.startswith("serve_predictions_total{") and f'model="{model}"' in line:
            labels, value = line.rsplit(" ", 1)
            out[labels.split('label="', 1)[1].split('"', 1)[0]] = float(value)
    return out


def test_invocations_errors_name_the_problem(models_api: Server) -> None:
    url = f"{models_api.url}/v1/models/churn/invocations"
    both = {"dataframe_records": [churn_row(0)], "instances": [churn_row(0)]}
    r = httpx.post(url, json=both, headers=READ)
    assert r.status_code == 422 and "exactly one of" in r.json()["detail"]
    r = httpx.post(url, json={"rows": [churn_row(0)]}, headers=READ)
    assert r.status_code == 422 and "dataframe_split" in r.json()["detail"]
    r = httpx.post(url, json={"dataframe_records": [dict(churn_row(0), paperless="no")]}, headers=READ)
    assert r.status_code == 422
    assert [(p["row"], p["feature"]) for p in r.json()["problems"]] == [(0, "paperless")]
    r = httpx.post(f"{models_api.url}/v1/models/nope/invocations", json={"inputs": {}}, headers=READ)
    assert r.status_code == 404
