"""Fixtures of the API tests: a real MLflow store with a trained model, apps in-process and as uvicorn.

The model store is built once per session: a LogisticRegression trained here on scikit-learn's
breast-cancer data (snake_case columns, as 01_ingest writes them), logged with signature and input
example (cloudpickle, as 03_train does), registered as `breast-cancer-classifier` with alias `champion`,
in a run carrying the tags and artifacts jobrunner's executor records (notebook, stage, git commit, DVC
data hashes, executed notebook as ipynb + HTML, lineage.json). No notebook is executed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobrunner.tags import (
    DATA_INPUT_PREFIX,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    NOTEBOOK_TAG,
    OUTCOME_TAG,
    STAGE_TAG,
)
from tests.conftest import FIXTURE_NOTEBOOKS, ROOT, free_port

READ_KEY = "read-key-for-tests-0001"
WRITE_KEY = "write-key-for-tests-0001"
MODEL = "breast-cancer-classifier"
SWAP_MODEL = "swap-classifier"
READ = {"X-API-Key": READ_KEY}
WRITE = {"X-API-Key": WRITE_KEY}


@dataclass
class ModelStore:
    project: Path
    tracking_uri: str
    features: list[str]
    rows: list[dict[str, float]]  # real rows of the data set
    labels: list[int]
    run_id: str
    data_path: str  # the input file recorded as DVC hash, relative to the project
    data_md5: str
    commit: str
    swap_versions: tuple[str, str]


def _train_and_log(
    X, y, C: float, project: Path, data_rel: str, data_md5: str, commit: str
) -> tuple[str, str]:
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000)).fit(X, y)
    with mlflow.start_run(run_name=f"train-C{C}") as run:
        mlflow.set_tags(
            {
                NOTEBOOK_TAG: "notebooks/03_train.ipynb",
                STAGE_TAG: "train",
                GIT_COMMIT_TAG: commit,
                GIT_DIRTY_TAG: "false",
                f"{DATA_INPUT_PREFIX}{data_rel}": data_md5,
                OUTCOME_TAG: "succeeded",
            }
        )
        mlflow.log_params({"model_type": "logistic_regression", "C": C, "seed": 42})
        mlflow.log_metric("train_accuracy", float(model.score(X, y)))
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(3),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
        )
        nb_dir = project / "_artifacts"
        nb_dir.mkdir(exist_ok=True)
        (nb_dir / "03_train.html").write_text(
            f"<html><body><h1>03_train executed</h1><p>C={C}</p></body></html>"
        )
        (nb_dir / "03_train.ipynb").write_text(
            json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        )
        mlflow.log_artifact(str(nb_dir / "03_train.html"), "notebook")
        mlflow.log_artifact(str(nb_dir / "03_train.ipynb"), "notebook")
        mlflow.log_dict(
            {
                "git": {"commit": commit},
                "inputs": [{"path": data_rel, "md5": data_md5}],
                "parameters": {"C": C},
            },
            "lineage.json",
        )
    return info.model_uri, run.info.run_id


def model_store_at(project: Path) -> Iterator[ModelStore]:
    """Build the model store in `project` (an empty folder); yields it, then restores the environment.

    A plain generator so that bench/ can build the same store outside pytest.
    """
    import mlflow
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_breast_cancer

    from jobrunner.config import get_settings
    from jobrunner.execution.hashing import file_md5

    (project / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(FIXTURE_NOTEBOOKS, project / "notebooks")
    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    X, y = frame.drop(columns=["target"]).astype("float64"), frame["target"]
    (project / "data").mkdir()
    data_rel = "data/train.csv"
    frame.to_csv(project / data_rel, index=False)
    data_md5 = file_md5(project / data_rel)
    commit = "0123456789abcdef0123456789abcdef01234567"

    tracking = f"sqlite:///{project / 'mlflow.db'}"
    env = {
        "JOBRUNNER_PROJECT_DIR": str(project),
        "MLFLOW_TRACKING_URI": tracking,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    from tests.fixtures.mlflow_state import mlflow_store

    client = MlflowClient(tracking, registry_uri=tracking)
    with mlflow_store(tracking):  # logged and registered here; no MLflow URI exported to later tests
        mlflow.set_experiment("serve-tests")
        uri_a, run_a = _train_and_log(X, y, 1.0, project, data_rel, data_md5, commit)
        uri_b, _ = _train_and_log(X, y, 0.01, project, data_rel, data_md5, commit)
        v = mlflow.register_model(uri_a, MODEL)
        client.set_model_version_tag(MODEL, v.version, "source_run_id", run_a)
        client.set_registered_model_alias(MODEL, "champion", v.version)
        s1 = mlflow.register_model(uri_a, SWAP_MODEL)
        s2 = mlflow.register_model(uri_b, SWAP_MODEL)
        client.set_registered_model_alias(SWAP_MODEL, "champion", s1.version)

    yield ModelStore(
        project=project,
        tracking_uri=tracking,
        features=list(X.columns),
        rows=X.head(40).to_dict(orient="records"),
        labels=[int(v) for v in y.head(40)],
        run_id=run_a,
        data_path=data_rel,
        data_md5=data_md5,
        commit=commit,
        swap_versions=(str(s1.version), str(s2.version)),
    )
    for k, old in saved.items():
        if old is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = old
    get_settings.cache_clear()


def serve_settings(store: ModelStore, database_url: str, **overrides):
    from serve.config import Settings

    values = {
        "api_keys": f"{READ_KEY}:read,{WRITE_KEY}:write",
        "mlflow_tracking_uri": store.tracking_uri,
        "database_url": database_url,
        "model_poll_interval": 0,
        "log_json": True,
        "retrain_notebook": "notebooks/ok.ipynb",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def app_client(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """An in-process app (TestClient runs its lifespan) on a SQLite prediction store."""
    from fastapi.testclient import TestClient

    from serve.app import create_app

    db = tmp_path_factory.mktemp("serve-db") / "serve.db"
    app = create_app(serve_settings(model_store, f"sqlite:///{db}", batch_limit=100))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


# -- a real uvicorn process ----------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path
    database_url: str

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(store: Any, tmp: Path, env_extra: dict[str, str], deadline_s: float = 300) -> Server:
    """A real uvicorn serving `store` (anything with `tracking_uri` and `project`), ready on return. The
    generous deadline is for a loaded 2-core machine, where loading pyfunc models took 30-90 s."""
    port = free_port()
    database_url = f"sqlite:///{tmp / 'serve.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "JOBRUNNER_"))}
    env.update(
        {
            "SERVE_API_KEYS": f"{READ_KEY}:read,{WRITE_KEY}:write",
            "SERVE_MLFLOW_TRACKING_URI": store.tracking_uri,
            "SERVE_DATABASE_URL": database_url,
            "JOBRUNNER_PROJECT_DIR": str(store.project),
            "MLFLOW_TRACKING_URI": store.tracking_uri,
            "PYTHONPATH": str(ROOT),
            **env_extra,
        }
    )
    log_path = tmp / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serve.app:app", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, database_url)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(server.url + "/ready", timeout=5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"uvicorn did not become ready:\n{server.log()[-3000:]}")


# -- the contract target: one uvicorn on PostgreSQL + RabbitMQ for the whole session ----------------------
@pytest.fixture(scope="session")
def fuzz_target(
    model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str, amqp_url: str
) -> Iterator[Any]:
    """The API of test_contract.py and test_schedules.py (tests/serve/contract_support.py): started
    once, as a user's server lives on; tests that need a fresh state create their own objects."""
    from tests.serve.contract_support import start_fuzz_target, stop_fuzz_target

    target = start_fuzz_target(model_store, tmp_path_factory.mktemp("contract"), amqp_url)
    yield target
    stop_fuzz_target(target, amqp_url)


@pytest.fixture(scope="session")
def fuzz_api(fuzz_target: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_target.server.url, timeout=30) as client:
        yield client


# -- the registry of several model types (tests/serve/model_factories.py) and one API serving them ----------
MODELS_API_ENV = {
    "SERVE_MODELS": "churn@champion,price@champion,greeter@champion",
    "SERVE_MODEL_NAME": "churn",
    "SERVE_MODEL_POLL_INTERVAL": "0",
    "SERVE_FEEDBACK_MAE_THRESHOLD": "1000",  # regressors: retrain when live MAE is above it
    "SERVE_FEEDBACK_MIN_SAMPLES": "5",
}


@pytest.fixture(scope="session")
def serving_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.serve.model_factories import shared_serving_store

    return shared_serving_store(tmp_path_factory)


@pytest.fixture(scope="session")
def models_api(serving_store: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One uvicorn serving churn (mixed-type Pipeline, the default), price (regressor) and greeter
    (PythonModel) for test_models.py and test_invocations.py: loading three pyfunc models takes 30-90 s
    on a loaded machine, once."""
    server = start_server(serving_store, tmp_path_factory.mktemp("models-api"), MODELS_API_ENV)
    yield server
    server.stop()
