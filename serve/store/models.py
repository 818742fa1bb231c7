"""The API's tables (SQLAlchemy 2 typed ORM) and the typed rows that cross into and out of them.

Schema changes go through the Alembic revisions in serve/migrations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class PredictionBatch(Base):
    """One prediction request: its feature rows, per-row answers and probabilities as JSON arrays."""

    __tablename__ = "serve_prediction_batches"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(sa.String(200))
    model_version: Mapped[str] = mapped_column(sa.String(32))
    model_alias: Mapped[str] = mapped_column(sa.String(100))
    run_id: Mapped[str | None] = mapped_column(sa.String(64))
    trace_id: Mapped[str | None] = mapped_column(sa.String(32))
    n_rows: Mapped[int] = mapped_column(sa.Integer)
    features: Mapped[Any] = mapped_column(sa.JSON)
    labels: Mapped[Any] = mapped_column(sa.JSON)
    probabilities: Mapped[Any] = mapped_column(sa.JSON)


class BatchRecord(TypedDict):
    """What a prediction request hands the background writer: one `PredictionBatch` row to insert.

    `features` is the batch's logged feature rows, `labels` the per-row answers (None when the model
    answers with something else) and `probabilities` a classifier's (numpy arrays are fine: the engine's
    JSON serialiser takes them)."""

    id: str
    created_at: datetime
    model_name: str
    model_version: str
    model_alias: str
    run_id: str | None
    trace_id: str | None
    n_rows: int
    features: Any
    labels: list[Any] | None
    probabilities: Any


class Feedback(Base):
    __tablename__ = "serve_feedback"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    batch_id: Mapped[str] = mapped_column(sa.String(32))
    row_index: Mapped[int] = mapped_column(sa.Integer)
    model_name: Mapped[str] = mapped_column(sa.String(200))
    model_version: Mapped[str] = mapped_column(sa.String(32))
    predicted_label: Mapped[str] = mapped_column(sa.String(100))
    true_label: Mapped[str] = mapped_column(sa.String(100))
    correct: Mapped[bool] = mapped_column(sa.Boolean)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class RetrainTrigger(Base):
    """Debounce state per served model version: armed until accuracy crosses below the threshold."""

    __tablename__ = "serve_retrain_triggers"

    model_name: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    model_version: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    armed: Mapped[bool] = mapped_column(sa.Boolean)
    crossings: Mapped[int] = mapped_column(sa.Integer)
    last_accuracy: Mapped[float | None] = mapped_column(sa.Float)
    last_job_id: Mapped[str | None] = mapped_column(sa.String(64))
    last_triggered_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))


class RetrainState(TypedDict):
    """One `RetrainTrigger` row as `retrain.get_retrain` reads it (`last_triggered_at` aware UTC)."""

    model_name: str
    model_version: str
    armed: bool
    crossings: int
    last_accuracy: float | None
    last_job_id: str | None
    last_triggered_at: datetime | None
