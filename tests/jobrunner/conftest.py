"""Fixtures of the job tests (helpers in support.py and faults_support.py): the session's
MLflow store, production-mode settings (PostgreSQL, RabbitMQ, S3) for this process and worker
subprocesses, the workers themselves, a migrated PostgreSQL job store, and the CLI in embedded mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobrunner.support import FAST, ROOT, Workers, delete_queues


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow tracking store for the session: creating its schema costs seconds, once."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture
def job_env(
    project: Path,
    make_postgres_db,
    amqp_url: str,
    queue_prefix: str,
    s3_bucket: str,
    mlflow_store: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Production-mode settings (PostgreSQL, RabbitMQ, S3) for this process and for worker subprocesses."""
    values = {
        "JOBRUNNER_PROJECT_DIR": str(project),
        "JOBRUNNER_DATABASE_URL": make_postgres_db(migrated=True),
        "JOBRUNNER_BROKER_URL": amqp_url,
        "JOBRUNNER_QUEUE_NAME": queue_prefix,
        "JOBRUNNER_ARTIFACT_URI": f"s3://{s3_bucket}/outputs",
        "MLFLOW_TRACKING_URI": mlflow_store,
        "JOBRUNNER_MLFLOW_EXPERIMENT": f"jobs-{queue_prefix}",
        **FAST,
    }
    yield from migrated_env(values, monkeypatch)
    delete_queues(amqp_url, queue_prefix)


@pytest.fixture
def sched_env(project, make_postgres_db, mlflow_store, monkeypatch) -> Iterator[dict[str, str]]:
    """PostgreSQL job store (migrated), no broker: the queued jobs wait in the outbox (embedded workers)."""
    yield from migrated_env(
        {
            "JOBRUNNER_PROJECT_DIR": str(project),
            "JOBRUNNER_DATABASE_URL": make_postgres_db("jrsched", migrated=True),
            "MLFLOW_TRACKING_URI": mlflow_store,
            "JOBRUNNER_MLFLOW_EXPERIMENT": "schedules",
            **FAST,
        },
        monkeypatch,
    )


def migrated_env(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Set `values` for this process (settings re-read) and migrate its job store; yields the environment
    for subprocesses; afterwards drops cached settings and engines."""
    from jobrunner.config import get_settings
    from jobrunner.store.db import dispose_engines, migrate

    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    migrate(get_settings())
    yield {**os.environ, **values, "PYTHONPATH": str(ROOT)}
    get_settings.cache_clear()
    dispose_engines()


@pytest.fixture
def workers(job_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(job_env, tmp_path)
    yield pool
    pool.close()


@pytest.fixture
def pg_settings(project, make_postgres_db, monkeypatch):
    from jobrunner.config import get_settings
    from jobrunner.store.db import dispose_engines, migrate

    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", make_postgres_db(migrated=True))
    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings)
    yield settings
    dispose_engines()


@pytest.fixture
def cli(project, mlflow_store, monkeypatch):
    """Embedded settings: SQLite job store in the project, no broker, local artifact folder."""
    from click.testing import CliRunner

    from jobrunner.cli import main
    from jobrunner.config import get_settings

    for key, value in {
        **FAST,
        "MLFLOW_TRACKING_URI": mlflow_store,
        "JOBRUNNER_MLFLOW_EXPERIMENT": "cli-jobs",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str, str]:
        get_settings.cache_clear()  # a test may change the environment between calls
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    run.env = {**os.environ, "PYTHONPATH": str(ROOT)}  # type: ignore[attr-defined]
    yield run
    get_settings.cache_clear()
    from jobrunner.store.db import dispose_engines

    dispose_engines()


@pytest.fixture
def runs_api(job_env: dict[str, str]) -> Iterator:
    """The API in-process (TestClient) on job_env's job store, broker and MLflow store: what a worker
    started with `workers` records is what the API reads (test_verify_rest.py)."""
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from tests.serve.conftest import serve_settings

    store = type("Store", (), {"tracking_uri": job_env["MLFLOW_TRACKING_URI"]})()
    db = Path(job_env["JOBRUNNER_PROJECT_DIR"]) / "serve.db"
    with TestClient(
        create_app(serve_settings(store, f"sqlite:///{db}")), raise_server_exceptions=False
    ) as client:
        yield client
