"""Scheduled notebooks: schedules (a notebook, parameters, a cron expression in a time zone) and their runs.

    from jobrunner.scheduling.schedules import ScheduleCreate, create_schedule
    create_schedule(ScheduleCreate(name="nightly-train", notebook="notebooks/03_train.ipynb",
                                   cron="30 2 * * *", timezone="Europe/Berlin"))

Each slot of a schedule is a row of `schedule_runs` keyed by (schedule_id, slot): the job submitted for
it, or why it was skipped. The scheduler (jobrunner/scheduling/scheduler.py) claims slots by inserting these
rows (INSERT ... ON CONFLICT DO NOTHING); the job itself is submitted through `jobrunner.jobs.submit` with the
idempotency key `schedule:<id>:<slot>`, so a run is an ordinary job (queue, retries, MLflow, lineage) and
a claim whose submission was interrupted is completed later without a second job. The CLI
(`jobrunner schedule ...`) and the REST API (/v1/schedules) call the functions here.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobrunner.config import Settings, get_settings
from jobrunner.errors import InfrastructureError, InvalidJobOption, InvalidTimeout, JobrunnerError
from jobrunner.scheduling.cron import NEVER, CronError, next_slot, parse_cron, parse_timezone
from jobrunner.store.db import session_scope
from jobrunner.store.models import Job, Schedule, ScheduleRun
from jobrunner.store.notify import check_notify
from jobrunner.store.schemas import MAX_NOTEBOOK_PATH, MAX_TIMEOUT, _aware
from jobrunner.store.states import JobState, utcnow

log = logging.getLogger(__name__)

SCHEDULE_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # str(uuid4())
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_CONCURRENT = 100
ACTIVE_JOB_STATES = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.CANCELLING.value)
Catchup = Literal["once", "skip"]
Trigger = Literal["cron", "manual"]
SlotStatus = Literal["claimed", "submitted", "skipped", "failed"]


# -- errors ----------------------------------------------------------------------------------------------
class InvalidSchedule(JobrunnerError):
    """A field of a schedule is not valid; `field` names it (CLI exit 2, HTTP 422)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.problems = [{"name": field, "problem": "invalid", "message": message}]
        super().__init__(message)


class ScheduleNotFound(JobrunnerError):
    """No schedule has this id or name (CLI exit 4, HTTP 404)."""

    def __init__(self, ref: str):
        self.ref = ref
        super().__init__(
            f"no schedule with id or name {ref!r} (list schedules with: jobrunner schedule list)"
        )


class ScheduleConflict(JobrunnerError):
    """The change conflicts with the schedule's state: a name in use, too many runs (CLI exit 5, HTTP 409)."""


# -- schemas ---------------------------------------------------------------------------------------------
class ScheduleCreate(BaseModel):
    """A new schedule. `kernel_name` defaults to the setting JOBRUNNER_KERNEL_NAME."""

    name: str = Field(pattern=NAME_PATTERN)
    notebook: str = Field(min_length=1, max_length=MAX_NOTEBOOK_PATH)
    parameters: dict[str, Any] = Field(default_factory=dict)
    cron: str = Field(min_length=1, max_length=255)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    timeout_seconds: float | None = None
    kernel_name: str | None = Field(default=None, max_length=255)
    max_concurrent_runs: int = Field(default=1, ge=1, le=MAX_CONCURRENT)
    catchup: Catchup = "once"
    paused: bool = False
    notify_url: str | None = Field(
        default=None, max_length=2048
    )  # each run's webhook (jobrunner/store/notify.py)
    notify_on: str | None = Field(default=None, max_length=8)  # failure (default) | success | both


class ScheduleRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    notebook: str
    parameters: dict[str, Any]
    cron: str
    timezone: str
    paused: bool
    timeout_seconds: float | None = None
    kernel_name: str
    max_concurrent_runs: int
    catchup: Catchup
    submitter: str | None = None
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None = Field(
        description="The next slot (UTC); null while paused, or when the expression never fires (30 February)"
    )
    notify_url: str | None = None
    notify_on: str | None = None

    utc_datetimes = field_validator("created_at", "updated_at", "next_run_at")(_aware)

    @classmethod
    def from_row(cls, row: Schedule) -> ScheduleRead:
        return cls(
            id=row.id,
            name=row.name,
            notebook=row.notebook,
            parameters=row.parameters or {},
            cron=row.cron,
            timezone=row.timezone,
            paused=row.paused,
            timeout_seconds=row.timeout_seconds,
            kernel_name=row.kernel_name,
            max_concurrent_runs=row.max_concurrent_runs,
            # a str column holding only the Literal's values (written from a ScheduleCreate); pydantic
            # checks it again
            catchup=cast(Catchup, row.catchup),
            submitter=row.submitter,
            created_at=row.created_at,
            updated_at=row.updated_at,
            notify_url=row.notify_url,
            notify_on=row.notify_on,
            next_run_at=None if row.paused or row.next_slot_at.year >= NEVER.year else row.next_slot_at,
        )


class ScheduleRunRead(BaseModel):
    schedule_id: str
    slot: datetime = Field(description="The cron slot (UTC), or the time of a run-now")
    trigger: Trigger
    status: SlotStatus = Field(
        description="claimed: being submitted; submitted: job_id is the run; skipped / failed: see reason"
    )
    job_id: str | None = None
    job_state: JobState | None = None
    reason: str | None = None
    created_at: datetime

    utc_datetimes = field_validator("slot", "created_at")(_aware)

    @classmethod
    def from_row(cls, row: ScheduleRun, job_state: str | None = None) -> ScheduleRunRead:
        return cls(
            schedule_id=row.schedule_id,
            slot=row.slot,
            # str columns holding only the Literals' values (written here); pydantic checks them again
            trigger=cast(Trigger, row.trigger),
            status=cast(SlotStatus, row.status),
            job_id=row.job_id,
            job_state=JobState(job_state) if job_state else None,
            reason=row.reason,
            created_at=row.created_at,
        )


class ScheduleDetail(ScheduleRead):
    runs: list[ScheduleRunRead] = Field(description="The newest runs first")


class ScheduleList(BaseModel):
    items: list[ScheduleRead]
    total: int
    limit: int
    offset: int


# -- validation ------------------------------------------------------------------------------------------
def installed_kernels() -> list[str]:
    """Names of the installed Jupyter kernelspecs."""
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


def check_kernel(name: str) -> str:
    kernels = installed_kernels()
    if name not in kernels:
        raise InvalidSchedule(
            "kernel_name",
            f"kernel {name!r} is not installed; installed kernels: "
            f"{', '.join(kernels) or '(none)'} (see: jupyter kernelspec list)",
        )
    return name


def check_run_parameters(
    notebook: str, parameters: dict[str, Any], settings: Settings
) -> tuple[str, dict[str, Any]]:
    """(project-relative notebook, validated parameters): the contract `jobrunner.jobs.submit` enforces."""
    from jobrunner.execution.notebooks import resolve_notebook
    from jobrunner.execution.outputs import check_outputs
    from jobrunner.execution.params import check_sizes, read_schema

    full, label = resolve_notebook(notebook, settings)
    schema = read_schema(full, label)
    values = schema.validate(dict(parameters))
    check_outputs(schema, values, settings.project_dir, write_workspace=False)  # its runs own their outputs
    check_sizes(
        values,
        notebook=label,
        max_value_bytes=settings.max_parameter_bytes,
        max_total_bytes=settings.max_parameters_bytes,
    )
    return label, values


def _check_spec(spec: ScheduleCreate, settings: Settings) -> tuple[str, str, dict[str, Any], str]:
    try:
        cron = parse_cron(spec.cron)
        parse_timezone(spec.timezone)
    except CronError as exc:
        raise InvalidSchedule(exc.field, str(exc)) from None
    t = spec.timeout_seconds
    if t is not None and not 0 < t <= MAX_TIMEOUT:
        raise InvalidTimeout(t)
    kernel = check_kernel(spec.kernel_name or settings.kernel_name)
    label, values = check_run_parameters(spec.notebook, spec.parameters, settings)
    return cron, label, values, kernel


