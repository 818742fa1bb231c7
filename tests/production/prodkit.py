"""Helpers of the production tests (imported by conftest and the test modules).

Production mode for real: `scripts/services.sh` starts an S3 server (moto) and an MLflow server on
PostgreSQL + S3; the pipeline runs ONCE per session in a git clone of this repository (the `ci` params
profile), its data goes to S3 with `dvc push`, and several tests inspect the result.

Select with `-m production`. PostgreSQL missing: skipped on a laptop, a failure when CI is set.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port, port_open, service_unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "services.sh"
BIN = Path(sys.executable).parent
MODEL_NAME = "breast-cancer-classifier"
# Keys the developer's shell may carry; tests set exactly what they need.
_SCRUB = ("MLFLOW_", "JOBRUNNER_", "AWS_", "DVC_", "SERVICES_")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    env.update(extra)
    return env


def run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@dataclass
class Services:
    env: dict[str, str]  # what `services.sh up` told us to export
    script_env: dict[str, str]  # how the script was invoked (ports, buckets, state folder)
    state_dir: Path
    dvc_bucket: str
    mlflow_bucket: str
    jobs_bucket: str
    up: subprocess.CompletedProcess[str]

    @property
    def s3_url(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    def s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )


def parse_exports(text: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S*)$", text, flags=re.MULTILINE))


def drop_database(admin_url: str, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def configure_s3_remote(repo: Path, services: Services, env: dict[str, str], *, keys: bool = True) -> None:
    """The documented ways: an S3 default remote in .dvc/config.local (git-ignored), with the endpoint and
    keys either in config.local too (`keys=True`) or taken from AWS_ENDPOINT_URL / AWS_* (`keys=False`)."""
    dvc = str(BIN / "dvc")
    run(
        [dvc, "remote", "add", "--local", "-d", "-f", "s3", f"s3://{services.dvc_bucket}/store"],
        cwd=repo,
        env=env,
    )
    if not keys:
        return
    for key, value in (
        ("endpointurl", services.s3_url),
        ("access_key_id", services.env["AWS_ACCESS_KEY_ID"]),
        ("secret_access_key", services.env["AWS_SECRET_ACCESS_KEY"]),
    ):
        run([dvc, "remote", "modify", "--local", "s3", key, value], cwd=repo, env=env)


@dataclass
class Pipeline:
    clone: Path
    env: dict[str, str]  # the production environment the pipeline ran with
    start_commit: str  # the commit the stages ran at (recorded in their MLflow runs)
    repro: subprocess.CompletedProcess[str]
    push: subprocess.CompletedProcess[str]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None


def invoke(monkeypatch: pytest.MonkeyPatch, cwd: Path, args: list[str], env: dict[str, str]) -> CliResult:
    """`jobrunner ARGS` in this process (CLI start-up costs seconds; subprocess tests cover the binary)."""
    from click.testing import CliRunner

    from jobrunner.cli import main
    from jobrunner.config import get_settings

    for key in list(os.environ):
        if key.startswith(_SCRUB):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, args)
    finally:
        get_settings.cache_clear()
    unexpected = None if isinstance(result.exception, SystemExit) else result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr, unexpected)
