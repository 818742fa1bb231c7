"""Queries of the job store, as keyword-only functions taking a session. Nothing else builds queries."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobrunner.errors import IdempotencyConflict
from jobrunner.store.messages import JobMessage
from jobrunner.store.models import Job, JobEvent, Outbox, RunCacheClaim
from jobrunner.store.schemas import JobCreate
from jobrunner.store.states import JobState, transition, utcnow


def create_job(*, session: Session, job_in: JobCreate, cached_from: Job | None = None) -> Job:
    """Insert a QUEUED job and its outbox message (the caller's transaction makes them atomic); with
    `cached_from` (a run-cache hit), a job SUCCEEDED at once with that job's results and no message."""
    if cached_from is not None:
        return _create_cached(session=session, job_in=job_in, source=cached_from)
    now = utcnow()
    job = Job(
        **_submitted(job_in, now),
        state=JobState.QUEUED.value,
        write_workspace=job_in.write_workspace,
        use_cache=job_in.use_cache,
        cells_done=0,
        kernel_name=job_in.kernel_name,
        notify_url=job_in.notify_url,
        notify_on=job_in.notify_on,
        kind=job_in.kind,
        verifies=job_in.verifies,
        verification=job_in.verification,
    )
    session.add(job)
    session.flush()
    session.add(JobEvent(job_id=job.id, at=now, to_state=JobState.QUEUED.value, message="submitted"))
    add_outbox(session=session, job_id=job.id, attempt=0)
    return job


def _submitted(job_in: JobCreate, now: datetime) -> dict[str, Any]:
    """The columns of a new job that come from its request (a queued job and a run-cache hit alike)."""
    return {
        "id": str(uuid.uuid4()),
        "notebook": job_in.notebook,
        "parameters": job_in.parameters,
        "attempt": 0,
        "idempotency_key": job_in.idempotency_key,
        "submitter": job_in.submitter,
        "timeout_seconds": job_in.timeout_seconds,
        "cache_key": job_in.cache_key,
        "created_at": now,
        "updated_at": now,
        "queued_at": now,
    }


def _create_cached(*, session: Session, job_in: JobCreate, source: Job) -> Job:
    now = utcnow()
    job = Job(
        **_submitted(job_in, now),
        state=JobState.SUCCEEDED.value,
        write_workspace=False,
        use_cache=True,
        cached_from=source.id,
        started_at=now,
        finished_at=now,
        cells_done=source.cells_done or 0,
        cells_total=source.cells_total,
        output_uri=source.output_uri,
        html_uri=source.html_uri,
        mlflow_run_id=source.mlflow_run_id,
        outputs=source.outputs,
    )
    session.add(job)
    session.flush()
    session.add(
        JobEvent(
            job_id=job.id,
            at=now,
            to_state=JobState.SUCCEEDED.value,
            message=f"served from the run cache: the execution of job {source.id}",
        )
    )
    return job


def cached_executions(*, session: Session, key: str, limit: int = 5) -> list[Job]:
    """SUCCEEDED executions (not hits themselves) with this run-cache key, newest first."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.cache_key == key, Job.state == JobState.SUCCEEDED.value, Job.cached_from.is_(None))
            .order_by(Job.finished_at.desc())
            .limit(limit)
        )
    )


def claim_cache_key(*, session: Session, key: str, job_id: str, worker_id: str) -> str:
    """Claim run-cache key `key` for job `job_id`; returns the job that holds it afterwards (`job_id`: this
    job executes). A claim whose job ended (failed, cancelled: it released nothing) is taken over by one
    conditional UPDATE, so of several waiters exactly one takes it."""
    for _ in range(3):
        held = session.get(RunCacheClaim, key, populate_existing=True)
        if held is None:
            try:
                with session.begin_nested():
                    session.add(
                        RunCacheClaim(cache_key=key, job_id=job_id, worker_id=worker_id, claimed_at=utcnow())
                    )
                return job_id
            except IntegrityError:  # another job claimed it first
                continue
        if held.job_id == job_id:
            return job_id
        state = session.scalar(select(Job.state).where(Job.id == held.job_id))
        if state is not None and not JobState(state).terminal:
            return held.job_id
        taken = session.execute(
            update(RunCacheClaim)
            .where(RunCacheClaim.cache_key == key, RunCacheClaim.job_id == held.job_id)
            .values(job_id=job_id, worker_id=worker_id, claimed_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            return job_id
    held = session.get(RunCacheClaim, key, populate_existing=True)
    return held.job_id if held is not None else job_id


def release_cache_key(*, session: Session, key: str, job_id: str) -> bool:
    """Drop the claim of `job_id` on `key` (done or not, it no longer executes); True."""
    session.execute(
        delete(RunCacheClaim).where(RunCacheClaim.cache_key == key, RunCacheClaim.job_id == job_id)
    )
    return True


def cache_stats(*, session: Session) -> dict[str, int]:
    entries = (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.cache_key.is_not(None), Job.state == JobState.SUCCEEDED.value, Job.cached_from.is_(None)
            )
        )
        or 0
    )
    hits = session.scalar(select(func.count()).select_from(Job).where(Job.cached_from.is_not(None))) or 0
    misses = (
        session.scalar(
            select(func.count()).select_from(Job).where(Job.cache_key.is_not(None), Job.cached_from.is_(None))
        )
        or 0
    )
    return {"entries": entries, "hits": hits, "misses": misses}


def cache_clear(*, session: Session) -> int:
    """Forget every cache entry (executions keep their results; later submissions run again), also the
    keys of jobs still queued or running; returns how many reusable entries were forgotten."""
    entries = cache_stats(session=session)["entries"]
    session.execute(
        update(Job)
        .where(Job.cache_key.is_not(None), Job.cached_from.is_(None))
        .values(cache_key=None)
        .execution_options(synchronize_session=False)
    )
    return entries


def create_job_idempotent(
    *, session: Session, job_in: JobCreate, cached_from: Job | None = None
) -> tuple[Job, bool]:
    """create_job, or the existing job with the same idempotency key; returns (job, created)."""
    if job_in.idempotency_key:
        existing = get_job_by_key(session=session, key=job_in.idempotency_key)
        if existing is not None:
            return _same_submission(existing, job_in), False
        try:
            with session.begin_nested():
                return create_job(session=session, job_in=job_in, cached_from=cached_from), True
        except IntegrityError:
            # a concurrent submission with the same key won the unique index
            existing = get_job_by_key(session=session, key=job_in.idempotency_key)
            if existing is None:
                raise
            return _same_submission(existing, job_in), False
    return create_job(session=session, job_in=job_in, cached_from=cached_from), True


def _same_submission(existing: Job, job_in: JobCreate) -> Job:
    """The job of a reused key, if it was submitted with the same notebook and parameters."""
    if (
        existing.notebook != job_in.notebook
        or (existing.parameters or {}) != job_in.parameters
        or existing.timeout_seconds != job_in.timeout_seconds
        or bool(existing.write_workspace) != job_in.write_workspace
    ):
        raise IdempotencyConflict(job_in.idempotency_key or "", existing.id)
    return existing


def add_outbox(*, session: Session, job_id: str, attempt: int, delay: float = 0.0) -> None:
    now = utcnow()
    session.add(
        Outbox(
            job_id=job_id,
            payload=JobMessage(job_id, attempt).as_payload(),
            created_at=now,
            available_at=now + timedelta(seconds=delay),
        )
    )


def get_job(*, session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


def get_job_by_key(*, session: Session, key: str) -> Job | None:
    return session.scalars(select(Job).where(Job.idempotency_key == key)).first()


def list_jobs(
    *,
    session: Session,
    state: str | None = None,
    notebook: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Job], int]:
    conditions = []
    if state:
        conditions.append(Job.state == state)
    if notebook:
        conditions.append(Job.notebook == notebook)
    total = session.scalar(select(func.count()).select_from(Job).where(*conditions)) or 0
    rows = session.scalars(
        select(Job).where(*conditions).order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)
    ).all()
    return list(rows), total


def job_events(*, session: Session, job_id: str) -> list[JobEvent]:
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def count_by_state(*, session: Session) -> dict[str, int]:
    return {s: n for s, n in session.execute(select(Job.state, func.count()).group_by(Job.state))}


# -- outbox (relay and the embedded queue) ------------------------------------------------------------
def pending_outbox(*, session: Session, limit: int = 100) -> list[Outbox]:
    """Unsent messages that are due, locked so that concurrent relays skip each other's rows."""
    stmt = (
        select(Outbox)
        .where(Outbox.sent_at.is_(None), Outbox.dead_at.is_(None), Outbox.available_at <= utcnow())
        .order_by(Outbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(stmt))


def mark_sent(*, session: Session, outbox_id: int) -> None:
    session.execute(update(Outbox).where(Outbox.id == outbox_id).values(sent_at=utcnow()))


def mark_dead(*, session: Session, outbox_id: int, reason: str) -> None:
    session.execute(update(Outbox).where(Outbox.id == outbox_id).values(dead_at=utcnow(), dead_reason=reason))


def dead_outbox(*, session: Session, limit: int = 100) -> list[Outbox]:
    return list(
        session.scalars(select(Outbox).where(Outbox.dead_at.is_not(None)).order_by(Outbox.id).limit(limit))
    )


# -- worker side -----------------------------------------------------------------------------------------
def claim(*, session: Session, job_id: str, worker_id: str, stale_before: datetime | None) -> bool:
    """Take a QUEUED job, or a RUNNING one whose worker's heartbeat is older than `stale_before`
    (None: never take a RUNNING job over)."""
    now = utcnow()
    fields: dict[str, Any] = dict(
        attempt=Job.attempt + 1,
        worker_id=worker_id,
        started_at=now,
        heartbeat_at=now,
        finished_at=None,
        cells_done=0,
        current_cell=None,
        error_kind=None,
        error_cell_index=None,
        error_ename=None,
        error_evalue=None,
        error_message=None,
    )
    if transition(
        session,
        job_id,
        [JobState.QUEUED],
        JobState.RUNNING,
        actor=worker_id,
        event=f"started by {worker_id}",
        **fields,
    ):
        return True
    if stale_before is None:
        return False
    return transition(
        session,
        job_id,
        [JobState.RUNNING],
        JobState.RUNNING,
        where=[or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before)],
        actor=worker_id,
        event=f"taken over by {worker_id} (previous worker stale)",
        **fields,
    )


def heartbeat(*, session: Session, job_id: str, worker_id: str, progress: dict[str, Any]) -> str | None:
    """Write the heartbeat and progress of a job this worker runs; returns the job's state (None if lost)."""
    session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.worker_id == worker_id,
            Job.state.in_([JobState.RUNNING.value, JobState.CANCELLING.value]),
        )
        .values(heartbeat_at=utcnow(), **progress)
        .execution_options(synchronize_session=False)
    )
    return session.scalar(select(Job.state).where(Job.id == job_id, Job.worker_id == worker_id))


def job_state(*, session: Session, job_id: str, worker_id: str) -> str | None:
    """The state of a job if `worker_id` still owns it, else None."""
    return session.scalar(select(Job.state).where(Job.id == job_id, Job.worker_id == worker_id))


def stale_jobs(*, session: Session, stale_before: datetime, limit: int = 100) -> list[Job]:
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.state.in_([JobState.RUNNING.value, JobState.CANCELLING.value]),
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < stale_before),
            )
            .order_by(Job.heartbeat_at)
            .limit(limit)
        )
    )


def orphaned_queued(*, session: Session, older_than: datetime, limit: int = 100) -> list[str]:
    """QUEUED jobs with no undelivered message (embedded mode: a consumer died between take and claim)."""
    pending = exists().where(
        Outbox.job_id == Job.id,
        Outbox.dead_at.is_(None),
        or_(Outbox.sent_at.is_(None), Outbox.sent_at >= older_than),
    )
    return list(
        session.scalars(
            select(Job.id)
            .where(and_(Job.state == JobState.QUEUED.value, Job.updated_at < older_than, ~pending))
            .limit(limit)
        )
    )