# -- queries (keyword-only, on a session) ----------------------------------------------------------------
def find_schedule(*, session: Session, ref: str, lock: bool = False) -> Schedule | None:
    """The schedule with id or name `ref`."""
    stmt = select(Schedule).where(or_(Schedule.id == ref, Schedule.name == ref))
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt.execution_options(populate_existing=True)).first()


def active_runs(*, session: Session, schedule_id: str) -> list[tuple[ScheduleRun, str | None]]:
    """Runs of the schedule still in progress: being submitted, or their job is not finished."""
    stmt = (
        select(ScheduleRun, Job.state)
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .where(
            ScheduleRun.schedule_id == schedule_id,
            or_(
                ScheduleRun.status == "claimed",
                and_(ScheduleRun.status == "submitted", Job.state.in_(ACTIVE_JOB_STATES)),
            ),
        )
        .order_by(ScheduleRun.slot)
    )
    return [(run, state) for run, state in session.execute(stmt)]


def busy_reason(active: list[tuple[ScheduleRun, str | None]], limit: int, claimed_now: int = 0) -> str:
    """Why a run is not started: the runs in progress (and the ones claimed in this tick)."""
    what = "an earlier slot of this tick"
    if active:
        run, state = active[-1]
        what = f"job {run.job_id} is {state}" if run.job_id else "a run is being submitted"
    return f"max_concurrent_runs={limit} reached: {len(active) + claimed_now} run(s) in progress ({what})"


