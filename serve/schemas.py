"""Request and response bodies of the API (pydantic), separate from the database tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from jobrunner.store.schemas import JobSpec, NotebookPath

# -- ids and paths: the formats the API checks, stated in the schema -----------------------------------
JOB_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"  # str(uuid4())
PREDICTION_ID_PATTERN = r"^[0-9a-f]{32}-[0-9]{1,9}$"  # <request id>-<row index>, from POST /v1/predict
RUN_ID_PATTERN = r"^[0-9a-f]{32}$"  # an MLflow run id
# A project-relative path: segments without control characters or backslashes that do not start with
# "." (no "..", no hidden files, no "./" aliases of another path), no leading or doubled "/".
_SEGMENT = r"[^/\\\x00-\x1f\x7f.][^/\\\x00-\x1f\x7f]*"
NOTEBOOK_PATH_PATTERN = rf"^{_SEGMENT}(/{_SEGMENT})*$"
NOTEBOOK_PATH_HELP = (
    "A notebook path relative to the project, e.g. notebooks/03_train.ipynb (segments may not start "
    "with '.', no control characters or backslashes)"
)


class ModelIdentity(BaseModel):
    name: str
    version: str
    alias: str
    run_id: str | None = None


# -- predictions ---------------------------------------------------------------------------------------
class PredictRequest(BaseModel):
    """One or many rows as JSON records; the feature names and types are the served model's (/v1/model)."""

    rows: list[dict[str, float]] = Field(min_length=1)


class Prediction(BaseModel):
    prediction_id: str = Field(
        description="Use it for feedback and lineage: POST /v1/feedback, GET /v1/predictions/{id}/lineage"
    )
    label: Any = Field(description="The predicted class")
    probabilities: dict[str, float] = Field(description="Probability per class")


class PredictResponse(BaseModel):
    model: ModelIdentity
    predictions: list[Prediction]


# -- model and lineage ---------------------------------------------------------------------------------
class Feature(BaseModel):
    name: str
    type: str


class DataHash(BaseModel):
    path: str
    md5: str
    direction: Literal["input", "output"]
    resolved: bool = Field(description="The hash was found in the workspace or the DVC cache of this project")
    location: str | None = Field(default=None, description="Where the data with this hash was found")


class NotebookLink(BaseModel):
    path: str | None = Field(description="The notebook that produced the run, relative to the project")
    html_url: str | None = Field(description="The executed notebook rendered as HTML (served by this API)")
    ipynb_artifact: str | None = None


class RunLineage(BaseModel):
    run_id: str
    experiment_id: str | None = None
    run_name: str | None = None
    status: str | None = None
    stage: str | None = None
    started_at: datetime | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    dvc_lock_md5: str | None = None
    parameters: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    mlflow_url: str | None = None
    notebook: NotebookLink
    data: list[DataHash] = []


class Lineage(BaseModel):
    model: ModelIdentity
    model_uri: str
    registered_at: datetime | None = None
    tags: dict[str, str] = {}
    run: RunLineage | None = Field(description="The MLflow run (a notebook execution) that trained the model")


class ModelInfo(BaseModel):
    model: ModelIdentity
    loaded_at: datetime
    features: list[Feature]
    classes: list[Any]
    lineage: Lineage


class StoredPrediction(BaseModel):
    prediction_id: str
    created_at: datetime
    features: dict[str, Any] = Field(description="Feature name -> value, each a JSON value of its own type")
    label: Any
    probabilities: dict[str, float] | None = None
    trace_id: str | None = None
    true_label: Any = Field(
        default=None,
        description="The feedback's true label, in the type of `label`; null while none was given",
    )


class PredictionLineage(BaseModel):
    prediction: StoredPrediction
    lineage: Lineage


# -- feedback -----------------------------------------------------------------------------------------
class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no "5" or true for 5

    prediction_id: str = Field(
        pattern=PREDICTION_ID_PATTERN, description="A prediction id returned by POST /v1/predict"
    )
    label: str | int | float = Field(
        description="The true class of that row (one of the served model's classes), or for a regressor "
        "the true value (a number)",
    )


