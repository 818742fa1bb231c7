"""Feedback: the true label of a stored prediction, and the live accuracy of the served model."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool

from serve.contract import SchemaPart, StrictJSONRoute
from serve.deps import READ, WRITE, ModelDep, ServicesDep
from serve.routes.model import _find_prediction
from serve.schemas import Accuracy, FeedbackIn, FeedbackOut

router = APIRouter(prefix="/v1/feedback", tags=["feedback"], route_class=StrictJSONRoute)


@router.post(
    "",
    response_model=FeedbackOut,
    status_code=201,
    dependencies=WRITE,
    responses={
        404: {"description": "Unknown prediction id"},
        409: {"description": "This prediction already has a label"},
        422: {"description": "Not a prediction id, or a label the model does not know"},
    },
)
def post_feedback(body: FeedbackIn, services: ServicesDep) -> dict[str, Any]:
    """Record the true label of a prediction; may trigger a retraining job (see GET /v1/feedback/accuracy)."""
    from serve.errors import Unprocessable

    found = _find_prediction(services, body.prediction_id)
    holder = services.models.holders.get(found.model_name) if services.models is not None else None
    model = (holder or services.holder).current  # the served model that made it (SERVE_MODELS), if any
    served = model is not None and model.version == found.model_version and model.name == found.model_name
    regression = model.task == "regression" if served and model is not None else _is_value(found.label)
    if regression:
        if isinstance(body.label, str) or not math.isfinite(body.label):
            raise Unprocessable("this prediction is a regressor's value: send the true value as a number")
        return services.feedback.record(found, repr(float(body.label)), model, regression=True)
    label = str(body.label)
    if served and model is not None and label not in model.class_keys:
        raise Unprocessable(
            f"label {label!r} is not a class of the model; classes: {', '.join(model.class_keys)}"
        )
    return services.feedback.record(found, label, model)


def _is_value(label: Any) -> bool:
    """A stored prediction of a model no longer served: a regressor's if its answer is not an integer."""
    try:
        return not float(label).is_integer()
    except (TypeError, ValueError):
        return False


@router.get("/accuracy", response_model=Accuracy, dependencies=READ)
async def accuracy(services: ServicesDep, model: ModelDep) -> dict[str, Any]:
    """Live accuracy (classifiers) or MAE/RMSE (regressors) of the served model over the feedback window,
    the threshold, and the retraining state."""
    task = "regression" if model.task == "regression" else "classification"
    return await run_in_threadpool(
        partial(services.feedback.accuracy, task=task), model.name, model.version, model.alias, model.run_id
    )


def label_schema_part(app: FastAPI) -> SchemaPart:
    """`label` of POST /v1/feedback documented as one of the served model's classes (its version's)."""

    def served() -> Any:
        services = getattr(app.state, "services", None)
        holder = getattr(services, "holder", None)
        return holder.current if holder is not None else None

    def apply(schema: dict[str, Any]) -> None:
        model = served()
        body = schema.get("components", {}).get("schemas", {}).get(FeedbackIn.__name__)
        if body is not None and getattr(model, "task", None) == "regression":
            body["properties"]["label"] = {
                "type": "number",
                "description": f"The true value of that row ({model.name} v{model.version} is a regressor)",
            }
            return
        keys = list(getattr(model, "class_keys", None) or [])
        if body is None or not keys:
            return
        numbers = [int(k) for k in keys if k.lstrip("-").isdigit()]
        label = {"type": "string", "enum": keys}
        body["properties"]["label"] = {
            "description": f"The true class of that row: one of {', '.join(keys)} "
            f"({model.name} v{model.version}; any label for predictions of other versions)",
            "anyOf": [label, {"type": "integer", "enum": numbers}] if numbers else [label],
        }

    def version() -> Any:
        model = served()
        return (model.name, model.version) if model is not None else None

    return SchemaPart(apply=apply, version=version)
