"""Scheduled notebooks over REST: create, list, show (with recent runs), pause, resume, delete, run now.

Every operation calls `jobrunner.scheduling.schedules` (validation of the cron expression, time zone,
kernel and the notebook's parameter contract, the queries); the `jobrunner scheduler` process submits the
due slots.
Read scope lists and shows, write scope changes. An invalid cron expression or time zone is a 422 whose
`problems` name the field (`body.cron`, `body.timezone`).

The request body of POST /v1/schedules is documented like POST /v1/jobs: one variant per runnable
notebook with that notebook's parameters, the time zones this server knows and its installed kernels as
enums (`schedule_schema_part`, rebuilt when a notebook or the kernels change).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from jobrunner.scheduling.cron import CRON_PATTERN
from jobrunner.scheduling.schedules import (
    MAX_CONCURRENT,
    NAME_PATTERN,
    SCHEDULE_ID_PATTERN,
    ScheduleDetail,
    ScheduleList,
    ScheduleRead,
    ScheduleRunRead,
)
from jobrunner.store.schemas import KernelName, NotebookPath, TimeoutSeconds
from serve.contract import SchemaPart, StrictJSONRoute
from serve.deps import READ, WRITE
from serve.errors import Conflict, NotFound, Unprocessable
from serve.schemas import NOTEBOOK_PATH_HELP, NOTEBOOK_PATH_PATTERN, NotifyIn

router = APIRouter(prefix="/v1", tags=["schedules"], route_class=StrictJSONRoute)
ScheduleId = Annotated[
    str, Path(pattern=SCHEDULE_ID_PATTERN, description="A schedule id, as POST /v1/schedules returns it")
]
NO_SCHEDULE: dict[int | str, dict[str, Any]] = {404: {"description": "No schedule has this id"}}


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 86.0; strict pydantic would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[int, BeforeValidator(_integral)]


class ScheduleCreateIn(BaseModel):
    """A notebook, its parameters (checked against its parameters cell) and when to run it."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented

    name: str = Field(pattern=NAME_PATTERN, description="Unique name: letters, digits, '.', '_', '-'")
    notebook: NotebookPath = Field(pattern=NOTEBOOK_PATH_PATTERN, description=NOTEBOOK_PATH_HELP)
    parameters: dict[str, Any] = Field(default_factory=dict)
    cron: str = Field(
        max_length=255,
        pattern=CRON_PATTERN,
        description="minute hour day-of-month month day-of-week, e.g. '30 2 * * *', or @daily",
    )
    timezone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="IANA time zone of the cron times, e.g. Europe/Berlin",
    )
    timeout_seconds: TimeoutSeconds | None = Field(
        default=None, description="Time limit of each run in seconds"
    )
    kernel_name: KernelName | None = Field(
        default=None, description="An installed kernel (default: the workers' kernel)"
    )
    max_concurrent_runs: JsonInt = Field(
        default=1,
        ge=1,
        le=MAX_CONCURRENT,
        description="A slot due while this many runs are unfinished is skipped",
    )
    catchup: Literal["once", "skip"] = Field(
        default="once", description="Slots missed while no scheduler ran: run the newest once, or skip all"
    )
    paused: bool = False
    notify: NotifyIn | None = Field(default=None, description="A webhook told when a run ends")


@contextmanager
def _mapped() -> Iterator[None]:
    """jobrunner's schedule errors as the API's: 422 naming the field, 404, 409."""
    from jobrunner.scheduling.schedules import InvalidSchedule, ScheduleConflict, ScheduleNotFound

    try:
        yield
    except InvalidSchedule as exc:
        raise Unprocessable(
            str(exc), problems=[{"location": f"body.{exc.field}", "problem": "invalid", "message": str(exc)}]
        ) from exc
    except ScheduleNotFound as exc:
        raise NotFound(str(exc)) from exc
    except ScheduleConflict as exc:
        raise Conflict(str(exc)) from exc


@router.post(
    "/schedules",
    response_model=ScheduleRead,
    status_code=201,
    dependencies=WRITE,
    responses={
        404: {"description": "No such notebook under the notebook roots"},
        409: {"description": "A schedule with this name exists"},
        422: {"description": "Invalid cron expression, time zone, kernel or parameters (each named)"},
        503: {"description": "The job store is unavailable"},
    },
)
def create_schedule(body: ScheduleCreateIn) -> Any:
    """Create a schedule; its first run is the next slot after now (unless paused)."""
    from jobrunner.scheduling.schedules import ScheduleCreate
    from jobrunner.scheduling.schedules import create_schedule as create

    with _mapped():
        fields = body.model_dump(exclude={"notify"})
        if body.notify is not None:
            fields.update(notify_url=body.notify.url, notify_on=body.notify.on)
        return create(ScheduleCreate(**fields), submitter="serve-api")


