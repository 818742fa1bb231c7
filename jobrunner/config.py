"""Settings of every jobrunner process (CLI, DVC stages, workers), from the environment and `.env`.

Embedded defaults need no running service: SQLite for jobs and MLflow tracking, local directories for
artifacts. Production switches by environment variables only (see `.env.example`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_MARKERS = ("dvc.yaml", "pyproject.toml")
# The file a kernel appends jobrunner.notebook.log_metrics calls to (set by the executor for each run)
METRICS_FILE_ENV = "JOBRUNNER_METRICS_FILE"


def find_project_dir(start: Path | None = None) -> Path:
    """The project root: $JOBRUNNER_PROJECT_DIR, else the nearest folder up from `start` with dvc.yaml."""
    env = os.environ.get("JOBRUNNER_PROJECT_DIR")
    if env:
        return Path(env).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    return here


class Settings(BaseSettings):
    """jobrunner settings; each field can be set as JOBRUNNER_<FIELD> (MLflow's also by MLflow's names)."""

    model_config = SettingsConfigDict(
        env_prefix="JOBRUNNER_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    project_dir: Path = Field(default_factory=find_project_dir)
    # Job store: SQLAlchemy URL. Default: a SQLite file under .jobrunner/.
    database_url: str | None = None
    # Broker: amqp://... ; unset means embedded mode (jobs run in-process, no queue).
    broker_url: str | None = None
    # Where executed notebooks of jobs are stored: s3://bucket/prefix or a local directory.
    artifact_uri: str | None = None
    # Notebook roots: jobs may only run notebooks below these folders (relative to the project).
    notebook_roots: list[str] = ["notebooks"]
    kernel_name: str = "python3"
    # Whole-notebook time limit in seconds for one execution (0 = none).
    timeout: float = 3600.0
    # Seconds a kernel may take to start.
    kernel_start_timeout: float = 60.0
    # Warm kernels kept ready per kernel name in long-lived processes (workers, the execution service);
    # 0 = a fresh kernel per execution. Each kernel serves one job (docs/jobs.md, "Kernel pool").
    kernel_pool_size: int = Field(default=1, ge=0, le=64)
    # Modules imported in each idle pooled kernel, e.g. "numpy,pandas,sklearn" (memory per idle kernel).
    kernel_preload: str = ""
    # "ipc" (Unix sockets: no TCP port race between processes) or "tcp".
    kernel_transport: Literal["ipc", "tcp"] = "ipc"
    # Pooled kernels are forked from one template process per pool that has imported ipykernel and the
    # preloads once (~0.07 instead of ~0.5 CPU-s per kernel; jobrunner/execution/forkserver.py). False: every
    # kernel is a new process that imports everything itself.
    kernel_fork: bool = True
    # Local execution service for one-shot runs (`jobrunner run`, DVC stages): "auto" starts it on first
    # use and uses it; "off" always executes in-process (docs/cli.md, "Execution service").
    service: Literal["auto", "off"] = "auto"
    # The service stops after this many seconds without a request.
    service_idle_timeout: float = Field(default=600.0, gt=0)
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("JOBRUNNER_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    # Artifact root for experiments jobrunner creates when tracking is local (ignored with a server).
    mlflow_artifact_root: str | None = None
    mlflow_experiment: str = "notebooks"
    # Folder for executed notebooks of `jobrunner run` when no output path is given.
    runs_dir: Path | None = None
    # --- jobs (queue, workers) -------------------------------------------------------------------
    # RabbitMQ queue of jobs; its dead-letter exchange/queue are "<queue_name>.dlx" / "<queue_name>.dlq".
    queue_name: str = "jobrunner.jobs"
    # Runs of one job (first run + retries after infrastructure errors or dead workers) before giving up.
    max_attempts: int = 3
    # Backoff before retry n: retry_backoff * 2**(n-1) seconds, at most retry_backoff_max.
    retry_backoff: float = 2.0
    retry_backoff_max: float = 300.0
    # A running job writes a heartbeat this often (seconds); one older than heartbeat_timeout is stale
    # and the reaper requeues the job (its worker died).
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 30.0
    # A job whose worker is gone from the broker (its AMQP connection closed: killed, machine lost) is
    # taken over once its heartbeat is this many seconds old, without waiting for heartbeat_timeout.
    # At least 2 * heartbeat_interval is used. A broker blip does not trigger it: the worker's heartbeats
    # (in the database) go on meanwhile.
    takeover_timeout: float = 5.0
    # Idle workers poll the outbox/reaper this often (seconds); embedded workers also poll for jobs.
    worker_poll_interval: float = 1.0
    # On SIGTERM a running job may finish within this many seconds; after that it is stopped and requeued.
    worker_grace_period: float = 30.0
    # Prometheus metrics port of `jobrunner worker` (0 = off).
    worker_metrics_port: int = 0
    # Long-running processes (worker, scheduler) log one JSON line per event on stderr, as the API does
    # (jobrunner.logs); false gives plain text. The level is INFO unless -v/-vv asks for more.
    log_json: bool = True
    # Worker id shown on jobs; default "<hostname>:<pid>".
    worker_id: str | None = None
    # Size limits of submitted parameters, in bytes of their JSON text: each value, and all of a job's
    # values together (a job row, its status output and its MLflow run stay small).
    max_parameter_bytes: int = Field(default=65536, gt=0)
    max_parameters_bytes: int = Field(default=262144, gt=0)
    # --- live output, notifications (docs/jobs.md) ------------------------------------------------
    # Cell output of a running job kept for `logs --follow` / the events stream / the job board, in
    # characters of text per job; past it a note says it was cut (the executed notebook has all of it).
    live_output_max_bytes: int = Field(default=1_048_576, ge=0)
    # A worker writes the output gathered meanwhile at most this often (seconds), and at each cell start.
    live_output_flush_interval: float = Field(default=0.5, gt=0, le=60)
    # Webhooks (`notify`): signed with HMAC-SHA256 of the body under this secret (X-Jobrunner-Signature);
    # a secret lives here, never in a job row or a notify URL.
    notify_secret: str | None = None
    # Seconds per POST; tries before a delivery is given up (recorded as failed in the job's events);
    # backoff between rounds of tries: notify_retry_backoff * 2**n seconds, at most 300.
    notify_timeout: float = Field(default=5.0, gt=0)
    notify_max_tries: int = Field(default=30, ge=1, le=1000)
    notify_retry_backoff: float = Field(default=2.0, gt=0)
    # Public base URL of the REST API (https://host/api), for the links in webhook bodies; unset: no links.
    public_api_url: str | None = None
    # Kernel names a worker keeps warm pools for (the default kernel's counts); jobs on further kernel
    # names start a fresh kernel each.
    kernel_pool_max_names: int = Field(default=3, ge=1, le=32)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        root = self.project_dir
        state = root / ".jobrunner"
        if not self.database_url:
            self.database_url = f"sqlite:///{state / 'jobs.db'}"
        if not self.artifact_uri:
            self.artifact_uri = str(state / "artifacts")
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
        if not self.mlflow_artifact_root:
            self.mlflow_artifact_root = (root / "mlartifacts").as_uri()
        if self.runs_dir is None:
            self.runs_dir = state / "runs"
        elif not self.runs_dir.is_absolute():
            self.runs_dir = root / self.runs_dir
        return self

    @property
    def embedded(self) -> bool:
        """True when no broker is configured: jobs run in the submitting process."""
        return not self.broker_url

    @property
    def kernel_preload_modules(self) -> list[str]:
        return [m.strip() for m in self.kernel_preload.split(",") if m.strip()]

    def notebook_root_paths(self) -> list[Path]:
        return [(self.project_dir / r).resolve() for r in self.notebook_roots]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once. Tests call `get_settings.cache_clear()`."""
    return Settings()
