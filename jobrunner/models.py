"""The job store's tables (SQLAlchemy 2 typed ORM). Schema changes go through Alembic migrations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from jobrunner.states import utcnow


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

    __table_args__ = (Index("ix_jobs_notebook_created", "notebook", "created_at"),)


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
