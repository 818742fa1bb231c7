"""POST /v1/predict: the served model on one or many rows; each answer identifies the model version."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request, Response

from serve.deps import require_read
from serve.errors import ServeError, Unprocessable
from serve.model_loader import ServingModel
from serve.schemas import PredictResponse

router = APIRouter(prefix="/v1", tags=["predictions"])
BYTES_PER_ROW = 4096  # a 30-feature JSON record is ~1 KB; anything far beyond is refused unread


class TooLarge(ServeError):
    status = 413


def parse_body(body: bytes, limit: int, model: ServingModel) -> np.ndarray:
    """The request body (records or the compact columns/data form) as a matrix in signature order."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(f"the body is not valid JSON: {exc}") from exc
    split = isinstance(data, dict) and "columns" in data and "data" in data
    rows = data.get("data" if split else "rows") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise Unprocessable(
            'the body must be {"rows": [{"<feature>": <number>, ...}, ...]} '
            'or {"columns": ["<feature>", ...], "data": [[<number>, ...], ...]}'
        )
    if not rows:
        raise Unprocessable("the batch is empty: send at least one row")
    if len(rows) > limit:
        raise TooLarge(f"{len(rows)} rows is more than the limit of {limit} per request; split the batch")
    return model.split_to_matrix(data["columns"], rows) if split else model.to_matrix(rows)


def _count_classes(services: Any, model: ServingModel, idx: np.ndarray) -> None:
    key = ("pred_children", model.name, model.version)
    children = services.extra.get(key)
    if children is None:
        children = [
            services.metrics.predictions.labels(model.name, model.version, c) for c in model.class_keys
        ]
        services.extra[key] = children
    if len(idx) == 1:
        children[int(idx[0])].inc()
        return
    for i, n in enumerate(np.bincount(idx, minlength=len(children)).tolist()):
        if n:
            children[i].inc(n)


@router.post(
    "/predict",
    response_model=PredictResponse,
    # Authentication is checked inline (same function as the READ dependency): on the hot path the
    # dependency machinery cost more than the model call. The security requirement is declared by hand.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
        },
        "security": [{"APIKeyHeader": []}],
    },
    responses={
        413: {"description": "More rows than SERVE_BATCH_LIMIT"},
        422: {"description": "Rows that do not match the model's features; each problem names the feature"},
        503: {"description": "No model loaded yet"},
    },
)
async def predict(request: Request) -> Response:
    """Predict the class and class probabilities of one or many rows with the served model."""
    services = request.app.state.services
    require_read(services, request.headers.get("x-api-key"))
    model = services.holder.get()  # one reference for the whole request: a swap cannot change it
    limit = services.settings.batch_limit
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit * BYTES_PER_ROW:
        raise TooLarge(f"the body ({length} bytes) is larger than allowed for {limit} rows")
    X = parse_body(await request.body(), limit, model)
    idx, proba = model.predict(X)
    batch_id = uuid.uuid4().hex
    labels = [model.class_values[i] for i in idx.tolist()]
    keys = model.class_keys
    predictions = [
        {"prediction_id": f"{batch_id}-{i}", "label": label, "probabilities": dict(zip(keys, p, strict=True))}
        for i, (label, p) in enumerate(zip(labels, proba.tolist(), strict=True))
    ]
    services.writer.submit(
        {
            "id": batch_id,
            "created_at": datetime.now(UTC),
            "model_name": model.name,
            "model_version": model.version,
            "model_alias": model.alias,
            "run_id": model.run_id,
            "trace_id": request.scope.get("state", {}).get("trace_id"),
            "n_rows": len(X),
            "features": X,
            "labels": labels,
            "probabilities": proba,
        }
    )
    _count_classes(services, model, idx)
    services.metrics.batch_rows.observe(len(X))
    body = orjson.dumps({"model": model.identity, "predictions": predictions})
    return Response(body, media_type="application/json")
