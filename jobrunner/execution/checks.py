"""Fail-fast configuration checks for production mode: S3 endpoint, credentials, buckets, MLflow server.

Misconfiguration otherwise shows up minutes later as a retry loop or a boto stack trace from deep inside
a DVC push or an MLflow upload. Each check here takes seconds, not minutes (3 s to connect, 10 s to
answer, no retries) and turns the failure into a sentence that names the setting to fix:

    AWS_ENDPOINT_URL          the S3/MinIO endpoint is unreachable
    AWS_ACCESS_KEY_ID         the key id is unknown to the server (or missing)
    AWS_SECRET_ACCESS_KEY     the signature does not match
    JOBRUNNER_ARTIFACT_URI    its bucket does not exist
    DVC remote '<name>'       its bucket does not exist / its endpointurl is unreachable
    MLFLOW_TRACKING_URI       the tracking server does not answer

Use `run_checks(settings)` for the results or `ensure_ready(settings)` to raise ChecksFailed (a
ConfigurationError). Embedded mode (local paths, SQLite tracking) passes without touching the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from jobrunner.config import Settings
from jobrunner.errors import ConfigurationError

CONNECT_TIMEOUT_S = 3.0  # an endpoint that does not accept a connection in 3 s is misconfigured or down
READ_TIMEOUT_S = 10.0  # a busy server may take longer to answer; that is slowness, not misconfiguration


class ChecksFailed(ConfigurationError):
    """A configured service is unreachable or refuses the configured credentials."""

    def __init__(self, failures: list[CheckResult]):
        self.failures = failures
        super().__init__("; ".join(f.message for f in failures))


@dataclass(frozen=True)
class CheckResult:
    name: str  # what was checked, e.g. "S3 bucket of JOBRUNNER_ARTIFACT_URI"
    ok: bool
    setting: str | None  # the setting to fix when not ok
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class S3Target:
    """A bucket some setting points at, with the endpoint and credentials used to reach it."""

    label: str  # e.g. "JOBRUNNER_ARTIFACT_URI" or "DVC remote 's3'"
    bucket: str
    endpoint: str | None
    endpoint_setting: str
    key_id: str | None
    secret: str | None
    key_setting: str
    secret_setting: str
    fix_bucket: str


# The environment variables boto3 reads the key id and the secret from (the names, not credentials)
AWS_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


# -- S3 ----------------------------------------------------------------------------------------------------
def _s3_client(target: S3Target) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S, retries={"total_max_attempts": 1}
    )
    kwargs: dict[str, Any] = {"endpoint_url": target.endpoint or None, "config": config}
    if target.key_id and target.secret:
        kwargs.update(aws_access_key_id=target.key_id, aws_secret_access_key=target.secret)
    return boto3.session.Session().client("s3", **kwargs)


def check_s3(target: S3Target) -> CheckResult:
    """Reach the endpoint, authenticate and find the bucket, with one cheap ListObjectsV2 call."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    name = f"S3 bucket of {target.label}"
    where = target.endpoint or "AWS S3"
    try:
        _s3_client(target).list_objects_v2(Bucket=target.bucket, MaxKeys=1)
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        return CheckResult(
            name,
            False,
            target.endpoint_setting,
            f"the S3 endpoint {where} is unreachable ({type(exc).__name__}): "
            f"check {target.endpoint_setting} and that the S3/MinIO server is running",
        )
    except ReadTimeoutError:
        return CheckResult(
            name,
            False,
            target.endpoint_setting,
            f"the S3 endpoint {where} accepted a connection but did not answer within "
            f"{READ_TIMEOUT_S:g}s: check {target.endpoint_setting} points at an S3/MinIO server",
        )
    except NoCredentialsError:
        return CheckResult(
            name,
            False,
            target.key_setting,
            f"no S3 credentials for {where}: set {target.key_setting} and {target.secret_setting}",
        )
    except ClientError as exc:
        return _client_error(name, target, exc)
    except ValueError as exc:  # botocore rejects a malformed endpoint URL
        return CheckResult(
            name,
            False,
            target.endpoint_setting,
            f"{target.endpoint_setting}={target.endpoint!r} is not a valid URL: {exc}",
        )
    return CheckResult(name, True, None, f"s3://{target.bucket} is reachable at {where}")


