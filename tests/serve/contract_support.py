"""Helpers of the contract tests and of bench/contract_fuzz.py (no tests here): a real uvicorn on PostgreSQL
and RabbitMQ, and schemathesis' CLI run against it with every check.

The API under test serves the model store of tests/serve/conftest.py; its prediction log and the job store
share one fresh PostgreSQL database, and submitted jobs go to a RabbitMQ queue of their own (no worker
consumes it: jobs stay QUEUED, so cancelling and reading them is exercised, executing is not).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import AMQP_URL, PG_ADMIN_URL
from tests.serve.conftest import WRITE_KEY, ModelStore, Server, start_server

SCHEMATHESIS = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).resolve().parents[2] / "bench" / "schemathesis.toml"


@dataclass
class FuzzTarget:
    server: Server
    database: str
    queue: str


def create_database(prefix: str = "contract") -> tuple[str, str]:
    """(name, SQLAlchemy URL) of a new, empty PostgreSQL database."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://")
    return name, f"{base}/{name}"


def drop_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_ADMIN_URL)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def start_fuzz_target(store: ModelStore, tmp: Path, amqp_url: str = AMQP_URL) -> FuzzTarget:
    """uvicorn serving `store`, its stores on a fresh PostgreSQL database, jobs published to a new queue."""
    from jobrunner.config import Settings
    from jobrunner.store import db

    name, url = create_database()
    queue = f"contract-{uuid.uuid4().hex[:8]}"
    db.migrate(Settings(_env_file=None, database_url=url, project_dir=store.project))  # type: ignore[call-arg]
    db.dispose_engines()
    env = {
        "SERVE_DATABASE_URL": url,
        "JOBRUNNER_DATABASE_URL": url,
        "JOBRUNNER_BROKER_URL": amqp_url,
        "JOBRUNNER_QUEUE_NAME": queue,
        "SERVE_LOG_LEVEL": "WARNING",
        "SERVE_RETRAIN_NOTEBOOK": "notebooks/ok.ipynb",
        # The target has no worker: every job a GET /v1/jobs/{id}/events case follows stays QUEUED, and
        # each such case held its stream open for the default 15 s (3 of the run's 4 minutes, idle). An
        # idle stream closing after 1 s takes the same code path (stream, first events, idle close).
        "SERVE_EVENTS_IDLE_S": "1",
    }
    try:
        server = start_server(store, tmp, env)
    except Exception:
        drop_database(name)
        raise
    return FuzzTarget(server, name, queue)


def stop_fuzz_target(target: FuzzTarget, amqp_url: str = AMQP_URL) -> None:
    from tests.jobrunner.support import delete_queues

    target.server.stop()
    drop_database(target.database)
    delete_queues(amqp_url, target.queue)


@dataclass
class FuzzRun:
    command: list[str]
    returncode: int
    output: str
    seconds: float
    operations: int  # operations tested (JUnit test cases)
    failures: int  # failing operations (JUnit)
    cases: int | None  # test cases generated, from the summary
    tested: list[str] = field(default_factory=list)  # the operations tested ("POST /v1/jobs"), from JUnit

    def summary(self) -> str:
        return (
            f"{self.operations} operations, {self.cases} test cases, {self.failures} failing operations, "
            f"exit code {self.returncode}, {self.seconds:.0f} s"
        )


def run_schemathesis(
    url: str,
    report_dir: Path,
    *,
    seed: int,
    max_examples: int | None = None,
    max_time: float | None = None,
    workers: int = 1,
    key: str = WRITE_KEY,
    timeout: float = 900,
    config: Path = CONFIG,
) -> FuzzRun:
    """`st run URL/openapi.json --checks all` with the write key; the outcome from its JUnit report."""
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "junit.xml"
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/openapi.json",
        "-H", f"X-API-Key: {key}",
        "--checks", "all",
        "--seed", str(seed),
        "-w", str(workers),
        "--no-color",
        "--report", "junit", "--report-junit-path", str(junit),
        "--request-timeout", "60",
    ]  # fmt: skip
    if max_examples is not None:
        command += ["--max-examples", str(max_examples)]
    if max_time is not None:
        command += ["--max-time", str(int(max_time))]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=report_dir)
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    operations = failures = 0
    tested: list[str] = []
    if junit.is_file():
        suite = ET.parse(junit).getroot()  # noqa: S314 - the report schemathesis just wrote here
        operations = int(suite.get("tests", 0))
        failures = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        tested = [case.get("name", "") for case in suite.iter("testcase")]
    found = re.search(r"(\d+) generated", output)
    safe = [c if not c.startswith("X-API-Key") else "X-API-Key: <write key>" for c in command]
    return FuzzRun(
        safe, done.returncode, output, seconds, operations, failures, int(found[1]) if found else None, tested
    )
