"""Shared fixtures: the project layout, fixture notebooks, and real services.

Service fixtures talk to the PostgreSQL and RabbitMQ running on this machine and to an S3 server (moto's
standalone server) started here. Where a service is missing the test is skipped on a laptop but FAILS
when the CI environment variable is set, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_NOTEBOOKS = ROOT / "tests" / "fixtures" / "notebooks"
# The local execution service (jobrunner.cli.service) is off in tests unless a test is about it: a service
# started by a CLI call under test would outlive the test. Subprocesses inherit this.
os.environ["JOBRUNNER_SERVICE"] = "off"

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def service_unavailable(what: str, why: str) -> None:
    """Skip on a laptop without the service; fail under CI."""
    message = f"{what} is not available: {why}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: service tests must run)")
    pytest.skip(message)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _no_execution_service_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The last net: an execution service still running in this session's temporary folders when the
    session ends is stopped and reported (the fixture that started it should have: tests/pipelines and
    tests/production stop theirs; tests/execution_services.py)."""
    yield
    import warnings

    from tests.execution_services import stop_services_under

    stopped = stop_services_under(tmp_path_factory.getbasetemp())
    if stopped:
        warnings.warn(f"execution services {stopped} were left running by this session's tests", stacklevel=1)


@pytest.fixture(autouse=True)
def _mlflow_process_state() -> Iterator[None]:
    """MLflow's process-wide URIs come back as they were after every test. mlflow.set_tracking_uri and
    mlflow.set_registry_uri also EXPORT them (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI): one in-process
    call in one test made every later subprocess (kernels, dvc repro, uvicorn) register and look up
    models in that test's long-gone store. Session and module fixtures that build stores restore it
    themselves (tests/fixtures/mlflow_state.py)."""
    from tests.fixtures.mlflow_state import restore, snapshot

    saved = snapshot()
    yield
    restore(saved)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty project folder with its own MLflow store and settings; fixture notebooks copied in."""
    import shutil

    from jobrunner.config import get_settings

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(FIXTURE_NOTEBOOKS, tmp_path / "notebooks")
    monkeypatch.setenv("JOBRUNNER_PROJECT_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("JOBRUNNER_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("JOBRUNNER_DATABASE_URL", raising=False)
    monkeypatch.delenv("JOBRUNNER_BROKER_URL", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


# -- PostgreSQL ------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        import psycopg2

        psycopg2.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001
        service_unavailable("PostgreSQL", str(exc))
    return PG_ADMIN_URL


def _admin(url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _sqlalchemy_url(admin_url: str, name: str) -> str:
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def migrated_template(postgres_admin_url: str) -> Iterator[str]:
    """Name of a database migrated to the newest revision ONCE per session: a test's migrated database is
    a copy of it (CREATE DATABASE ... TEMPLATE, tens of milliseconds) instead of a run of every
    migration. Nothing connects to it after the migration (PostgreSQL copies only idle templates)."""
    from jobrunner.store.db import get_engine, migrate_url

    name = f"jrtmpl_{uuid.uuid4().hex[:10]}"
    _admin(postgres_admin_url, f'CREATE DATABASE "{name}"')
    url = _sqlalchemy_url(postgres_admin_url, name)
    try:
        migrate_url(url)
    finally:
        get_engine(url).dispose()  # its pooled connections closed: the template is idle
    yield name
    _admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_postgres_db(postgres_admin_url: str, request: pytest.FixtureRequest) -> Iterator:
    """Factory: a fresh database (dropped after the test); returns its SQLAlchemy URL. Empty by default;
    `migrated=True`: already at the newest revision, copied from the session's migrated template."""
    created: list[str] = []

    def make(prefix: str = "jrtest", *, migrated: bool = False) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        template = f' TEMPLATE "{request.getfixturevalue("migrated_template")}"' if migrated else ""
        _admin(postgres_admin_url, f'CREATE DATABASE "{name}"{template}')
        created.append(name)
        return _sqlalchemy_url(postgres_admin_url, name)

    yield make
    for name in created:
        _admin(postgres_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- RabbitMQ --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def amqp_url() -> str:
    try:
        import pika

        pika.BlockingConnection(
            pika.URLParameters(AMQP_URL + "?connection_attempts=1&socket_timeout=3")
        ).close()
    except Exception as exc:  # noqa: BLE001
        service_unavailable("RabbitMQ", repr(exc))
    return AMQP_URL


@pytest.fixture
def queue_prefix() -> str:
    """A unique name prefix so concurrent tests never share RabbitMQ queues."""
    return f"jrtest-{uuid.uuid4().hex[:8]}"


# -- the API's model store and a jobs API: used by tests/serve, tests/jobrunner and tests/dashboards ----
@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """The example model's MLflow store, built once per session (tests/serve/conftest.py, model_store_at)."""
    from tests.serve.conftest import model_store_at

    yield from model_store_at(tmp_path_factory.mktemp("serve-project"))


@pytest.fixture
def jobs_client(model_store, make_postgres_db, amqp_url, queue_prefix, monkeypatch) -> Iterator:
    """An in-process app whose jobs go to a migrated PostgreSQL job store and a RabbitMQ queue of the test's
    own, with feedback-driven retraining set up (tests/serve/test_jobs_feedback.py, test_alerts.py,
    tests/jobrunner/test_outputs_rest.py)."""
    from fastapi.testclient import TestClient

    from jobrunner.config import get_settings
    from jobrunner.store import db
    from serve.app import create_app
    from tests.jobrunner.support import delete_queues
    from tests.serve.conftest import serve_settings

    url = make_postgres_db("serve", migrated=True)
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", url)
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", amqp_url)
    monkeypatch.setenv("JOBRUNNER_QUEUE_NAME", queue_prefix)
    get_settings.cache_clear()
    db.migrate(get_settings())  # a template copy is at the newest revision already: a no-op check
    settings = serve_settings(
        model_store,
        url,
        feedback_window=10,
        feedback_min_samples=5,
        feedback_threshold=0.8,
        retrain_notebook="notebooks/ok.ipynb",
        retrain_parameters={"label": "retrain"},
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client
    db.dispose_engines()
    get_settings.cache_clear()
    delete_queues(amqp_url, queue_prefix)


# -- S3 (moto's standalone server; MinIO in docker-compose) ----------------------------------------------
@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        service_unavailable("moto S3 server", str(exc))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Environment for boto3/DVC/MLflow to use the test S3 server; returns the endpoint URL."""
    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A new, empty bucket on the test S3 server."""
    import boto3

    name = f"jrtest-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket=name)
    return name
