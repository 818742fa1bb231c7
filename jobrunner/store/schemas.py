"""Pydantic schemas of jobs, separate from the ORM models: what the CLI, Python API and REST API return."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobrunner.limits import MAX_NOTEBOOK_PATH, MAX_TIMEOUT
from jobrunner.store.states import JobState

__all__ = ["MAX_NOTEBOOK_PATH", "MAX_TIMEOUT"]  # re-exported: defined in jobrunner/limits.py

# The limits of what a submitter chooses, stated once: JobSpec (so JobCreate) and serve's request bodies
# (jobs, schedules, verifications) take these types; a subclass adds a pattern or a description with its
# own Field(), the limits stay these.
NotebookPath = Annotated[str, Field(min_length=1, max_length=MAX_NOTEBOOK_PATH)]
TimeoutSeconds = Annotated[float, Field(gt=0, le=MAX_TIMEOUT)]
KernelName = Annotated[str, Field(min_length=1, max_length=255)]  # an installed kernelspec's name


class JobSpec(BaseModel):
    """What a submitter chooses about a job: the notebook, its parameters and how it runs. JobCreate adds
    what jobrunner fills in; serve's JobCreateIn (POST /v1/jobs) extends it with the API's own fields."""

    notebook: NotebookPath
    parameters: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: TimeoutSeconds | None = Field(
        default=None,
        description="Time limit of each attempt in seconds; the workers' own limit applies when lower",
    )
    kernel_name: KernelName | None = Field(
        default=None, description="An installed kernel (default: the workers' kernel)"
    )
    write_workspace: bool = Field(
        default=False,
        description="Write the project's files where the output parameters say, defaults included; without "
        "it output parameters left at their defaults go to the job's own folder and an output path inside "
        "the project is a 422",
    )


class JobCreate(JobSpec):
    """A submission: notebook path relative to the project, typed JSON parameter values."""

    idempotency_key: str | None = Field(default=None, max_length=255)
    submitter: str | None = Field(default=None, max_length=255)
    use_cache: bool = True  # False: --no-cache, always execute (jobrunner/execution/runcache.py)
    cache_key: str | None = Field(default=None, max_length=128)
    notify_url: str | None = Field(default=None, max_length=2048)  # webhook (jobrunner/store/notify.py)
    notify_on: str | None = Field(default=None, max_length=8)  # failure | success | both
    kind: str | None = Field(
        default=None, max_length=16
    )  # None: a notebook; "verify" (jobrunner/worker/verify.py)
    verifies: str | None = Field(default=None, max_length=64)
    verification: dict[str, Any] | None = None


class JobProgress(BaseModel):
    cells_done: int = 0
    cells_total: int | None = None
    current_cell: int | None = None


class JobOutputFile(BaseModel):
    """A file or folder an output parameter of the job wrote (jobrunner/execution/outputs.py)."""

    parameter: str
    path: str = Field(description="The path the notebook names (its default, or the value given)")
    md5: str | None = Field(default=None, description="DVC md5 (a folder's ends in .dir); null: not written")
    size: int | None = None
    uri: str | None = Field(default=None, description="Where the job stored it (S3 or a local folder)")


class JobError(BaseModel):
    kind: str | None = None  # error | timeout | kernel_died | infrastructure | dead_lettered | ...
    cell_index: int | None = None
    ename: str | None = None
    evalue: str | None = None
    message: str | None = None


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything jobrunner writes is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class JobRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    notebook: str
    parameters: dict[str, Any]
    state: JobState
    attempt: int
    idempotency_key: str | None = None
    submitter: str | None = None
    timeout_seconds: float | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: JobProgress
    error: JobError | None = None
    output_uri: str | None = None
    html_uri: str | None = None
    mlflow_run_id: str | None = None
    worker_id: str | None = None
    heartbeat_at: datetime | None = None
    write_workspace: bool = False
    outputs: list[JobOutputFile] = Field(default_factory=list)
    cached_from: str | None = Field(
        default=None,
        description="A run-cache hit: the job whose execution "
        "this one reuses (its notebook, MLflow run and outputs)",
    )
    use_cache: bool = True
    cache_key: str | None = None
    kernel_name: str | None = None
    notify_url: str | None = None
    notify_on: str | None = None
    kind: str | None = Field(
        default=None,
        description='null: a notebook job; "verify": a verification job '
        "re-executing the MLflow run `verifies`",
    )
    verifies: str | None = Field(
        default=None, description="A verification job: the MLflow run it re-executes"
    )
    verification: dict[str, Any] | None = Field(
        default=None,
        description="A verification job: its request ({rtol}), once done the result: reproduced, "
        "differences, verification_run_id, metrics, outputs, cells",
    )

    utc_datetimes = field_validator("created_at", "started_at", "finished_at", "heartbeat_at")(_aware)

    @classmethod
    def from_row(cls, job: Any) -> JobRead:
        error = None
        if job.error_kind or job.error_ename or job.error_message:
            error = JobError(
                kind=job.error_kind,
                cell_index=job.error_cell_index,
                ename=job.error_ename,
                evalue=job.error_evalue,
                message=job.error_message,
            )
        return cls(
            id=job.id,
            notebook=job.notebook,
            parameters=job.parameters or {},
            state=JobState(job.state),
            attempt=job.attempt,
            idempotency_key=job.idempotency_key,
            submitter=job.submitter,
            timeout_seconds=job.timeout_seconds,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=JobProgress(
                cells_done=job.cells_done or 0, cells_total=job.cells_total, current_cell=job.current_cell
            ),
            error=error,
            output_uri=job.output_uri,
            html_uri=job.html_uri,
            mlflow_run_id=job.mlflow_run_id,
            worker_id=job.worker_id,
            heartbeat_at=job.heartbeat_at,
            write_workspace=bool(getattr(job, "write_workspace", False)),
            outputs=[JobOutputFile(**o) for o in (getattr(job, "outputs", None) or [])],
            cached_from=getattr(job, "cached_from", None),
            use_cache=bool(getattr(job, "use_cache", True)),
            cache_key=getattr(job, "cache_key", None),
            kernel_name=getattr(job, "kernel_name", None),
            notify_url=getattr(job, "notify_url", None),
            notify_on=getattr(job, "notify_on", None),
            kind=getattr(job, "kind", None),
            verifies=getattr(job, "verifies", None),
            verification=getattr(job, "verification", None),
        )

    @property
    def terminal(self) -> bool:
        return self.state.terminal


class JobList(BaseModel):
    items: list[JobRead]
    total: int
    limit: int
    offset: int


class JobEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime
    from_state: str | None = None
    to_state: str
    worker_id: str | None = None
    message: str | None = None
    kind: str | None = None  # None: a state change; "notify": a webhook delivery; "output": output cut

    utc_datetimes = field_validator("at")(_aware)
