"""Production mode for real: `scripts/services.sh` starts an S3 server (moto) and an MLflow server on
PostgreSQL + S3; the pipeline runs ONCE per session in a git clone of this repository (the `ci` params
profile), its data goes to S3 with `dvc push`, and several tests inspect the result.

Select with `-m production`. PostgreSQL missing: skipped on a laptop, a failure when CI is set.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator

import pytest
from prodkit import (
    BIN,
    ROOT,
    SCRIPT,
    Pipeline,
    Services,
    base_env,
    configure_s3_remote,
    drop_database,
    free_port,
    parse_exports,
    port_open,
    run,
    service_unavailable,
)

from tests.execution_services import stop_services_under


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory, postgres_admin_url: str) -> Iterator[Services]:
    """`bash scripts/services.sh up` on free ports, a fresh MLflow database and fresh buckets."""
    for tool in ("moto_server", "mlflow", "dvc"):
        if not (BIN / tool).exists():
            service_unavailable(tool, f"{BIN / tool} is not installed (make install)")
    for tool in ("curl", "psql", "pg_isready", "git"):
        if shutil.which(tool) is None:
            service_unavailable(tool, "not on PATH")
    tag = uuid.uuid4().hex[:8]
    state = tmp_path_factory.mktemp("services")
    s3_port, mlflow_port = free_port(), free_port()
    script_env = base_env(
        SERVICES_DIR=str(state),
        SERVICES_S3_PORT=str(s3_port),
        SERVICES_MLFLOW_PORT=str(mlflow_port),
        SERVICES_MLFLOW_WORKERS="1",
        SERVICES_PG_URL=postgres_admin_url.rsplit("/", 1)[0],
        SERVICES_MLFLOW_DB=f"jrtest_mlflow_{tag}",
        SERVICES_DVC_BUCKET=f"jrtest-dvc-{tag}",
        SERVICES_MLFLOW_BUCKET=f"jrtest-mlflow-{tag}",
        SERVICES_JOBS_BUCKET=f"jrtest-jobs-{tag}",
        SERVICES_PYTHON=sys.executable,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing-secret",
    )
    up = run(["bash", str(SCRIPT), "up"], cwd=ROOT, env=script_env, timeout=180, check=False)
    try:
        assert up.returncode == 0, f"services.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield Services(
            env=parse_exports(up.stdout),
            script_env=script_env,
            state_dir=state,
            dvc_bucket=script_env["SERVICES_DVC_BUCKET"],
            mlflow_bucket=script_env["SERVICES_MLFLOW_BUCKET"],
            jobs_bucket=script_env["SERVICES_JOBS_BUCKET"],
            up=up,
        )
    finally:
        down = run(["bash", str(SCRIPT), "down"], cwd=ROOT, env=script_env, timeout=60, check=False)
        drop_database(postgres_admin_url, script_env["SERVICES_MLFLOW_DB"])
        # `down` must stop what `up` started: both ports are free again and no pid file is left.
        assert down.returncode == 0, down.stderr
        assert not port_open("127.0.0.1", s3_port) and not port_open("127.0.0.1", mlflow_port), down.stderr
        assert not list(state.glob("*.pid")), down.stderr


@pytest.fixture(scope="session")
def pipeline(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """`dvc repro` (ci profile) in a fresh clone against the MLflow server, then `dvc push` to S3.

    Production by configuration only: the environment `services.sh` printed, plus the remote's URL.

    The new dvc.lock and metrics are committed in the clone, as a user would, so that a second clone
    can pull exactly this data.
    """
    clone = tmp_path_factory.mktemp("pipeline") / "repo"
    env = base_env(
        **services.env,
        JOBRUNNER_PARAMS_PROFILE="ci",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t.invalid",
    )
    run(["git", "clone", "-q", str(ROOT), str(clone)], cwd=ROOT, env=env)
    start_commit = run(["git", "rev-parse", "HEAD"], cwd=clone, env=env).stdout.strip()
    configure_s3_remote(clone, services, env, keys=False)  # endpoint and keys from the AWS_* environment
    repro = run([str(BIN / "dvc"), "repro"], cwd=clone, env=env, timeout=600)
    push = run([str(BIN / "dvc"), "push"], cwd=clone, env=env, timeout=300)
    run(["git", "add", "dvc.lock", "metrics"], cwd=clone, env=env)
    run(["git", "commit", "-q", "--allow-empty", "-m", "pipeline run (ci profile)"], cwd=clone, env=env)
    yield Pipeline(clone=clone, env=env, start_commit=start_commit, repro=repro, push=push)
    stop_services_under(clone.parent)  # the stages' execution service (and any a test started in the clone)
