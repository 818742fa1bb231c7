"""The prediction log: one row per request ("batch"), read back by prediction id or as the newest rows.

A batch holds the feature rows (JSON values of their own type), the per-row answers (labels, values or
outputs) and probabilities (classifiers only; else null) as JSON arrays. A prediction id is
`<batch id>-<row index>`, so storing a 1000-row request is one insert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from serve.errors import PredictionNotFound, Unprocessable
from serve.store.db import aware
from serve.store.models import BatchRecord, PredictionBatch


def insert_batches(engine: Engine, rows: Sequence[BatchRecord]) -> None:
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
        created_at=aware(row["created_at"]),
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
            newest = newest or aware(created_at)
            oldest = aware(created_at)
            if len(features) >= limit:
                break
    return features, labels, oldest, newest
