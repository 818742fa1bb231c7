"""The retraining trigger's debounce state per model version: one conditional UPDATE claims a crossing."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from serve.store.db import aware
from serve.store.models import RetrainState, RetrainTrigger


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


def get_retrain(engine: Engine, *, model_name: str, model_version: str) -> RetrainState | None:
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
    triggered = row["last_triggered_at"]
    return RetrainState(
        model_name=row["model_name"],
        model_version=row["model_version"],
        armed=row["armed"],
        crossings=row["crossings"],
        last_accuracy=row["last_accuracy"],
        last_job_id=row["last_job_id"],
        last_triggered_at=aware(triggered) if triggered is not None else None,
    )
