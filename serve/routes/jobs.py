"""Notebook jobs over REST: submit, list, inspect, cancel, read the executed notebook; list notebooks.

Every operation calls `jobrunner.jobs` (validation against the notebook's parameter contract, the job
store, the outbox and broker live there); nothing here builds a query. jobrunner's calls block on the
database, so these handlers are plain functions that FastAPI runs in its thread pool.

The request body of POST /v1/jobs is documented per notebook (`notebook_schema_part`): one variant per
runnable notebook whose `parameters` are that notebook's parameters cell, so a request that fits the
schema is accepted, and one for every other path (404). Cancelling is `POST /v1/jobs/{id}/cancel`: a
cancelled job stays readable (state CANCELLED), so it is not modelled as DELETE.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query

from jobrunner.limits import MAX_NOTEBOOK_PATH
from jobrunner.store.schemas import JobList, JobRead
from jobrunner.store.states import JobState
from serve.contract import SchemaPart, StrictJSONRoute
from serve.deps import READ, WRITE, ReadOrLinkDep, ServicesDep
from serve.errors import Conflict
from serve.links import NotebookHTML
from serve.schemas import (
    JOB_ID_PATTERN,
    NOTEBOOK_PATH_HELP,
    NOTEBOOK_PATH_PATTERN,
    JobCreateIn,
    NotebookList,
)

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=StrictJSONRoute)
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]([ -~]*[!-~])?$",  # printable ASCII, no blank at either end (HTTP trims those)
        description="Submitting twice with the same key returns the first job instead of a new one",
    ),
]
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A job id, as POST /v1/jobs returns it")]
NO_JOB: dict[int | str, dict[str, Any]] = {404: {"description": "No job has this id"}}


@router.post(
    "/jobs",
    response_model=JobRead,
    status_code=201,
    dependencies=WRITE,
    responses={
        404: {"description": "No such notebook under the notebook roots"},
        409: {
            "description": "The Idempotency-Key belongs to a job with another notebook or other parameters"
        },
        422: {
            "description": "Parameters do not fit the notebook's parameters cell, or an output parameter "
            "names a path inside the project without write_workspace (each problem is named)"
        },
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
            kernel=body.kernel_name,
            notify=body.notify.url if body.notify else None,
            notify_on=body.notify.on if body.notify else None,
            write_workspace=body.write_workspace,
            cache=body.cache,
        )
    except Exception:
        services.metrics.jobs.labels("refused").inc()
        raise
    services.metrics.jobs.labels("submitted").inc()
    return job


@router.get("/jobs", response_model=JobList, dependencies=READ)
def list_jobs(
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    notebook: Annotated[
        str | None,
        Query(
            max_length=MAX_NOTEBOOK_PATH,
            pattern=NOTEBOOK_PATH_PATTERN,
            description="Only jobs of this notebook",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """Jobs, newest first, with filters and paging."""
    from jobrunner import jobs

    return jobs.list_jobs(state=state.value if state else None, notebook=notebook, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobRead, dependencies=READ, responses=NO_JOB)
def get_job(job_id: JobId) -> Any:
    """One job: state, progress (cells done of total), outcome or error."""
    from jobrunner import jobs

    return jobs.get_job(job_id)


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobRead,
    dependencies=WRITE,
    responses={
        **NO_JOB,
        409: {"description": "The job has already finished (succeeded, failed or cancelled)"},
    },
)
def cancel_job(job_id: JobId) -> Any:
    """Cancel a job: a queued job never starts; a running one is stopped within seconds (state CANCELLING,
    then CANCELLED). The job stays readable with GET /v1/jobs/{job_id}."""
    from jobrunner import jobs

    return jobs.cancel_job(job_id)


@router.get(
    "/jobs/{job_id}/notebook",
    response_class=NotebookHTML,
    responses={
        200: {"content": {"text/html": {}}},
        **NO_JOB,
        409: {"description": "The job has no executed notebook yet (it has not run; GET /v1/jobs/{job_id})"},
    },
)
def job_notebook(job_id: JobId, _: ReadOrLinkDep) -> NotebookHTML:
    """The executed notebook of a job, rendered as HTML (untrusted: sandboxed, see serve/links.py); a read
    key or a signed link opens it."""
    from jobrunner import jobs

    try:
        return NotebookHTML(jobs.job_output_html(job_id))
    except FileNotFoundError as exc:
        # The job exists; its notebook does not yet: a state of the job (409), not an unknown resource.
        raise Conflict(f"{exc} (GET /v1/jobs/{job_id} shows its state)") from exc


@router.get("/notebooks", response_model=NotebookList, dependencies=READ)
def notebooks() -> dict[str, Any]:
    """The notebooks that may run as jobs, with their parameter schemas (names, types, defaults, help)."""
    found, invalid = notebook_catalog()
    return {
        "notebooks": [{**schema.as_dict(), "notebook": label} for label, schema in found],
        "invalid": [{"notebook": label, "problem": problem} for label, problem in invalid],
    }


def _notebook_files() -> list[tuple[str, FsPath]]:
    """(project-relative label, path) of every notebook under the notebook roots."""
    from jobrunner.config import get_settings

    settings = get_settings()
    project = settings.project_dir.resolve()
    out = []
    for root in settings.notebook_root_paths():
        for path in sorted(root.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            full = path.resolve()
            label = full.relative_to(project).as_posix() if full.is_relative_to(project) else path.name
            out.append((label, path))
    return out


def notebook_catalog() -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """(label, ParameterSchema) of each runnable notebook, and (label, problem) of each invalid one."""
    from jobrunner.errors import JobrunnerError
    from jobrunner.execution.params import read_schema

    found, invalid = [], []
    for label, path in _notebook_files():
        try:
            found.append((label, read_schema(path, label)))
        except JobrunnerError as exc:
            invalid.append((label, str(exc)))
    return found, invalid


# -- the request body of POST /v1/jobs, per notebook ---------------------------------------------------
_JSON_TYPES = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}


def _parameter_schema(param: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {} if param.type == "any" else {"type": _JSON_TYPES[param.type]}
    if param.optional and schema:
        schema = {"anyOf": [schema, {"type": "null"}]}
    if param.help:
        schema["description"] = param.help
    if param.output:  # jobrunner/execution/outputs.py
        schema["x-jobrunner-output"] = True
        schema["description"] = (
            schema.get("description", "") + " (an output path: left at its default it "
            "goes to the job's own folder; a path inside the project needs write_workspace, "
            "else 422)"
        ).lstrip()
    if param.default is not None or param.optional:
        schema["default"] = param.default
    return schema


def _job_create_component(schema: dict[str, Any]) -> None:
    components = schema.get("components", {}).get("schemas", {})
    base = components.get(JobCreateIn.__name__)
    if base is None:
        return
    found, invalid = notebook_catalog()
    variants = []
    for label, params in found:
        properties = dict(base["properties"])
        properties["notebook"] = {"type": "string", "const": label}
        properties["parameters"] = {
            "type": "object",
            "description": f"The parameters cell of {label}; every parameter has a default",
            "properties": {name: _parameter_schema(p) for name, p in params.parameters.items()},
            "additionalProperties": False,
        }
        variants.append({**base, "title": label, "properties": properties})
    other = dict(base["properties"])
    known = [label for label, _ in found] + [label for label, _ in invalid]
    other["notebook"] = {**other["notebook"], **({"not": {"enum": known}} if known else {})}
    variants.append({**base, "title": "Any other notebook path (404: no such notebook)", "properties": other})
    components[JobCreateIn.__name__] = {
        "title": JobCreateIn.__name__,
        "description": (
            "A notebook and its parameters: one variant per runnable notebook (GET /v1/notebooks). "
            + NOTEBOOK_PATH_HELP
        ),
        "oneOf": variants,
    }


def _notebooks_version() -> tuple[Any, ...]:
    def mtime(path: FsPath) -> int | None:
        try:
            return path.stat().st_mtime_ns
        except OSError:  # removed since it was listed
            return None

    return tuple((label, mtime(path)) for label, path in _notebook_files())


def notebook_schema_part() -> SchemaPart:
    """The POST /v1/jobs body documented per notebook, rebuilt when a notebook changes on disk."""
    return SchemaPart(apply=_job_create_component, version=_notebooks_version)