def _client_error(name: str, target: S3Target, exc: Any) -> CheckResult:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    where = target.endpoint or "AWS S3"
    if code in ("InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken", "ExpiredToken"):
        return CheckResult(
            name,
            False,
            target.key_setting,
            f"the S3 server at {where} does not know the access key id ({code}): "
            f"fix {target.key_setting} (and {target.secret_setting})",
        )
    if code == "SignatureDoesNotMatch":
        return CheckResult(
            name,
            False,
            target.secret_setting,
            f"the S3 server at {where} rejected the secret key (SignatureDoesNotMatch): "
            f"fix {target.secret_setting}",
        )
    if code == "NoSuchBucket":
        return CheckResult(
            name,
            False,
            target.label,
            f"bucket '{target.bucket}' named by {target.label} does not exist at {where}: "
            f"{target.fix_bucket}",
        )
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return CheckResult(
            name,
            False,
            target.key_setting,
            f"access to bucket '{target.bucket}' ({target.label}) denied at {where}: "
            f"the credentials in {target.key_setting} lack permission on it",
        )
    message = str(exc.response.get("Error", {}).get("Message", exc))
    return CheckResult(
        name,
        False,
        target.label,
        f"S3 error {code} on bucket '{target.bucket}' ({target.label}) at {where}: {message}",
    )


def _env_endpoint(env: Mapping[str, str]) -> tuple[str | None, str]:
    if env.get("AWS_ENDPOINT_URL_S3"):
        return env["AWS_ENDPOINT_URL_S3"], "AWS_ENDPOINT_URL_S3"
    return env.get("AWS_ENDPOINT_URL") or None, "AWS_ENDPOINT_URL"


def artifact_target(settings: Settings, env: Mapping[str, str]) -> S3Target | None:
    uri = settings.artifact_uri or ""
    if not uri.startswith("s3://"):
        return None
    endpoint, endpoint_setting = _env_endpoint(env)
    bucket = urlparse(uri).netloc
    return S3Target(
        label="JOBRUNNER_ARTIFACT_URI",
        bucket=bucket,
        endpoint=endpoint,
        endpoint_setting=endpoint_setting,
        key_id=None,
        secret=None,
        key_setting=AWS_CREDENTIAL_VARIABLES[0],
        secret_setting=AWS_CREDENTIAL_VARIABLES[1],
        fix_bucket=f"create it (e.g. `make services` creates buckets) or fix JOBRUNNER_ARTIFACT_URI={uri}",
    )


def dvc_remote_target(project_dir: Path, env: Mapping[str, str]) -> S3Target | None:
    """The default DVC remote when it is on S3, with DVC's own endpoint/credential settings if set."""
    if not (project_dir / ".dvc").is_dir():
        return None
    from dvc.config import Config

    config = Config(dvc_dir=str(project_dir / ".dvc"))
    name = config["core"].get("remote")
    remote = config["remote"].get(name) if name else None
    if not remote or not str(remote.get("url", "")).startswith("s3://"):
        return None
    url = str(remote["url"])
    endpoint, endpoint_setting = _env_endpoint(env)
    if remote.get("endpointurl"):
        endpoint, endpoint_setting = remote["endpointurl"], f"DVC remote '{name}' endpointurl"
    key_setting, secret_setting = AWS_CREDENTIAL_VARIABLES
    if remote.get("access_key_id"):
        key_setting = (
            f"DVC remote '{name}' access_key_id (`dvc remote modify --local {name} access_key_id ...`)"
        )
    if remote.get("secret_access_key"):
        secret_setting = (
            f"DVC remote '{name}' secret_access_key "
            f"(`dvc remote modify --local {name} secret_access_key ...`)"
        )
    return S3Target(
        label=f"DVC remote '{name}'",
        bucket=urlparse(url).netloc,
        endpoint=endpoint,
        endpoint_setting=endpoint_setting,
        key_id=remote.get("access_key_id"),
        secret=remote.get("secret_access_key"),
        key_setting=key_setting,
        secret_setting=secret_setting,
        fix_bucket=f"create it, or point the remote elsewhere: `dvc remote modify --local {name} url s3://BUCKET/PATH`",
    )


