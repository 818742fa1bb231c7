"""Read-only history for the monitoring dashboard: live accuracy and traffic over time, champion history.

`GET /v1/monitoring/timeline`: the live metric (accuracy, or MAE for a regressor) after each feedback label,
computed over the same window as GET /v1/feedback/accuracy, prediction volume per time bucket, and
retraining events (the feedback trigger's crossings and the retraining jobs submitted).
`GET /v1/monitoring/versions`: the registered versions of the served model with their promotion decision
and metrics (tags written by pipelines/promotion.py, the training run's metrics), the champion marked.
Nothing here writes; the queries are bounded (`hours`, at most MAX_FEEDBACK labels and 200 versions).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from serve.deps import ModelDep, ServicesDep
from serve.schemas import ModelIdentity
from serve.store.models import Feedback, PredictionBatch, RetrainTrigger

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/monitoring", tags=["monitoring"])
MAX_FEEDBACK = 20_000
MAX_POINTS = 400
BUCKETS = (60, 300, 900, 3600, 6 * 3600, 86400)  # seconds; the smallest giving at most MAX_BUCKETS
MAX_BUCKETS = 60


class MetricPoint(BaseModel):
    at: datetime
    version: str
    labelled: int = Field(description="Labels in the window at that moment")
    value: float = Field(description="Accuracy (classifier) or mean absolute error (regressor) in the window")


class VolumeBucket(BaseModel):
    start: datetime
    rows: int
    requests: int
    by_version: dict[str, int]


class RetrainEvent(BaseModel):
    at: datetime
    version: str | None = None
    kind: str = Field(description="'trigger' (live metric crossed the threshold) or 'job' (retraining job)")
    job_id: str | None = None
    detail: str = ""


class Timeline(BaseModel):
    model: ModelIdentity
    task: str
    metric: str = Field(description="accuracy or mae")
    threshold: float | None = Field(description="The retraining threshold of the metric (accuracy only)")
    window: int
    since: datetime
    points: list[MetricPoint]
    bucket_seconds: int
    volume: list[VolumeBucket]
    retrains: list[RetrainEvent]


class VersionInfo(BaseModel):
    version: str
    registered_at: datetime | None
    aliases: list[str]
    champion: bool
    decision: str | None = Field(description="promoted or kept (pipelines/promotion.py), None if unknown")
    reason: str | None = None
    promotion_metric: str | None = None
    metrics: dict[str, float] = Field(description="holdout_* tags and the training run's metrics")
    run_id: str | None = None


class Versions(BaseModel):
    model: ModelIdentity
    versions: list[VersionInfo] = Field(description="Oldest first")


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def metric_points(rows: list[Any], window: int, regression: bool) -> list[dict[str, Any]]:
    """The live metric of each version after each label (rows: created_at, version, correct, pred, true)."""
    recent: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=window))
    points = []
    for created_at, version, correct, predicted, true in rows:
        if regression:
            p, t = _number(predicted), _number(true)
            if p is None or t is None:
                continue
            recent[version].append(abs(p - t))
        else:
            recent[version].append(1.0 if correct else 0.0)
        q = recent[version]
        points.append(
            {"at": _aware(created_at), "version": version, "labelled": len(q), "value": sum(q) / len(q)}
        )
    if len(points) > MAX_POINTS:  # evenly thinned, the newest point kept
        step = len(points) / MAX_POINTS
        points = [points[int(i * step)] for i in range(MAX_POINTS - 1)] + [points[-1]]
    return points


def volume_buckets(rows: list[Any], since: datetime, until: datetime) -> tuple[int, list[dict[str, Any]]]:
    span = max((until - since).total_seconds(), 1.0)
    if rows:
        span = max((until - _aware(rows[0][0])).total_seconds(), 60.0)
    size = next((b for b in BUCKETS if span / b <= MAX_BUCKETS), BUCKETS[-1])
    buckets: dict[int, dict[str, Any]] = {}
    for created_at, n_rows, version in rows:
        key = int(_aware(created_at).timestamp() // size)
        b = buckets.setdefault(key, {"rows": 0, "requests": 0, "by_version": defaultdict(int)})
        b["rows"] += n_rows
        b["requests"] += 1
        b["by_version"][version] += n_rows
    return size, [
        {"start": datetime.fromtimestamp(k * size, UTC), **v, "by_version": dict(v["by_version"])}
        for k, v in sorted(buckets.items())
    ]


def _timeline(services: Any, model: Any, hours: float) -> dict[str, Any]:
    settings = services.settings
    task = getattr(model, "task", None) or "classification"
    regression = task == "regression"
    now = datetime.now(UTC)
    since = now - timedelta(hours=hours)
    with services.engine.connect() as conn:
        feedback = conn.execute(
            sa.select(
                Feedback.created_at,
                Feedback.model_version,
                Feedback.correct,
                Feedback.predicted_label,
                Feedback.true_label,
            )
            .where(Feedback.model_name == model.name, Feedback.created_at >= since)
            .order_by(Feedback.id.desc())
            .limit(MAX_FEEDBACK)
        ).all()[::-1]
        batches = conn.execute(
            sa.select(PredictionBatch.created_at, PredictionBatch.n_rows, PredictionBatch.model_version)
            .where(PredictionBatch.model_name == model.name, PredictionBatch.created_at >= since)
            .order_by(PredictionBatch.created_at)
        ).all()
        triggers = (
            conn.execute(sa.select(RetrainTrigger).where(RetrainTrigger.model_name == model.name))
            .scalars()
            .all()
        )
    retrains = [
        {
            "at": _aware(t.last_triggered_at),
            "version": t.model_version,
            "kind": "trigger",
            "job_id": t.last_job_id,
            "detail": f"live accuracy {t.last_accuracy:.3f} below the threshold (crossing {t.crossings})"
            if t.last_accuracy is not None
            else "",
        }
        for t in triggers
        if t.last_triggered_at is not None
    ]
    retrains += _retrain_jobs(settings.retrain_notebook, since)
    size, volume = volume_buckets(batches, since, now)
    return {
        "model": model.identity,
        "task": task,
        "metric": "mae" if regression else "accuracy",
        "threshold": settings.feedback_mae_threshold if regression else settings.feedback_threshold,
        "window": settings.feedback_window,
        "since": since,
        "points": metric_points(feedback, settings.feedback_window, regression),
        "bucket_seconds": size,
        "volume": volume,
        "retrains": sorted(retrains, key=lambda e: e["at"]),
    }


def _retrain_jobs(notebook: str, since: datetime) -> list[dict[str, Any]]:
    """Retraining jobs submitted by the feedback trigger or Alertmanager (the job store may be elsewhere)."""
    from jobrunner import jobs

    try:
        page = jobs.list_jobs(notebook=notebook, limit=200)
    except Exception as exc:  # noqa: BLE001 - the timeline stays useful without the job store
        log.warning("monitoring: retraining jobs cannot be listed: %s", exc)
        return []
    events = []
    for job in page.items:
        submitter = job.submitter or ""
        if job.created_at >= since and submitter.startswith(("serve:", "alertmanager:")):
            events.append(
                {
                    "at": job.created_at,
                    "kind": "job",
                    "job_id": job.id,
                    "detail": f"{submitter} - {job.state.value}",
                }
            )
    return events


def _versions(services: Any, model: Any) -> dict[str, Any]:
    client = services.lineage.client
    found = client.search_model_versions(f"name='{model.name}'", max_results=200)
    champion = None
    try:
        champion = str(client.get_model_version_by_alias(model.name, model.alias).version)
    except Exception:  # noqa: BLE001 - no alias: no champion marked
        champion = None
    out = []
    for mv in sorted(found, key=lambda v: int(v.version)):
        tags = dict(mv.tags or {})
        metrics = {k: v for k, v in ((k, _number(v)) for k, v in tags.items()) if k.startswith("holdout_")}
        run_id = mv.run_id or tags.get("source_run_id")
        metrics.update(_run_metrics(services, run_id))
        out.append(
            {
                "version": str(mv.version),
                "registered_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
                if mv.creation_timestamp
                else None,
                "aliases": list(getattr(mv, "aliases", []) or []),
                "champion": str(mv.version) == champion,
                "decision": tags.get("promotion.decision"),
                "reason": tags.get("promotion.reason"),
                "promotion_metric": tags.get("promotion.metric"),
                "metrics": {k: v for k, v in metrics.items() if v is not None},
                "run_id": run_id,
            }
        )
    return {"model": model.identity, "versions": out}


def _run_metrics(services: Any, run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    key = ("monitoring-run-metrics", run_id)  # a finished run's metrics do not change
    if key not in services.extra:
        try:
            services.extra[key] = dict(services.lineage.client.get_run(run_id).data.metrics)
        except Exception:  # noqa: BLE001 - a deleted run: the version is still listed
            services.extra[key] = {}
    metrics: dict[str, float] = services.extra[key]  # the per-app cache holds Any
    return metrics


@router.get("/timeline", response_model=Timeline, responses={503: {"description": "No model loaded yet"}})
async def timeline(
    services: ServicesDep,
    model: ModelDep,
    hours: Annotated[float, Query(gt=0, le=24 * 90, description="How far back, in hours")] = 24 * 7,
) -> dict[str, Any]:
    """Live accuracy (or MAE) after each label, prediction volume per bucket and retraining events."""
    return await run_in_threadpool(_timeline, services, model, hours)


@router.get("/versions", response_model=Versions, responses={503: {"description": "No model loaded yet"}})
async def versions(services: ServicesDep, model: ModelDep) -> dict[str, Any]:
    """The registered versions of the served model (oldest first): promotion decision, metrics, champion."""
    return await run_in_threadpool(_versions, services, model)
