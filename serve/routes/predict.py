"""Predictions: POST /v1/predict (the default model) and POST /v1/models/{name}/predict|invocations.

Each answer fits its model (label + probabilities, value, or the pyfunc output) and identifies the model
version; every request is authenticated, counted and written to the prediction log.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter, Path, Request, Response

from serve.deps import Services, get_services, require_read
from serve.errors import ServeError, Unprocessable, invalid_json_message
from serve.invocations import parse_invocation, predictions_json
from serve.model_loader import Answer, Batch, ServingModel
from serve.model_schemas import InvocationsResponse, ModelPredictResponse

if TYPE_CHECKING:  # the store's module imports SQLAlchemy's ORM: the app's lifespan loads it
    from serve.store.models import BatchRecord

router = APIRouter(prefix="/v1", tags=["predictions"])
BYTES_PER_ROW = 4096  # a 30-feature JSON record is ~1 KB; anything far beyond is refused unread
NAME = Path(max_length=200, description="A served model's name (GET /v1/models)")


class TooLarge(ServeError):
    status = 413


def decode(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Unprocessable(invalid_json_message(exc, body)) from exc  # names NaN/Infinity


def check_size(n_rows: int, limit: int) -> None:
    if n_rows == 0:
        raise Unprocessable("the batch is empty: send at least one row")
    if n_rows > limit:
        raise TooLarge(f"{n_rows} rows is more than the limit of {limit} per request; split the batch")


def parse_body(body: bytes, limit: int, model: ServingModel) -> Batch:
    """The request body (records or the compact columns/data form, optional params) for the model's path."""
    data = decode(body)
    if isinstance(data, dict):
        rows = data.get("data") if "columns" in data and "data" in data else data.get("rows")
        if isinstance(rows, list):
            check_size(len(rows), limit)
    return model.parse(data)


def _count(services: Services, model: ServingModel, answer: Answer, n: int) -> None:
    if answer.class_index is None:
        key = ("pred_child", model.name, model.version)
        child = services.extra.get(key)
        if child is None:
            child = services.extra[key] = services.metrics.predictions.labels(
                model.name, model.version, model.task
            )
        child.inc(n)
        return
    key = ("pred_children", model.name, model.version)
    children = services.extra.get(key)
    if children is None:
        children = [
            services.metrics.predictions.labels(model.name, model.version, c) for c in model.class_keys
        ]
        services.extra[key] = children
    idx = answer.class_index
    if len(idx) == 1:
        children[int(idx[0])].inc()
        return
    for i, k in enumerate(np.bincount(idx, minlength=len(children)).tolist()):
        if k:
            children[i].inc(k)


def _log(request: Request, model: ServingModel, batch: Batch, per_row: list[Any] | None, proba: Any) -> str:
    services = get_services(request)
    batch_id = uuid.uuid4().hex
    record: BatchRecord = {
        "id": batch_id,
        "created_at": datetime.now(UTC),
        "model_name": model.name,
        "model_version": model.version,
        "model_alias": model.alias,
        "run_id": model.run_id,
        "trace_id": request.scope.get("state", {}).get("trace_id"),
        "n_rows": batch.n_rows,
        "features": batch.logged,
        "labels": per_row,
        "probabilities": proba,
    }
    services.writer.submit(record)
    services.metrics.batch_rows.observe(batch.n_rows)
    return batch_id


async def _authorised_body(request: Request) -> bytes:
    services = get_services(request)
    require_read(services, request.headers.get("x-api-key"))
    limit = services.settings.batch_limit
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit * BYTES_PER_ROW:
        raise TooLarge(f"the body ({length} bytes) is larger than allowed for {limit} rows")
    return await request.body()


async def _predict(request: Request, model: ServingModel, body: bytes) -> Response:
    services = get_services(request)
    batch = parse_body(body, services.settings.batch_limit, model)
    answer = model.answer(batch)
    batch_id = _log(request, model, batch, answer.per_row(), answer.probabilities)
    _count(services, model, answer, batch.n_rows)
    if answer.probabilities is not None:
        keys = model.class_keys
        probabilities = answer.probabilities.tolist()
        ids = [f"{batch_id}-{i}" for i in range(len(probabilities))]
        # one row's probabilities has one value per class (predict_proba's shape): zip needs no check
        predictions: list[dict[str, Any]] = [
            {"prediction_id": i, "label": label, "probabilities": dict(zip(keys, p))}  # noqa: B905
            for i, label, p in zip(ids, answer.labels or [], probabilities, strict=True)
        ]
    else:
        field = "label" if answer.labels is not None else "value" if answer.values is not None else "output"
        predictions = [{"prediction_id": f"{batch_id}-{i}", field: v} for i, v in enumerate(answer.per_row())]
    body_out = orjson.dumps(
        {"model": model.identity, "task": model.task, "predictions": predictions},
        option=orjson.OPT_SERIALIZE_NUMPY,
        default=str,
    )
    return Response(body_out, media_type="application/json")


# Authentication is checked inline (same function as the READ dependency): on the hot path the dependency
# machinery cost more than the model call. The security requirement and request body are declared by hand.
def _openapi(schema: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        "security": [{"APIKeyHeader": []}],
    }


RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No or an invalid API key"},
    413: {"description": "More rows than SERVE_BATCH_LIMIT"},
    422: {
        "description": "Rows that do not match the model's signature; each problem names the row and feature"
    },
    503: {"description": "No model loaded yet"},
}


@router.post(
    "/predict",
    response_model=ModelPredictResponse,
    openapi_extra=_openapi("PredictRequest"),
    responses=RESPONSES,
)
async def predict(request: Request) -> Response:
    """Predict one or many rows with the default model: label and class probabilities for classifiers,
    the value for regressors, the model's output otherwise."""
    body = await _authorised_body(request)
    model = get_services(request).holder.get()  # one reference for the whole request
    return await _predict(request, model, body)


@router.post(
    "/models/{name}/predict",
    response_model=ModelPredictResponse,
    openapi_extra=_openapi("ModelPredictRequest"),
    responses={**RESPONSES, 404: {"description": "No served model has this name"}},
)
async def predict_with(request: Request, name: str = NAME) -> Response:
    """Predict one or many rows with the served model `name` (see GET /v1/models)."""
    body = await _authorised_body(request)
    model = get_services(request).models.get(name)
    return await _predict(request, model, body)


@router.post(
    "/models/{name}/invocations",
    response_model=InvocationsResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/InvocationsRequest"}  # serve/signature.py
                }
            },
        },
        "security": [{"APIKeyHeader": []}],
    },
    responses={**RESPONSES, 404: {"description": "No served model has this name"}},
)
async def invocations(request: Request, name: str = NAME) -> Response:
    """MLflow's scoring protocol (as `mlflow models serve`): {"predictions": <the model's predict output>}."""
    body = await _authorised_body(request)
    services = get_services(request)
    model = services.models.get(name)
    batch = parse_invocation(decode(body), model, services.settings.batch_limit, check_size)
    raw = model.invoke(batch)
    payload, per_row = predictions_json(raw, batch.n_rows)
    _log(request, model, batch, per_row, None)
    if model.task == "classification" and per_row is not None:  # the outputs are the labels
        for label, n in Counter(map(str, per_row)).items():
            services.metrics.predictions.labels(model.name, model.version, label).inc(n)
    else:
        services.metrics.predictions.labels(model.name, model.version, model.task).inc(batch.n_rows)
    return Response(payload, media_type="application/json")
