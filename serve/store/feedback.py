"""Feedback labels: the true label of a stored prediction, and the live metric over the newest labels."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from serve.errors import Conflict
from serve.store.models import Feedback
from serve.store.predictions import StoredPrediction


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


def feedback_for(engine: Engine, prediction_ids: Iterable[str]) -> dict[str, str]:
    """The true labels recorded for these predictions, by prediction id (unlabelled ones are absent)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Feedback.prediction_id, Feedback.true_label).where(
                Feedback.prediction_id.in_(list(prediction_ids))
            )
        ).all()
    return {r[0]: r[1] for r in rows}