def insert_run(
    *,
    session: Session,
    schedule_id: str,
    slot: datetime,
    trigger: str,
    status: str,
    reason: str | None = None,
) -> bool:
    """Claim the slot: INSERT ... ON CONFLICT DO NOTHING; True when this call inserted the row."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
    now = utcnow()
    stmt = (
        insert(ScheduleRun)
        .values(
            schedule_id=schedule_id,
            slot=slot,
            trigger=trigger,
            status=status,
            reason=reason,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["schedule_id", "slot"])
        .returning(ScheduleRun.slot)
    )
    return session.execute(stmt).first() is not None


def claimed_runs(*, session: Session, limit: int = 50) -> list[tuple[str, datetime]]:
    """(schedule_id, slot) of claims whose job is not submitted yet, oldest first."""
    rows = session.execute(
        select(ScheduleRun.schedule_id, ScheduleRun.slot)
        .where(ScheduleRun.status == "claimed")
        .order_by(ScheduleRun.created_at)
        .limit(limit)
    )
    return [(sid, slot) for sid, slot in rows]


def recent_runs(*, session: Session, schedule_id: str, limit: int) -> list[ScheduleRunRead]:
    stmt = (
        select(ScheduleRun, Job.state)
        .outerjoin(Job, Job.id == ScheduleRun.job_id)
        .where(ScheduleRun.schedule_id == schedule_id)
        .order_by(ScheduleRun.slot.desc())
        .limit(limit)
    )
    return [ScheduleRunRead.from_row(run, state) for run, state in session.execute(stmt)]


# -- the API: create, list, show, pause, resume, delete, run now ------------------------------------------
def create_schedule(
    spec: ScheduleCreate,
    *,
    submitter: str | None = None,
    settings: Settings | None = None,
    now: datetime | None = None,
) -> ScheduleRead:
    """Validate (cron, time zone, kernel, notebook and parameters, time limit) and store a schedule.

    Raises InvalidSchedule / InvalidTimeout / ParameterError / NotebookNotFound (nothing stored),
    ScheduleConflict when the name is taken, StoreUnavailable.
    """
    settings = settings or get_settings()
    cron, label, values, kernel = _check_spec(spec, settings)
    try:
        notify_url, notify_on = check_notify(spec.notify_url, spec.notify_on)
    except InvalidJobOption as exc:
        raise InvalidSchedule("notify_url" if exc.field == "notify" else exc.field, str(exc)) from None
    now = now or utcnow()
    first = next_slot(cron, spec.timezone, now)  # NEVER for 30 February: stored, shown as next_run_at null
    row = Schedule(
        id=str(uuid.uuid4()),
        name=spec.name,
        notebook=label,
        parameters=values,
        cron=cron,
        timezone=spec.timezone,
        paused=spec.paused,
        timeout_seconds=spec.timeout_seconds,
        kernel_name=kernel,
        max_concurrent_runs=spec.max_concurrent_runs,
        catchup=spec.catchup,
        submitter=submitter,
        created_at=now,
        updated_at=now,
        next_slot_at=first,
        notify_url=notify_url,
        notify_on=notify_on,
    )
    try:
        with session_scope(settings) as session:
            session.add(row)
            session.flush()
            result = ScheduleRead.from_row(row)
    except IntegrityError:
        raise ScheduleConflict(
            f"a schedule named {spec.name!r} exists already; choose another name or "
            f"delete it first (jobrunner schedule delete {spec.name})"
        ) from None
    log.info(
        "schedule %s (%s) created: %s %s, first slot %s",
        result.name,
        result.id,
        cron,
        spec.timezone,
        first.isoformat(),
    )
    return result


def list_schedules(*, limit: int = 50, offset: int = 0, settings: Settings | None = None) -> ScheduleList:
    limit, offset = max(1, min(limit, 1000)), max(0, offset)
    with session_scope(settings or get_settings()) as session:
        total = session.scalar(select(func.count()).select_from(Schedule)) or 0
        rows = session.scalars(select(Schedule).order_by(Schedule.name).limit(limit).offset(offset))
        return ScheduleList(
            items=[ScheduleRead.from_row(r) for r in rows], total=total, limit=limit, offset=offset
        )


def get_schedule(ref: str, *, runs: int = 20, settings: Settings | None = None) -> ScheduleDetail:
    """A schedule by id or name, with its newest `runs` runs."""
    with session_scope(settings or get_settings()) as session:
        row = find_schedule(session=session, ref=ref)
        if row is None:
            raise ScheduleNotFound(ref)
        recent = recent_runs(session=session, schedule_id=row.id, limit=max(0, min(runs, 1000)))
        return ScheduleDetail(**ScheduleRead.from_row(row).model_dump(), runs=recent)


def pause_schedule(ref: str, *, settings: Settings | None = None) -> ScheduleRead:
    """No slot fires while paused (runs already submitted go on)."""
    with session_scope(settings or get_settings()) as session:
        row = find_schedule(session=session, ref=ref, lock=True)
        if row is None:
            raise ScheduleNotFound(ref)
        if not row.paused:
            row.paused, row.updated_at = True, utcnow()
        return ScheduleRead.from_row(row)


def resume_schedule(
    ref: str, *, settings: Settings | None = None, now: datetime | None = None
) -> ScheduleRead:
    """Fire again from the next slot after now; slots that passed while paused are not caught up."""
    now = now or utcnow()
    with session_scope(settings or get_settings()) as session:
        row = find_schedule(session=session, ref=ref, lock=True)
        if row is None:
            raise ScheduleNotFound(ref)
        if row.paused:
            row.paused, row.updated_at = False, utcnow()
            row.next_slot_at = next_slot(row.cron, row.timezone, now - timedelta(microseconds=1))
        return ScheduleRead.from_row(row)


def delete_schedule(ref: str, *, settings: Settings | None = None) -> ScheduleRead:
    """Delete a schedule and its run records; the jobs it submitted stay."""
    with session_scope(settings or get_settings()) as session:
        row = find_schedule(session=session, ref=ref, lock=True)
        if row is None:
            raise ScheduleNotFound(ref)
        result = ScheduleRead.from_row(row)
        session.query(ScheduleRun).filter(ScheduleRun.schedule_id == row.id).delete()
        session.delete(row)
        return result


def run_now(ref: str, *, settings: Settings | None = None, now: datetime | None = None) -> ScheduleRunRead:
    """Submit a run at once (also while paused); ScheduleConflict when max_concurrent_runs are running."""
    settings = settings or get_settings()
    now = now or utcnow()
    with session_scope(settings) as session:
        row = find_schedule(session=session, ref=ref, lock=True)  # serialises with the scheduler's tick
        if row is None:
            raise ScheduleNotFound(ref)
        active = active_runs(session=session, schedule_id=row.id)
        if len(active) >= row.max_concurrent_runs:
            raise ScheduleConflict(
                f"schedule {row.name}: {busy_reason(active, row.max_concurrent_runs)}; "
                "nothing was submitted (wait for it, or cancel it)"
            )
        insert_run(session=session, schedule_id=row.id, slot=now, trigger="manual", status="claimed")
        schedule_id = row.id
    return submit_claimed(schedule_id, now, settings=settings) or _run(schedule_id, now, settings)


def _run(schedule_id: str, slot: datetime, settings: Settings) -> ScheduleRunRead:
    with session_scope(settings) as session:
        run = session.get(ScheduleRun, (schedule_id, slot))
        if run is None:
            raise ScheduleNotFound(schedule_id)
        job = session.get(Job, run.job_id) if run.job_id else None
        return ScheduleRunRead.from_row(run, job.state if job else None)


# -- submission of claimed slots ---------------------------------------------------------------------------
def run_key(schedule_id: str, slot: datetime) -> str:
    """The idempotency key of the job of one slot: resubmitting a slot returns its first job."""
    return f"schedule:{schedule_id}:{_aware(slot).isoformat()}"  # type: ignore[union-attr]


def submit_claimed(schedule_id: str, slot: datetime, *, settings: Settings) -> ScheduleRunRead | None:
    """Submit the job of a claimed slot and record it; None if the slot is not claimed (done, or another
    scheduler holds it right now).

    The claim row stays locked while the job is submitted. A crash in between leaves the claim: the next
    call submits again with the same idempotency key and gets the job that was created, never a second.
    The parameters are validated again (the notebook may have changed): a run that no longer fits is
    recorded as failed with the reason, and the schedule goes on. InfrastructureError propagates (the
    claim stays for the next try).
    """
    from jobrunner.jobs import submit

    with session_scope(settings) as session:
        run = session.scalars(
            select(ScheduleRun)
            .where(
                ScheduleRun.schedule_id == schedule_id,
                ScheduleRun.slot == slot,
                ScheduleRun.status == "claimed",
            )
            .with_for_update(skip_locked=True)
        ).first()
        if run is None:
            return None
        row = session.get(Schedule, schedule_id)
        if row is None:  # cannot be: the foreign key cascades a schedule's deletion to its (locked) runs
            raise RuntimeError(f"schedule {schedule_id} is gone but its claimed run is not")
        state: str | None = None
        try:
            job = submit(
                row.notebook,
                row.parameters,
                idempotency_key=run_key(schedule_id, run.slot),
                submitter=f"schedule:{row.name}",
                timeout=row.timeout_seconds,
                kernel=row.kernel_name,
                notify=row.notify_url,
                notify_on=row.notify_on,
                settings=settings,
            )
        except InfrastructureError:
            raise
        except JobrunnerError as exc:
            run.status, run.reason = "failed", f"not submitted: {exc}"
            log.warning("schedule %s slot %s not submitted: %s", row.name, slot.isoformat(), exc)
        else:
            run.status, run.job_id, state = "submitted", job.id, job.state.value
            log.info("schedule %s slot %s: job %s", row.name, slot.isoformat(), job.id)
        run.updated_at = utcnow()
        session.flush()
        return ScheduleRunRead.from_row(run, state)
