"""The job store's tables (SQLAlchemy 2 typed ORM). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """The time stamps of the job store: timezone-aware UTC (jobrunner.store.states re-exports it)."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


TZ = DateTime(timezone=True)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    notebook: Mapped[str] = mapped_column(String(1024))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    submitter: Mapped[str | None] = mapped_column(String(255))
    # Reserved for the notebook-aware run cache (normalised code + parameters + data hashes).
    cache_key: Mapped[str | None] = mapped_column(String(128), index=True)
    created_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    queued_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    finished_at: Mapped[datetime | None] = mapped_column(TZ)
    heartbeat_at: Mapped[datetime | None] = mapped_column(TZ)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    cells_done: Mapped[int] = mapped_column(Integer, default=0)
    cells_total: Mapped[int | None] = mapped_column(Integer)
    current_cell: Mapped[int | None] = mapped_column(Integer)
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_cell_index: Mapped[int | None] = mapped_column(Integer)
    error_ename: Mapped[str | None] = mapped_column(String(255))
    error_evalue: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    output_uri: Mapped[str | None] = mapped_column(String(2048))
    html_uri: Mapped[str | None] = mapped_column(String(2048))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    # The submitter's time limit for one attempt; None: the worker's JOBRUNNER_TIMEOUT (the lower one wins).
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    # The kernelspec the job runs on; None: the worker's JOBRUNNER_KERNEL_NAME
    # (jobrunner/execution/kernels.py).
    kernel_name: Mapped[str | None] = mapped_column(String(255))
    # Webhook notified on a terminal state (jobrunner/store/notify.py): on "failure", "success" or "both".
    notify_url: Mapped[str | None] = mapped_column(String(2048))
    notify_on: Mapped[str | None] = mapped_column(String(8))
    # The files the job's output parameters wrote (jobrunner/execution/outputs.py):
    # [{parameter, path, md5, size, uri}]
    outputs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # The submitter asked this job to write the project's files where its output parameters say (as
    # `jobrunner run`); otherwise output parameters left at their defaults point into the job's folder.
    write_workspace: Mapped[bool] = mapped_column(Boolean, default=False)
    use_cache: Mapped[bool] = mapped_column(Boolean, default=True)
    cached_from: Mapped[str | None] = mapped_column(String(36), index=True)  # the job whose run a hit reused
    # None: a notebook job; "verify": re-execute the MLflow run `verifies` and compare
    # (jobrunner/worker/verify.py)
    kind: Mapped[str | None] = mapped_column(String(16))
    verifies: Mapped[str | None] = mapped_column(String(64), index=True)
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the request (rtol), then the result

    __table_args__ = (Index("ix_jobs_notebook_created", "notebook", "created_at"),)


class RunCacheClaim(Base):
    """A cache key being executed by one job: identical jobs submitted meanwhile wait for it (0004)."""

    __tablename__ = "run_cache_claims"

    cache_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    claimed_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)


class Outbox(Base):
    """Messages to publish, written in the submitting transaction; the relay publishes and marks them."""

    __tablename__ = "job_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    available_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(TZ)
    # Embedded mode (no broker): the outbox is the queue; a message that cannot be processed is parked here.
    dead_at: Mapped[datetime | None] = mapped_column(TZ)
    dead_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_job_outbox_pending", "sent_at", "available_at"),)


class JobEvent(Base):
    """Audit log of state changes (what `jobrunner logs` shows)."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    from_state: Mapped[str | None] = mapped_column(String(128))
    to_state: Mapped[str] = mapped_column(String(16))
    worker_id: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    # None: a state change; "notify": a webhook delivery (sent / failed); "output": a live-output note.
    kind: Mapped[str | None] = mapped_column(String(16))


class JobOutput(Base):
    """Cell output of a running job, appended in batches by its worker (jobrunner/store/live.py)."""

    __tablename__ = "job_output"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    cell_index: Mapped[int | None] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # stream | error | result | rich | note
    name: Mapped[str | None] = mapped_column(String(16))  # stdout | stderr for streams
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TZ, default=utcnow)

    __table_args__ = (Index("ix_job_output_job_id_id", "job_id", "id"),)


class JobNotification(Base):
    """A webhook delivery owed for one terminal state of a job (the outbox of jobrunner/store/notify.py)."""

    __tablename__ = "job_notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    available_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(TZ)
    failed_at: Mapped[datetime | None] = mapped_column(TZ)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("job_id", "state", "attempt", name="uq_job_notifications_once"),
        Index("ix_job_notifications_due", "sent_at", "failed_at", "available_at"),
    )


class Schedule(Base):
    """A notebook run on a cron schedule (jobrunner/scheduling/schedules.py); each slot it fires is a
    ScheduleRun."""

    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    notebook: Mapped[str] = mapped_column(String(1024))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    kernel_name: Mapped[str] = mapped_column(String(255))
    max_concurrent_runs: Mapped[int] = mapped_column(Integer, default=1)
    catchup: Mapped[str] = mapped_column(String(8), default="once")  # once | skip
    submitter: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    # The first slot not handled yet: the scheduler's cursor, advanced in the transaction that claims slots.
    next_slot_at: Mapped[datetime] = mapped_column(TZ)
    notify_url: Mapped[str | None] = mapped_column(
        String(2048)
    )  # copied to each run (jobrunner/store/notify.py)
    notify_on: Mapped[str | None] = mapped_column(String(8))

    __table_args__ = (Index("ix_schedules_due", "paused", "next_slot_at"),)


class ScheduleRun(Base):
    """One slot of a schedule: the job submitted for it, or why it was skipped. (schedule_id, slot) is the
    claim: whichever scheduler inserts it first owns the slot; every other insert does nothing."""

    __tablename__ = "schedule_runs"

    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[datetime] = mapped_column(TZ, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(8))  # cron | manual
    status: Mapped[str] = mapped_column(String(16))  # claimed | submitted | skipped | failed
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZ, default=utcnow)

    __table_args__ = (Index("ix_schedule_runs_status", "status", "created_at"),)
