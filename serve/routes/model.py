"""The served model, its lineage, and the lineage of one stored prediction (executed notebooks: pages.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool

from serve.deps import ModelDep, ServicesDep, SignLinksDep
from serve.errors import PredictionNotFound
from serve.feedback import typed_label
from serve.model_schemas import ServedModelInfo, ServedModelList
from serve.schemas import PREDICTION_ID_PATTERN, PredictionLineage, RecentPredictions
from serve.store import feedback, predictions

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", response_model=ServedModelInfo, responses={503: {"description": "No model loaded yet"}})
async def model_info(model: ModelDep, sign: SignLinksDep) -> dict[str, Any]:
    """The default model version: task, classes, input features (MLflow types), the serving path, lineage."""
    return sign(model.describe())


@router.get(
    "/models", response_model=ServedModelList, responses={401: {"description": "No or an invalid API key"}}
)
async def served_models(services: ServicesDep) -> dict[str, Any]:
    """Every served model (SERVE_MODELS): its alias, the version loaded, its path and task."""
    out = []
    for holder in services.models:
        m = holder.current
        out.append(
            {
                "name": holder.name,
                "alias": holder.alias,
                "default": holder.name == services.models.default_name,
                "loaded": m is not None,
                "version": m.version if m else None,
                "path": m.path if m else None,
                "task": m.task if m else None,
                "problem": None if m else (holder.last_error or "loading"),
            }
        )
    return {"models": out}


@router.get(
    "/models/{name}",
    response_model=ServedModelInfo,
    responses={404: {"description": "No served model has this name"}, 503: {"description": "Not loaded yet"}},
)
async def served_model(
    services: ServicesDep, sign: SignLinksDep, name: str = Path(max_length=200)
) -> dict[str, Any]:
    """One served model version, as GET /v1/model shows the default one."""
    return sign(services.models.get(name).describe())


@router.get("/predictions", response_model=RecentPredictions)
def recent_predictions(
    services: ServicesDep,
    model: ModelDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many rows, newest first")] = 1000,
) -> dict[str, Any]:
    """Rows the served model version predicted, newest first (features in its signature order, labels):
    what the monitoring dashboard compares with the training data."""
    rows, labels, oldest, newest = predictions.recent_rows(
        services.engine, model_name=model.name, model_version=model.version, limit=limit
    )
    return {
        "model": model.identity,
        "count": len(rows),
        "columns": list(model.features),
        "rows": rows,
        "labels": labels,
        "oldest": oldest,
        "newest": newest,
    }


@router.get("/predictions/{prediction_id}/lineage", response_model=PredictionLineage)
async def prediction_lineage(
    services: ServicesDep, sign: SignLinksDep, prediction_id: str = Path(pattern=PREDICTION_ID_PATTERN)
) -> dict[str, Any]:
    """One stored prediction (features, answer, true label if known) and the lineage of its model version."""
    found = await run_in_threadpool(_find_prediction, services, prediction_id)
    lineage = await run_in_threadpool(
        services.lineage.for_version, found.model_name, found.model_version, found.model_alias
    )
    holder = services.models.holders.get(found.model_name) if services.models is not None else None
    model = holder.current if holder is not None else None  # the model that made it, if still served
    features = model.features if model and model.version == found.model_version else None
    if features is None or len(features) != len(found.features):
        features = tuple(f["name"] for f in lineage_features(services, found)) or tuple(
            f"f{i}" for i in range(len(found.features))
        )
    labels = await run_in_threadpool(feedback.feedback_for, services.engine, [prediction_id])
    probabilities = None
    if found.probabilities is not None:
        classes = (model.class_keys if model else None) or [str(i) for i in range(len(found.probabilities))]
        probabilities = dict(zip(classes, found.probabilities, strict=False))
    return {
        "prediction": {
            "prediction_id": prediction_id,
            "created_at": found.created_at,
            "features": dict(zip(features, found.features, strict=False)),
            "label": found.label,
            "probabilities": probabilities,
            "trace_id": found.trace_id,
            "true_label": typed_label(
                labels.get(prediction_id),
                found.label,
                model.class_values if model and model.version == found.model_version else None,
            ),
        },
        "lineage": sign(lineage),
    }


def lineage_features(services: ServicesDep, found: predictions.StoredPrediction) -> list[dict[str, Any]]:
    features: list[dict[str, Any]] = services.extra.get(
        ("features", found.model_name, found.model_version), []
    )
    return features


def _find_prediction(services: ServicesDep, prediction_id: str) -> predictions.StoredPrediction:
    """The stored prediction; waits for the background writer once if it is not in the database yet."""
    found = predictions.get_prediction(services.engine, prediction_id)
    if found is None and services.writer.pending:
        services.writer.flush(timeout=5)
        found = predictions.get_prediction(services.engine, prediction_id)
    if found is None:
        raise PredictionNotFound(f"prediction {prediction_id} not found")
    return found
