"""Fixtures of the dashboard tests: a real API (uvicorn), traffic, Voila servers and a Chromium browser.

`api` serves the breast-cancer model of tests/serve/conftest.py; `voila_mixed` serves, through a second
API, a model with a categorical, a boolean and numeric features (a scikit-learn Pipeline logged with the
`jobrunner` metadata of the pipeline contract), for the typed inputs of the prediction form.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboards.client import PlatformClient
from tests.conftest import ROOT, free_port
from tests.serve.conftest import READ_KEY, WRITE_KEY, ModelStore, Server, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHIFTED = "worst_area"  # the feature the tests move far out of its training range
# Screenshots of the pages as the browser drew them (kept for a look after the run).
SHOTS = Path(os.environ.get("DASHBOARD_SCREENSHOTS", "/tmp/dashboard-screenshots"))
MIXED_MODEL = "penguin-dashboard-test"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def run_burst_worker(model_store: ModelStore, cwd: Path) -> None:
    """`jobrunner worker --burst` on the model store's project (embedded job store): runs every queued job
    and exits; the test fails with the worker's output if it did not exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "JOBRUNNER_"))}
    env.update(
        {
            "JOBRUNNER_PROJECT_DIR": str(model_store.project),
            "MLFLOW_TRACKING_URI": model_store.tracking_uri,
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        }
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "jobrunner"), "worker", "--burst"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def start_api(
    store: ModelStore,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    env: dict[str, str],
    timeout: float = 300,
) -> Server:
    """tests/serve's start_server in a fresh folder named `name`."""
    return start_server(store, tmp_path_factory.mktemp(name), env, timeout)


@pytest.fixture(scope="module")
def api(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_api(model_store, tmp_path_factory, "dash-api", {"SERVE_LOG_FLUSH_INTERVAL": "0.2"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference(model_store: ModelStore):
    import pandas as pd

    return pd.read_csv(model_store.project / model_store.data_path)


@pytest.fixture(scope="module")
def traffic(api: Server, model_store: ModelStore, reference) -> int:
    """300 rows drawn at random from the training data, with SHIFTED at 10x its value: one drifted feature."""
    sample = reference[model_store.features].sample(300, random_state=7)
    sample[SHIFTED] *= 10
    rows = sample.to_dict(orient="records")
    r = httpx.post(f"{api.url}/v1/predict", json={"rows": rows}, headers={"X-API-Key": READ_KEY})
    assert r.status_code == 200, r.text
    client = PlatformClient(api.url, READ_KEY)
    wait_for(lambda: client.recent_predictions()["count"] >= len(rows), 30, "the prediction log")
    return len(rows)


# -- Voila and the browser ---------------------------------------------------------------------------
def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_voila(
    api_url: str, reference: Path, project: Path, logdir: Path, extra: tuple[str, ...] = ()
) -> tuple[str, subprocess.Popen]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is not installed (apt-get install -y chromium); CI must run the browser tests"
            )
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "JOBRUNNER_", "DASHBOARD_"))}
    env.update(
        {
            "DASHBOARD_API_URL": api_url,
            "DASHBOARD_API_KEY": WRITE_KEY,
            "DASHBOARD_REFERENCE_DATA": str(reference),
            "DASHBOARD_REFRESH_SECONDS": "1",
            "JOBRUNNER_PROJECT_DIR": str(project),
            "PYTHONPATH": str(ROOT),
        }
    )
    log = (logdir / "voila.log").open("wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "voila"),
            str(ROOT / "notebooks" / "dashboards"),
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            f"--Voila.config_file_paths={ROOT}",
            *extra,
        ],
        env=env,
        cwd=logdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(url) or proc.poll() is not None, 180, "Voila to start")
    assert proc.poll() is None, (logdir / "voila.log").read_text()[-3000:]
    return url, proc


@pytest.fixture(scope="module")
def voila(api: Server, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, proc = start_voila(
        api.url,
        model_store.project / model_store.data_path,
        model_store.project,
        tmp_path_factory.mktemp("voila"),
    )
    yield url
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def browser(voila):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


# -- a model with categorical inputs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_api(
    model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """A second API serving a Pipeline on raw columns (numeric, categorical, boolean), contract metadata."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from tests.serve.model_factories import log_penguin_classifier, penguin_frame

    frame = penguin_frame()
    tmp = tmp_path_factory.mktemp("dash-mixed")
    data = tmp / "penguins.parquet"
    frame.to_parquet(data)
    from tests.fixtures.mlflow_state import mlflow_store

    with mlflow_store(model_store.tracking_uri):  # no MLflow URI exported to later tests
        version = mlflow.register_model(log_penguin_classifier(frame), MIXED_MODEL)
    MlflowClient(model_store.tracking_uri).set_registered_model_alias(
        MIXED_MODEL, "champion", version.version
    )
    server = start_api(model_store, tmp_path_factory, "dash-mixed-api", {"SERVE_MODEL_NAME": MIXED_MODEL})
    yield server, data
    server.stop()


@pytest.fixture(scope="module")
def voila_mixed(
    mixed_api, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    server, data = mixed_api
    url, proc = start_voila(server.url, data, model_store.project, tmp_path_factory.mktemp("voila-mixed"))
    yield url
    proc.terminate()
    proc.wait(30)
