"""Notebook jobs over REST: submit, list, inspect, cancel, read the executed notebook; list notebooks.

Every operation calls `jobrunner.jobs` (validation against the notebook's parameter contract, the job
store, the outbox and broker live there); nothing here builds a query. jobrunner's calls block on the
database, so these handlers are plain functions that FastAPI runs in its thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import HTMLResponse

from jobrunner.schemas import JobList, JobRead
from jobrunner.states import JobState
from serve.deps import READ, WRITE, ServicesDep
from serve.errors import NotFound
from serve.schemas import JobCreateIn, NotebookList

router = APIRouter(prefix="/v1", tags=["jobs"])
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Submitting twice with the same key returns the first job instead of a new one",
    ),
]


@router.post(
    "/jobs",
    response_model=JobRead,
    status_code=201,
    dependencies=WRITE,
    responses={
        404: {"description": "No such notebook under the notebook roots"},
        422: {"description": "Parameters do not fit the notebook's parameters cell"},
        503: {"description": "The job store is unavailable"},
    },
)
def submit_job(body: JobCreateIn, services: ServicesDep, idempotency_key: IdempotencyKey = None) -> Any:
    """Queue a notebook with parameters (validated against its parameters cell before anything runs)."""
    from jobrunner import jobs

    try:
        job = jobs.submit(
            body.notebook,
            body.parameters,
            idempotency_key=idempotency_key,
            submitter="serve-api",
            timeout=body.timeout_seconds,
        )
    except Exception:
        services.metrics.jobs.labels("refused").inc()
        raise
    services.metrics.jobs.labels("submitted").inc()
    return job


@router.get("/jobs", response_model=JobList, dependencies=READ)
def list_jobs(
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    notebook: Annotated[str | None, Query(max_length=1024, description="Only jobs of this notebook")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """Jobs, newest first, with filters and paging."""
    from jobrunner import jobs

    return jobs.list_jobs(state=state.value if state else None, notebook=notebook, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobRead, dependencies=READ)
def get_job(job_id: str) -> Any:
    """One job: state, progress (cells done of total), outcome or error."""
    from jobrunner import jobs

    return jobs.get_job(job_id)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobRead,
    dependencies=WRITE,
    responses={409: {"description": "The job has already finished"}},
)
def cancel_job(job_id: str) -> Any:
    """Cancel a job: a queued job never starts; a running one is stopped within seconds."""
    from jobrunner import jobs

    return jobs.cancel_job(job_id)


@router.get(
    "/jobs/{job_id}/notebook",
    response_class=HTMLResponse,
    dependencies=READ,
    responses={
        200: {"content": {"text/html": {}}},
        404: {"description": "No such job, or it has no executed notebook yet"},
    },
)
def job_notebook(job_id: str) -> HTMLResponse:
    """The executed notebook of a job, rendered as HTML."""
    from jobrunner import jobs

    try:
        return HTMLResponse(jobs.job_output_html(job_id))
    except FileNotFoundError as exc:
        raise NotFound(str(exc)) from exc


@router.get("/notebooks", response_model=NotebookList, dependencies=READ)
def notebooks() -> dict:
    """The notebooks that may run as jobs, with their parameter schemas (names, types, defaults, help)."""
    from jobrunner.config import get_settings
    from jobrunner.errors import JobrunnerError
    from jobrunner.params import read_schema

    settings = get_settings()
    project = settings.project_dir.resolve()
    found, invalid = [], []
    for root in settings.notebook_root_paths():
        for path in sorted(root.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            label = (
                path.resolve().relative_to(project).as_posix()
                if path.resolve().is_relative_to(project)
                else str(path)
            )
            try:
                schema = read_schema(path).as_dict()
            except JobrunnerError as exc:
                invalid.append({"notebook": label, "problem": str(exc)})
                continue
            found.append({**schema, "notebook": label})
    return {"notebooks": found, "invalid": invalid}
