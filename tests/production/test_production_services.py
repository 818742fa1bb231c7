"""`scripts/services.sh`: up is idempotent, status reports, the environment it prints works."""

from __future__ import annotations

import httpx
import pytest
from prodkit import ROOT, SCRIPT, Services, run

pytestmark = [pytest.mark.production, pytest.mark.services, pytest.mark.slow]


def test_up_prints_a_working_environment(services: Services) -> None:
    env = services.env
    assert env["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    assert env["AWS_ENDPOINT_URL"] == env["MLFLOW_S3_ENDPOINT_URL"]
    assert env["JOBRUNNER_ARTIFACT_URI"] == f"s3://{services.jobs_bucket}/outputs"
    assert httpx.get(f"{services.tracking_uri}/health", timeout=5).status_code == 200
    buckets = {b["Name"] for b in services.s3().list_buckets()["Buckets"]}
    assert {services.dvc_bucket, services.mlflow_bucket, services.jobs_bucket} <= buckets
    # the same exports are left in a file for `source`
    assert (services.state_dir / "env").read_text().count("export ") == len(env)


def test_second_up_is_idempotent_and_keeps_the_running_processes(services: Services) -> None:
    pids = {name: (services.state_dir / f"{name}.pid").read_text() for name in ("s3", "mlflow")}
    again = run(["bash", str(SCRIPT), "up"], cwd=ROOT, env=services.script_env, timeout=60)
    assert "S3 server already running" in again.stderr
    assert "MLflow server already running" in again.stderr
    assert f"bucket s3://{services.dvc_bucket} exists" in again.stderr
    assert f"database {services.script_env['SERVICES_MLFLOW_DB']} exists" in again.stderr
    assert {name: (services.state_dir / f"{name}.pid").read_text() for name in pids} == pids
    status = run(["bash", str(SCRIPT), "status"], cwd=ROOT, env=services.script_env)
    assert f"s3: running (pid {pids['s3'].strip()})" in status.stdout
    assert f"mlflow: running (pid {pids['mlflow'].strip()})" in status.stdout


def test_up_refuses_a_port_taken_by_someone_else(services: Services, tmp_path) -> None:
    # a second set whose S3 port is the first set's: it must not start, and not touch the first set
    env = {**services.script_env, "SERVICES_DIR": str(tmp_path)}
    proc = run(["bash", str(SCRIPT), "up"], cwd=ROOT, env=env, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"port {env['SERVICES_S3_PORT']} is taken by another process; set SERVICES_S3_PORT" in proc.stderr
    down = run(["bash", str(SCRIPT), "down"], cwd=ROOT, env=env)
    assert "stopped 0 service(s)" in down.stderr
    assert httpx.get(f"{services.tracking_uri}/health", timeout=5).status_code == 200