# -- MLflow ------------------------------------------------------------------------------------------------
def check_mlflow(tracking_uri: str) -> CheckResult:
    """An HTTP tracking server must answer /health and its REST API; a local store needs no network."""
    import httpx

    name = "MLflow tracking server"
    if not tracking_uri.startswith(("http://", "https://")):
        return CheckResult(name, True, None, f"local tracking store {tracking_uri} (embedded mode)")
    base = tracking_uri.rstrip("/")
    try:
        with httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)) as client:
            health = client.get(f"{base}/health")
            api = client.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1})
    except httpx.TimeoutException as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            return CheckResult(
                name,
                False,
                "MLFLOW_TRACKING_URI",
                f"the MLflow server at {tracking_uri} is unreachable (connect timeout): "
                f"check MLFLOW_TRACKING_URI and that `mlflow server` is running",
            )
        return CheckResult(
            name,
            False,
            "MLFLOW_TRACKING_URI",
            f"{tracking_uri} accepted a connection but did not answer within {READ_TIMEOUT_S:g}s: "
            f"check MLFLOW_TRACKING_URI points at an MLflow server (and that it is not overloaded)",
        )
    except httpx.HTTPError as exc:
        return CheckResult(
            name,
            False,
            "MLFLOW_TRACKING_URI",
            f"the MLflow server at {tracking_uri} is unreachable ({type(exc).__name__}): "
            f"check MLFLOW_TRACKING_URI and that `mlflow server` is running",
        )
    if health.status_code != 200 or api.status_code != 200:
        status = health.status_code if health.status_code != 200 else api.status_code
        hint = (
            " (credentials: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
            if status in (401, 403)
            else ""
        )
        return CheckResult(
            name,
            False,
            "MLFLOW_TRACKING_URI",
            f"{tracking_uri} answered HTTP {status}, it is not a working MLflow tracking server: "
            f"check MLFLOW_TRACKING_URI{hint}",
        )
    return CheckResult(name, True, None, f"MLflow server at {tracking_uri} is healthy")


# -- all together ------------------------------------------------------------------------------------------
def run_checks(
    settings: Settings, env: Mapping[str, str] | None = None, *, dvc: bool = True
) -> list[CheckResult]:
    """Every check that applies to this configuration; an S3 endpoint failure is reported once."""
    env = os.environ if env is None else env
    results = [check_mlflow(settings.mlflow_tracking_uri or "")]
    targets = [artifact_target(settings, env)]
    if dvc:
        try:
            targets.append(dvc_remote_target(settings.project_dir, env))
        except Exception as exc:  # noqa: BLE001 - a broken .dvc/config is itself a finding
            results.append(
                CheckResult("DVC remote", False, ".dvc/config", f"cannot read the DVC configuration: {exc}")
            )
    unreachable: set[str | None] = set()
    for target in filter(None, targets):
        if target.endpoint in unreachable:
            continue
        result = check_s3(target)
        if not result.ok and result.setting == target.endpoint_setting:
            unreachable.add(target.endpoint)
        results.append(result)
    return results


def ensure_ready(settings: Settings, env: Mapping[str, str] | None = None, *, dvc: bool = True) -> None:
    """Raise ChecksFailed naming every setting to fix; return quietly when all is well."""
    failures = [r for r in run_checks(settings, env, dvc=dvc) if not r.ok]
    if failures:
        raise ChecksFailed(failures)
