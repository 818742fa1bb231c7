"""The API's tables and every query on them (routes and the background writer call these functions).

Predictions are stored one row per request ("batch"): the feature rows (JSON values of their own type),
the per-row answers (labels, values or outputs) and probabilities (classifiers only; else null) as JSON
arrays. A prediction id is `<batch id>-<row index>`, so storing a 1000-row request is one insert.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from serve.errors import Conflict, PredictionNotFound, Unprocessable

log = logging.getLogger(__name__)

VERSION_TABLE = "serve_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class Base(DeclarativeBase):
    pass


class PredictionBatch(Base):
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


# -- engine and migrations ----------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays orjson does not take natively (non-contiguous) and scalars
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def make_engine(url: str) -> Engine:
    """The prediction store's engine, from jobrunner's one engine factory with the API's settings: a bigger
    pool, no connect timeout or recycling, WAL (readers do not block the background writer) and a 30 s busy
    timeout on SQLite, orjson for the JSON columns."""
    from jobrunner.store.db import new_engine

    return new_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_recycle=-1,
        connect_timeout=None,
        sqlite_pragmas=("journal_mode=WAL", "busy_timeout=30000"),
        setting="SERVE_DATABASE_URL",
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


def migrate(engine: Engine) -> None:
    """Bring the API's tables to the newest revision (idempotent; safe with several workers starting)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import OperationalError
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # SQLite has no advisory lock: another worker starting at the same moment may have created the tables
    # between our check and our CREATE; the next attempt sees them at head. PostgreSQL errors are final.
    sqlite = engine.dialect.name == "sqlite"
    for attempt in Retrying(
        retry=retry_if_exception_type(OperationalError) if sqlite else lambda _: False,
        stop=stop_after_attempt(5),
        wait=wait_incrementing(0.2, 0.2),
        reraise=True,
    ):
        with attempt, engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(742917001)"))  # one worker at a time
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


# -- predictions ----------------------------------------------------------------------------------------
def insert_batches(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        with engine.begin() as conn:
            conn.execute(sa.insert(PredictionBatch), list(rows))


@dataclass(frozen=True)
class StoredPrediction:
    prediction_id: str
    batch_id: str
    row_index: int
    created_at: datetime
    model_name: str
    model_version: str
    model_alias: str
    run_id: str | None
    trace_id: str | None
    features: list[Any]  # JSON values in signature order (numbers, strings, ISO date-times, ...)
    label: Any  # the class label, a regressor's value, or another model's output for the row
    probabilities: list[float] | None  # classifiers with predict_proba only


def split_prediction_id(prediction_id: str) -> tuple[str, int]:
    batch_id, sep, index = prediction_id.rpartition("-")
    if not sep or len(batch_id) != 32 or not index.isdigit():
        raise Unprocessable(
            f"'{prediction_id[:80]}' is not a prediction id (expected <32 hex digits>-<row>, "
            "as returned by POST /v1/predict)"
        )
    return batch_id, int(index)


def get_prediction(engine: Engine, prediction_id: str) -> StoredPrediction | None:
    batch_id, index = split_prediction_id(prediction_id)
    with engine.connect() as conn:
        row = (
            conn.execute(sa.select(PredictionBatch).where(PredictionBatch.id == batch_id)).mappings().first()
        )
    if row is None:
        return None
    if index >= row["n_rows"]:
        raise PredictionNotFound(
            f"prediction {prediction_id} not found: that request had {row['n_rows']} rows"
        )
    return StoredPrediction(
        prediction_id=prediction_id,
        batch_id=batch_id,
        row_index=index,
        created_at=_aware(row["created_at"]),
        model_name=row["model_name"],
        model_version=row["model_version"],
        model_alias=row["model_alias"],
        run_id=row["run_id"],
        trace_id=row["trace_id"],
        features=row["features"][index],
        label=row["labels"][index] if row["labels"] is not None else None,
        probabilities=row["probabilities"][index] if row["probabilities"] is not None else None,
    )


def recent_rows(
    engine: Engine, *, model_name: str, model_version: str, limit: int
) -> tuple[list[list[float]], list[Any], datetime | None, datetime | None]:
    """The newest `limit` predicted rows of one model version: (feature rows, labels, oldest, newest)."""
    query = (
        sa.select(
            PredictionBatch.n_rows,
            PredictionBatch.features,
            PredictionBatch.labels,
            PredictionBatch.created_at,
        )
        .where(PredictionBatch.model_name == model_name, PredictionBatch.model_version == model_version)
        .order_by(PredictionBatch.created_at.desc())
    )
    features: list[list[float]] = []
    labels: list[Any] = []
    oldest = newest = None
    with engine.connect() as conn:
        for n_rows, batch_features, batch_labels, created_at in conn.execute(
            query.execution_options(yield_per=200)
        ):
            take = min(n_rows, limit - len(features))
            features.extend(batch_features[:take])
            labels.extend(batch_labels[:take] if batch_labels is not None else [None] * take)
            newest = newest or _aware(created_at)
            oldest = _aware(created_at)
            if len(features) >= limit:
                break
    return features, labels, oldest, newest


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything written here is UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- feedback -------------------------------------------------------------------------------------------
def record_feedback(
    engine: Engine, *, prediction: StoredPrediction, true_label: str, correct: bool | None = None
) -> Feedback:
    """Store the true label (for a regressor: the true value, `correct` meaning an exact value)."""
    item = {
        "prediction_id": prediction.prediction_id,
        "batch_id": prediction.batch_id,
        "row_index": prediction.row_index,
        "model_name": prediction.model_name,
        "model_version": prediction.model_version,
        "predicted_label": str(prediction.label),
        "true_label": true_label,
        "correct": str(prediction.label) == true_label if correct is None else correct,
        "created_at": datetime.now(UTC),
    }
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(Feedback), [item])
    except IntegrityError as exc:
        raise Conflict(
            f"feedback for prediction {prediction.prediction_id} was already recorded; each prediction "
            "takes one true label"
        ) from exc
    return Feedback(**item)


