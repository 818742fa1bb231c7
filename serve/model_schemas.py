"""Response bodies of the model-serving routes (predict, invocations, the served models).

The request bodies are generated per served version from the MLflow signature (serve/signature.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve.schemas import Lineage, ModelIdentity


class ModelPrediction(BaseModel):
    """One row's answer: what fits the model (classifier, regressor, anything else)."""

    prediction_id: str = Field(
        description="Use it for feedback and lineage: POST /v1/feedback, GET /v1/predictions/{id}/lineage"
    )
    label: Any = Field(default=None, description="Classifiers: the predicted class (JSON type of the class)")
    probabilities: dict[str, float] | None = Field(
        default=None, description="Classifiers with probabilities: probability per class"
    )
    value: float | None = Field(default=None, description="Regressors: the predicted value")
    output: Any = Field(default=None, description="Other models: the model's output for this row, as JSON")


class ModelPredictResponse(BaseModel):
    model: ModelIdentity
    task: Literal["classification", "regression", "other"]
    predictions: list[ModelPrediction]


class ModelFeature(BaseModel):
    name: str
    type: str = Field(description="MLflow column type: double, float, long, integer, boolean, string, ...")
    optional: bool = False
    kind: str | None = Field(default=None, description="numeric, boolean, categorical, datetime or binary")
    categories: list[Any] | None = Field(default=None, description="Categorical: the training categories")


class ModelParam(BaseModel):
    name: str
    type: str
    default: Any = None
    shape: list[int] | None = None


class ServedModelInfo(BaseModel):
    model: ModelIdentity
    loaded_at: datetime
    path: Literal["sklearn", "pyfunc"] = Field(
        description="sklearn: the estimator called directly on a numpy array; pyfunc: through mlflow.pyfunc"
    )
    column_plan: bool = Field(
        default=False,
        description="pyfunc path, scikit-learn Pipeline with a ColumnTransformer: probabilities are computed "
        "column by column on numpy (verified against the pipeline at load time)",
    )
    flavor: str = Field(description="The pyfunc loader module, e.g. mlflow.sklearn or mlflow.pyfunc.model")
    task: Literal["classification", "regression", "other"]
    classes: list[Any] | None = None
    features: list[ModelFeature]
    params: list[ModelParam] = []
    lineage: Lineage | dict[str, Any] = {}


class ServedModelEntry(BaseModel):
    name: str
    alias: str
    default: bool = Field(description="POST /v1/predict serves this model")
    loaded: bool
    version: str | None = None
    path: Literal["sklearn", "pyfunc"] | None = None
    task: Literal["classification", "regression", "other"] | None = None
    problem: str | None = Field(default=None, description="Why it is not loaded (yet)")


class ServedModelList(BaseModel):
    models: list[ServedModelEntry]


class InvocationsResponse(BaseModel):
    """MLflow's scoring protocol answer, as `mlflow models serve` gives it."""

    predictions: Any
