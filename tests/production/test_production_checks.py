"""`jobrunner check`: bad production configuration fails fast and names the setting to fix."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prodkit import BIN, CliResult, Pipeline, Services, base_env, free_port, invoke, port_open, run

pytestmark = [pytest.mark.production, pytest.mark.services]

FAST_S = 30  # 3 s to connect, no retries (boto and MLflow retry for minutes); the CLI starts in seconds


def check(cwd: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = run([str(BIN / "jobrunner"), "check"], cwd=cwd, env=env, timeout=120, check=False)
    return proc, time.monotonic() - started


def check_here(monkeypatch: pytest.MonkeyPatch, cwd: Path, env: dict[str, str]) -> tuple[CliResult, float]:
    started = time.monotonic()
    result = invoke(monkeypatch, cwd, ["check"], env)
    assert result.exception is None
    return result, time.monotonic() - started


def assert_names(
    proc: subprocess.CompletedProcess[str] | CliResult, elapsed: float, setting: str, *phrases: str
) -> None:
    code = proc.returncode if isinstance(proc, subprocess.CompletedProcess) else proc.exit_code
    assert code == 3, proc.stdout + proc.stderr
    assert elapsed < FAST_S
    assert f"settings to fix: {setting}" in proc.stderr
    for phrase in phrases:
        assert phrase in proc.stderr
    assert "Traceback" not in proc.stderr and "botocore" not in proc.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A DVC project without git whose only remote is a local folder (as `dvc init --no-scm` leaves it).

    The files are written directly: the `dvc remote` commands cost seconds each and are exercised by the
    pipeline fixture already.
    """
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = True\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def add_local_remote(project: Path, name: str, **options: str) -> None:
    """What `dvc remote add --local -d NAME URL` + `dvc remote modify --local NAME KEY VALUE` write."""
    lines = ["[core]", f"    remote = {name}", f"['remote \"{name}\"']"]
    lines += [f"    {key} = {value}" for key, value in options.items()]
    (project / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def prod_env(services: Services, project: Path, **overrides: str) -> dict[str, str]:
    return base_env(**{**services.env, "JOBRUNNER_PROJECT_DIR": str(project), **overrides})


def prod_vars(services: Services, project: Path, **overrides: str) -> dict[str, str]:
    """Only the production settings (for in-process runs)."""
    return {**services.env, "JOBRUNNER_PROJECT_DIR": str(project), **overrides}


def test_check_passes_on_the_services_with_the_s3_dvc_remote(pipeline: Pipeline, services: Services) -> None:
    proc, _ = check(pipeline.clone, pipeline.env)
    assert proc.returncode == 0, proc.stderr
    assert f"ok    MLflow tracking server: MLflow server at {services.tracking_uri} is healthy" in proc.stdout
    assert f"ok    S3 bucket of DVC remote 's3': s3://{services.dvc_bucket} is reachable" in proc.stdout
    assert (
        f"ok    S3 bucket of JOBRUNNER_ARTIFACT_URI: s3://{services.jobs_bucket} is reachable" in proc.stdout
    )


def test_unreachable_s3_endpoint_names_aws_endpoint_url(services: Services, project: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proc, elapsed = check(project, prod_env(services, project, AWS_ENDPOINT_URL=dead))
    assert_names(proc, elapsed, "AWS_ENDPOINT_URL", f"the S3 endpoint {dead} is unreachable")


def test_missing_artifact_bucket_names_jobrunner_artifact_uri(
    services: Services, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = prod_vars(services, project, JOBRUNNER_ARTIFACT_URI="s3://no-such-bucket-here/outputs")
    proc, elapsed = check_here(monkeypatch, project, env)
    assert_names(
        proc,
        elapsed,
        "JOBRUNNER_ARTIFACT_URI",
        "bucket 'no-such-bucket-here' named by JOBRUNNER_ARTIFACT_URI does not exist",
    )


def test_missing_dvc_remote_bucket_names_the_remote(
    services: Services, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_local_remote(project, "store", url="s3://no-such-dvc-bucket/store", endpointurl=services.s3_url)
    proc, elapsed = check_here(monkeypatch, project, prod_vars(services, project))
    assert_names(
        proc,
        elapsed,
        "DVC remote 'store'",
        "bucket 'no-such-dvc-bucket' named by DVC remote 'store'",
        "dvc remote modify --local store url",
    )


def test_unreachable_mlflow_server_names_mlflow_tracking_uri(
    services: Services, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proc, elapsed = check_here(monkeypatch, project, prod_vars(services, project, MLFLOW_TRACKING_URI=dead))
    assert_names(proc, elapsed, "MLFLOW_TRACKING_URI", f"the MLflow server at {dead} is unreachable")


@dataclass(frozen=True)
class AuthS3:
    url: str
    key_id: str  # a key the server knows, allowed everything
    secret: str
    bucket: str


@pytest.fixture(scope="module")
def s3_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthS3]:
    """An S3 server that checks credentials (moto with IAM auth on) and knows exactly one key."""
    import boto3

    port, log_path = free_port(), tmp_path_factory.mktemp("moto-auth") / "moto.log"
    # the first 4 requests are let through unauthenticated: they issue the one key and make a bucket
    env = base_env(INITIAL_NO_AUTH_ACTION_COUNT="4")
    log = log_path.open("w")
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        anon = {
            "endpoint_url": url,
            "aws_access_key_id": "x",
            "aws_secret_access_key": "x",
            "region_name": "us-east-1",
        }
        iam = boto3.client("iam", **anon)
        iam.create_user(UserName="jobrunner")
        key = iam.create_access_key(UserName="jobrunner")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="jobrunner", PolicyName="all", PolicyDocument=json.dumps(policy))
        boto3.client("s3", **anon).create_bucket(Bucket="outputs")
        yield AuthS3(url, key["AccessKeyId"], key["SecretAccessKey"], "outputs")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def auth_vars(services: Services, project: Path, s3: AuthS3, **overrides: str) -> dict[str, str]:
    settings = {
        "AWS_ENDPOINT_URL": s3.url,
        "AWS_ACCESS_KEY_ID": s3.key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret,
        "JOBRUNNER_ARTIFACT_URI": f"s3://{s3.bucket}/jobs",
    }
    return prod_vars(services, project, **{**settings, **overrides})


def test_the_right_credentials_pass(
    services: Services, project: Path, s3_with_auth: AuthS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _ = check_here(monkeypatch, project, auth_vars(services, project, s3_with_auth))
    assert result.exit_code == 0, result.stderr
    assert f"s3://{s3_with_auth.bucket} is reachable at {s3_with_auth.url}" in result.stdout


def test_unknown_access_key_names_aws_access_key_id(
    services: Services, project: Path, s3_with_auth: AuthS3
) -> None:
    env = base_env(**auth_vars(services, project, s3_with_auth, AWS_ACCESS_KEY_ID="not-a-real-key"))
    proc, elapsed = check(project, env)
    assert_names(
        proc,
        elapsed,
        "AWS_ACCESS_KEY_ID",
        f"the S3 server at {s3_with_auth.url} does not know the access key id (InvalidAccessKeyId)",
    )


def test_wrong_secret_names_aws_secret_access_key(
    services: Services, project: Path, s3_with_auth: AuthS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = auth_vars(services, project, s3_with_auth, AWS_SECRET_ACCESS_KEY="not-the-secret")
    result, elapsed = check_here(monkeypatch, project, env)
    assert_names(
        result,
        elapsed,
        "AWS_SECRET_ACCESS_KEY",
        f"the S3 server at {s3_with_auth.url} rejected the secret key (SignatureDoesNotMatch)",
    )


def test_wrong_dvc_remote_credentials_name_the_remote_setting(
    services: Services, project: Path, s3_with_auth: AuthS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_local_remote(
        project,
        "store",
        url="s3://some-bucket/store",
        endpointurl=s3_with_auth.url,
        access_key_id="wrong",
        secret_access_key="wrong",
    )
    proc, elapsed = check_here(monkeypatch, project, prod_vars(services, project))
    assert_names(
        proc,
        elapsed,
        "DVC remote 'store' access_key_id",
        "`dvc remote modify --local store access_key_id ...`",
    )