def window_accuracy(
    engine: Engine, *, model_name: str, model_version: str, window: int
) -> tuple[int, float | None]:
    """(labels in the window, accuracy) over the newest `window` feedback rows of one model version."""
    recent = (
        sa.select(Feedback.correct)
        .where(Feedback.model_name == model_name, Feedback.model_version == model_version)
        .order_by(Feedback.id.desc())
        .limit(window)
        .subquery()
    )
    with engine.connect() as conn:
        n, hits = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.cast(recent.c.correct, sa.Integer)))
        ).one()
    return int(n), (float(hits) / n if n else None)


def window_errors(
    engine: Engine, *, model_name: str, model_version: str, window: int
) -> tuple[int, float | None, float | None]:
    """(values in the window, MAE, RMSE) over the newest `window` feedback rows of a regressor's version."""
    query = (
        sa.select(Feedback.predicted_label, Feedback.true_label)
        .where(Feedback.model_name == model_name, Feedback.model_version == model_version)
        .order_by(Feedback.id.desc())
        .limit(window)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    errors = []
    for predicted, true in rows:
        try:
            errors.append(float(predicted) - float(true))
        except (TypeError, ValueError):  # a row labelled before the model was a regressor
            continue
    if not errors:
        return 0, None, None
    n = len(errors)
    return n, sum(abs(e) for e in errors) / n, (sum(e * e for e in errors) / n) ** 0.5


def claim_retrain(engine: Engine, *, model_name: str, model_version: str, accuracy: float) -> bool:
    """Disarm the trigger of this version; True for exactly one caller per crossing (conditional update)."""
    key = (RetrainTrigger.model_name == model_name, RetrainTrigger.model_version == model_version)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(RetrainTrigger),
                [{"model_name": model_name, "model_version": model_version, "armed": True, "crossings": 0}],
            )
    except IntegrityError:
        pass  # already there
    with engine.begin() as conn:
        claimed = conn.execute(
            sa.update(RetrainTrigger)
            .where(*key, RetrainTrigger.armed.is_(True))
            .values(
                armed=False,
                crossings=RetrainTrigger.crossings + 1,
                last_accuracy=accuracy,
                last_triggered_at=datetime.now(UTC),
            )
        ).rowcount
    return claimed == 1


def rearm_retrain(engine: Engine, *, model_name: str, model_version: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(RetrainTrigger)
            .where(
                RetrainTrigger.model_name == model_name,
                RetrainTrigger.model_version == model_version,
                RetrainTrigger.armed.is_(False),
            )
            .values(armed=True)
        )


def set_retrain_job(engine: Engine, *, model_name: str, model_version: str, job_id: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(RetrainTrigger)
            .where(RetrainTrigger.model_name == model_name, RetrainTrigger.model_version == model_version)
            .values(last_job_id=job_id)
        )


def get_retrain(engine: Engine, *, model_name: str, model_version: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(RetrainTrigger).where(
                    RetrainTrigger.model_name == model_name, RetrainTrigger.model_version == model_version
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    out = dict(row)
    if out.get("last_triggered_at") is not None:
        out["last_triggered_at"] = _aware(out["last_triggered_at"])
    return out


def count_rows(engine: Engine, table: type[Base]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def feedback_for(engine: Engine, prediction_ids: Iterable[str]) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Feedback.prediction_id, Feedback.true_label).where(
                Feedback.prediction_id.in_(list(prediction_ids))
            )
        ).all()
    return {r[0]: r[1] for r in rows}
