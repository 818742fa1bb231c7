"""Recorded runs over REST: verify one on a worker, compare two.

`POST /v1/runs/{run_id}/verify` queues a verification job (jobrunner/worker/verify.py) and answers it (202);
GET /v1/jobs/{id} shows its `verification` once a worker has re-executed the run. `GET
/v1/runs/{a}/diff/{b}` is `jobrunner diff --json`, `/html` its page. The runs are read from jobrunner's
MLflow tracking server (MLFLOW_TRACKING_URI of the job side, where jobs record their runs). An unknown run
is a 404, a malformed id a 422, a run jobrunner did not record a 409.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, Field

from jobrunner.store.schemas import JobRead, TimeoutSeconds
from serve.contract import StrictJSONRoute
from serve.deps import READ, WRITE
from serve.links import NotebookHTML
from serve.schemas import RUN_ID_PATTERN

router = APIRouter(prefix="/v1", tags=["runs"], route_class=StrictJSONRoute)
RunId = Annotated[str, Path(pattern=RUN_ID_PATTERN, description="An MLflow run id (32 hex digits)")]
NO_RUN: dict[int | str, dict[str, Any]] = {404: {"description": "No MLflow run has this id"}}


class VerifyIn(BaseModel):
    rtol: float = Field(
        default=1e-6,
        ge=0,
        le=1,
        description="Relative tolerance for metrics and for "
        "numbers in text outputs (1e-6: 6 significant digits)",
    )
    timeout_seconds: TimeoutSeconds | None = Field(default=None, description="Time limit of the re-execution")


class RunDiffRead(BaseModel):
    """Two recorded runs compared (`jobrunner diff --json`)."""

    identical: bool
    changes: list[dict[str, Any]] = Field(
        description="Every difference, most relevant first: "
        "{kind, name, a, b}; kind is outcome, notebook, metric, parameter, "
        "data, code, text_output, image, environment or git"
    )
    a: dict[str, Any]
    b: dict[str, Any]
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    timing: dict[str, Any]
    data: dict[str, Any]
    code_compared: bool
    code_diff: list[str]
    text_outputs: list[dict[str, Any]]
    images: list[dict[str, Any]]
    environment: dict[str, Any]


def _client() -> Any:
    from mlflow.tracking import MlflowClient

    from jobrunner.config import get_settings

    return MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri or "")


@router.post(
    "/runs/{run_id}/verify",
    response_model=JobRead,
    status_code=202,
    dependencies=WRITE,
    responses={
        **NO_RUN,
        409: {"description": "The run was not recorded by jobrunner: nothing to re-execute"},
    },
)
def verify_run(run_id: RunId, body: Annotated[VerifyIn | None, Body()] = None) -> Any:
    """Re-execute a recorded run on a worker and check that it reproduces (a verification job)."""
    from jobrunner.worker.verify import submit_verification

    body = body or VerifyIn()
    return submit_verification(
        run_id, rtol=body.rtol, timeout=body.timeout_seconds, submitter="serve-api", client=_client()
    )


@router.get("/runs/{run_a}/diff/{run_b}", response_model=RunDiffRead, dependencies=READ, responses=NO_RUN)
def diff_runs(run_a: RunId, run_b: RunId) -> Any:
    """What differs between two recorded runs, most relevant first."""
    from jobrunner.provenance.diff import diff_runs as diff

    return diff(run_a, run_b, _client()).as_dict()


@router.get(
    "/runs/{run_a}/diff/{run_b}/html",
    response_class=NotebookHTML,
    dependencies=READ,
    responses={200: {"content": {"text/html": {}}}, **NO_RUN},
)
def diff_page(run_a: RunId, run_b: RunId) -> NotebookHTML:
    """The diff of two recorded runs as a page (what the job board shows)."""
    from jobrunner.provenance.diff import diff_runs as diff
    from jobrunner.provenance.diff_html import render_html

    return NotebookHTML(render_html(diff(run_a, run_b, _client())))
