"""Feedback: the true label of a stored prediction, and the live accuracy of the served model."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from serve.deps import READ, WRITE, ModelDep, ServicesDep
from serve.routes.model import _find_prediction
from serve.schemas import Accuracy, FeedbackIn, FeedbackOut

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


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
def post_feedback(body: FeedbackIn, services: ServicesDep) -> dict:
    """Record the true label of a prediction; may trigger one retraining job (see GET /v1/feedback/accuracy)."""
    from serve.errors import Unprocessable

    found = _find_prediction(services, body.prediction_id)
    label = str(body.label)
    model = services.holder.current
    if model is not None and model.version == found.model_version and label not in model.class_keys:
        raise Unprocessable(
            f"label {label!r} is not a class of the model; classes: {', '.join(model.class_keys)}"
        )
    return services.feedback.record(found, label, model)


@router.get("/accuracy", response_model=Accuracy, dependencies=READ)
async def accuracy(services: ServicesDep, model: ModelDep) -> dict:
    """Live accuracy of the served model over the feedback window, the threshold, and the retraining state."""
    return await run_in_threadpool(
        services.feedback.accuracy, model.name, model.version, model.alias, model.run_id
    )