@router.get(
    "/schedules",
    response_model=ScheduleList,
    dependencies=READ,
    responses={503: {"description": "The job store is unavailable"}},
)
def list_schedules(
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    """Schedules by name, with paging."""
    from jobrunner.scheduling import schedules

    return schedules.list_schedules(limit=limit, offset=offset)


@router.get(
    "/schedules/{schedule_id}",
    response_model=ScheduleDetail,
    dependencies=READ,
    responses={**NO_SCHEDULE, 503: {"description": "The job store is unavailable"}},
)
def get_schedule(
    schedule_id: ScheduleId,
    runs: Annotated[int, Query(ge=0, le=1000, description="How many recent runs to include")] = 20,
) -> Any:
    """One schedule and its newest runs: the job of each slot and its state, or why it was skipped."""
    from jobrunner.scheduling import schedules

    with _mapped():
        return schedules.get_schedule(schedule_id, runs=runs)


@router.post(
    "/schedules/{schedule_id}/pause",
    response_model=ScheduleRead,
    dependencies=WRITE,
    responses={**NO_SCHEDULE, 503: {"description": "The job store is unavailable"}},
)
def pause_schedule(schedule_id: ScheduleId) -> Any:
    """Pause: no slot fires until it is resumed (runs already submitted go on)."""
    from jobrunner.scheduling import schedules

    with _mapped():
        return schedules.pause_schedule(schedule_id)


@router.post(
    "/schedules/{schedule_id}/resume",
    response_model=ScheduleRead,
    dependencies=WRITE,
    responses={**NO_SCHEDULE, 503: {"description": "The job store is unavailable"}},
)
def resume_schedule(schedule_id: ScheduleId) -> Any:
    """Resume from the next slot after now; slots that passed while paused are not caught up."""
    from jobrunner.scheduling import schedules

    with _mapped():
        return schedules.resume_schedule(schedule_id)


@router.delete(
    "/schedules/{schedule_id}",
    response_model=ScheduleRead,
    dependencies=WRITE,
    responses={**NO_SCHEDULE, 503: {"description": "The job store is unavailable"}},
)
def delete_schedule(schedule_id: ScheduleId) -> Any:
    """Delete a schedule and its run records (the jobs it submitted stay); returns what was deleted."""
    from jobrunner.scheduling import schedules

    with _mapped():
        return schedules.delete_schedule(schedule_id)


@router.post(
    "/schedules/{schedule_id}/run-now",
    response_model=ScheduleRunRead,
    status_code=201,
    dependencies=WRITE,
    responses={
        **NO_SCHEDULE,
        409: {
            "description": "max_concurrent_runs runs of this schedule are unfinished; nothing was submitted"
        },
        503: {"description": "The job store is unavailable"},
    },
)
def run_now(schedule_id: ScheduleId) -> Any:
    """Submit a run now (also while paused). The run's `status` is submitted (see `job_id`), or failed
    with the `reason` when the notebook no longer accepts the schedule's parameters."""
    from jobrunner.scheduling import schedules

    with _mapped():
        return schedules.run_now(schedule_id)


# -- the request body of POST /v1/schedules, per notebook ------------------------------------------------
def _schedule_create_component(schema: dict[str, Any]) -> None:
    from jobrunner.scheduling.cron import timezone_names
    from jobrunner.scheduling.schedules import installed_kernels
    from serve.routes.jobs import _parameter_schema, notebook_catalog

    components = schema.get("components", {}).get("schemas", {})
    base = components.get(ScheduleCreateIn.__name__)
    if base is None:
        return
    common = dict(base["properties"])
    common["timezone"] = {**common["timezone"], "enum": sorted(timezone_names())}
    common["kernel_name"] = {
        "anyOf": [{"type": "string", "enum": installed_kernels()}, {"type": "null"}],
        "default": None,
        "description": common["kernel_name"].get("description", ""),
    }
    found, invalid = notebook_catalog()
    variants = []
    for label, params in found:
        properties = dict(common)
        properties["notebook"] = {"type": "string", "const": label}
        properties["parameters"] = {
            "type": "object",
            "description": f"The parameters cell of {label}; every parameter has a default",
            "properties": {name: _parameter_schema(p) for name, p in params.parameters.items()},
            "additionalProperties": False,
        }
        variants.append({**base, "title": label, "properties": properties})
    other = dict(common)
    known = [label for label, _ in found] + [label for label, _ in invalid]
    other["notebook"] = {**other["notebook"], **({"not": {"enum": known}} if known else {})}
    variants.append({**base, "title": "Any other notebook path (404: no such notebook)", "properties": other})
    components[ScheduleCreateIn.__name__] = {
        "title": ScheduleCreateIn.__name__,
        "description": "A schedule: one variant per runnable notebook (GET /v1/notebooks). "
        + NOTEBOOK_PATH_HELP,
        "oneOf": variants,
    }


def _version() -> tuple[Any, ...]:
    from jobrunner.scheduling.schedules import installed_kernels
    from serve.routes.jobs import _notebooks_version

    return _notebooks_version(), tuple(installed_kernels())


def schedule_schema_part() -> SchemaPart:
    """The POST /v1/schedules body per notebook, with the known time zones and installed kernels."""
    return SchemaPart(apply=_schedule_create_component, version=_version)