class RetrainState(BaseModel):
    armed: bool
    crossings: int
    last_job_id: str | None = None
    last_triggered_at: datetime | None = None


class Accuracy(BaseModel):
    model: ModelIdentity
    task: str = Field(default="classification", description="classification or regression")
    window: int
    labelled: int
    accuracy: float | None = Field(description="Share of correct labels (classifiers; null for regressors)")
    mae: float | None = Field(default=None, description="Mean absolute error of the values (regressors)")
    rmse: float | None = Field(default=None, description="Root mean squared error of the values (regressors)")
    threshold: float | None = Field(
        description="Retraining threshold: accuracy below it (classifiers), MAE above it (regressors; "
        "null when SERVE_FEEDBACK_MAE_THRESHOLD is unset)"
    )
    min_samples: int
    below_threshold: bool = Field(description="The live metric is worse than the threshold")
    retrain: RetrainState | None = None


class RecentPredictions(BaseModel):
    """Predicted rows of the served model version, newest first, in the compact columns/rows form."""

    model: ModelIdentity
    count: int
    columns: list[str]
    rows: list[list[Any]] = Field(description="Values in `columns` order, each a JSON value of its own type")
    labels: list[Any]
    oldest: datetime | None = None
    newest: datetime | None = None


class FeedbackOut(BaseModel):
    prediction_id: str
    predicted_label: Any = Field(description="The label the model predicted, as /v1/predict returned it")
    true_label: Any = Field(description="The label given, in the same JSON type as the predicted one")
    correct: bool
    accuracy: Accuracy


# -- health --------------------------------------------------------------------------------------------
class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not ready"]
    model: ModelIdentity | None = None
    database: bool
    problems: list[str] = []


# -- jobs -----------------------------------------------------------------------------------------------
# http(s), a host name or IPv4 address (no user:password@), an optional port 0-65535, then no blanks or
# control characters
NOTIFY_URL_PATTERN = (
    r"^https?://[A-Za-z0-9._~%!$&'()*+,;=-]+"
    r"(:([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?"
    r"([/?#][^\s\x00-\x1f\x7f]*)?$"
)


class NotifyIn(BaseModel):
    """A webhook POSTed a JSON body (job, state, notebook, parameters, error, links) when a job ends."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=NOTIFY_URL_PATTERN,
        description="http(s) URL without credentials (bodies are signed with JOBRUNNER_NOTIFY_SECRET)",
    )
    on: Literal["failure", "success", "both"] = Field(
        default="failure", description="Which endings to tell (a cancel counts as a failure)"
    )


# jobrunner's JobSpec (its limits: jobrunner/limits.py) as the API takes it: JSON types as documented, no
# unknown fields, a project-relative notebook path, and the API's webhook and cache switch. (A comment, not
# a docstring: the OpenAPI description is the per-notebook one of serve/routes/jobs.py.)
class JobCreateIn(JobSpec):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as documented: no "5" or true for 5

    notebook: NotebookPath = Field(pattern=NOTEBOOK_PATH_PATTERN, description=NOTEBOOK_PATH_HELP)
    notify: NotifyIn | None = Field(default=None, description="A webhook told when the job ends")
    cache: bool = Field(
        default=True,
        description="false: execute even if an identical earlier job (same code, parameters, input data and "
        "environment) could be reused",
    )


class NotebookParameter(BaseModel):
    name: str
    type: str
    default: Any = None
    optional: bool = False
    help: str = ""
    output: bool = Field(default=False, description="A path the notebook writes (`# output:` in its cell)")


class NotebookInfo(BaseModel):
    notebook: str
    has_parameters_cell: bool
    parameters: list[NotebookParameter]


class NotebookProblem(BaseModel):
    notebook: str
    problem: str


class NotebookList(BaseModel):
    notebooks: list[NotebookInfo]
    invalid: list[NotebookProblem] = []
