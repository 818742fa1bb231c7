"""Verification as a job: `jobrunner verify --queue RUN`, POST /v1/runs/{id}/verify, run by any worker.

A verification job is a job row with `kind = "verify"`, `verifies` = the MLflow run id and `verification`
= its request (`{"rtol": ...}`); its `notebook` is the run's notebook, its parameters are empty (the
recorded ones are used). It is never served from the run cache: re-executing is the point. A worker that
takes it calls `verify.verify_run` (the recorded code, parameters and data, fetched by DVC md5 when its
checkout lacks them) with the job's cancel token, time limit, progress and live output, stores the executed
notebook like any job's, and writes the result into `verification` (reproduced, differences, the new
MLflow run, metrics, outputs, cells). The job SUCCEEDED when the verification ran, whatever it found;
it FAILED when the run cannot be verified (no such run, no recorded notebook, data nowhere to be found).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.config import Settings, get_settings
from jobrunner.errors import InfrastructureError, InvalidJobOption, JobrunnerError
from jobrunner.kinds import FailureKind
from jobrunner.store.db import session_scope
from jobrunner.store.schemas import MAX_TIMEOUT, JobCreate, JobRead
from jobrunner.store.states import JobState
from jobrunner.tags import NOTEBOOK_TAG, job_run_tags

if TYPE_CHECKING:
    from jobrunner.store.models import Job
    from jobrunner.worker.attempt import JobRun, Outcome

log = logging.getLogger(__name__)
VERIFY_KIND = "verify"
DEFAULT_RTOL = 1e-6

__all__ = ["VERIFY_KIND", "execute_verification", "submit_verification", "verification_lines"]


def submit_verification(
    ref: str,
    *,
    rtol: float = DEFAULT_RTOL,
    submitter: str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
    settings: Settings | None = None,
    client: Any = None,
) -> JobRead:
    """Queue the verification of the run behind `ref` (a run id, MODEL@ALIAS or MODEL/VERSION).

    Raises RunNotFound (unknown run or model version), CannotVerify (not a jobrunner run), InvalidJobOption
    (rtol outside [0, 1], a bad timeout), InfrastructureError (MLflow or the job store unreachable).
    """
    from jobrunner.jobs import _publish_now
    from jobrunner.provenance.diff import resolve
    from jobrunner.provenance.verify import CannotVerify
    from jobrunner.store.queries import create_job_idempotent

    if isinstance(rtol, bool) or not isinstance(rtol, int | float) or not 0 <= rtol <= 1:
        raise InvalidJobOption(
            "rtol", f"rtol must be a number from 0 to 1 (a relative tolerance), not {rtol!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise InvalidJobOption("timeout", f"timeout must be seconds in (0, {MAX_TIMEOUT:g}], not {timeout!r}")
    settings = settings or get_settings()
    uri = settings.mlflow_tracking_uri or ""
    if client is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
    run_id = resolve(ref, client)
    run = _get_run(client, run_id, uri)
    notebook = run.data.tags.get(NOTEBOOK_TAG)
    if not notebook:
        raise CannotVerify(
            f"run {run_id} was not recorded by jobrunner (no {NOTEBOOK_TAG} tag): "
            "only executions of notebooks can be verified"
        )
    job_in = JobCreate(
        notebook=notebook,
        parameters={},
        idempotency_key=idempotency_key,
        submitter=submitter,
        timeout_seconds=timeout,
        kind=VERIFY_KIND,
        verifies=run_id,
        verification={"rtol": float(rtol)},
    )
    job_in.use_cache = False  # a verification re-executes; reusing an execution would prove nothing
    with session_scope(settings) as session:
        job, created = create_job_idempotent(session=session, job_in=job_in)
        result = JobRead.from_row(job)
    if created:
        log.info("job %s queued: verify run %s (%s)", result.id, run_id, notebook)
        _publish_now(settings)
    return result


def _get_run(client: Any, run_id: str, uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    from jobrunner.provenance.diff import RunNotFound

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise RunNotFound(f"no MLflow run {run_id}") from exc
        raise InfrastructureError(f"cannot read MLflow run {run_id} at {uri}: {exc.message}") from exc


def execute_verification(run: JobRun, job: Job) -> Outcome | None:
    """What a worker does with a verification job (called by JobRun for `kind == "verify"`): the outcome
    of a retry or give-up, None to ack (the job's final state is written)."""
    from jobrunner.errors import KernelStartError
    from jobrunner.provenance.verify import verify_run
    from jobrunner.store.live import OutputRecorder

    settings = run.settings
    out_dir = (settings.runs_dir or settings.project_dir) / "jobs" / job.id
    notebook_path = out_dir / f"attempt-{job.attempt}.ipynb"
    rtol = float((job.verification or {}).get("rtol", DEFAULT_RTOL))
    limit = settings.timeout if job.timeout_seconds is None else min(settings.timeout, job.timeout_seconds)
    try:
        live = OutputRecorder(settings, job.id, job.attempt).start()
        try:
            result = verify_run(
                job.verifies or "",
                settings,
                rtol=rtol,
                output_path=notebook_path,
                tags=job_run_tags(job.id, job.attempt, run.worker_id),
                cancel=run.token,
                timeout=limit,
                on_progress=run._progress_hook(live),
                on_output=live.add,
                kernel_name=job.kernel_name,
            )
        finally:
            live.close()
    except InfrastructureError as exc:
        if isinstance(exc, KernelStartError):
            run.metrics.kernel_failures.inc()
        return run._retry_or_give_up(job, exc)
    except JobrunnerError as exc:  # RunNotFound, CannotVerify, a recorded notebook that no longer parses
        run._finish(
            JobState.FAILED,
            error_kind=FailureKind.INVALID,
            error_ename=type(exc).__name__,
            error_evalue=str(exc),
            error_message=f"cannot verify: {exc}",
        )
        return None
    except Exception as exc:
        log.exception("job %s: unexpected error while verifying", job.id)
        return run._retry_or_give_up(job, exc)
    if run.lost:
        log.warning("job %s was taken over by another worker; dropping this verification", job.id)
        return None
    now = result.outcome[1]
    if now == "cancelled" and run.token.reason == "shutdown":
        run._requeue(job, "worker shut down before the verification finished", delay=0.0, reason="shutdown")
        return None
    common: dict[str, Any] = {
        "mlflow_run_id": result.new_run_id,
        **_store_notebook(settings, job.id, notebook_path),
    }
    if now == "cancelled":
        run._finish(
            JobState.CANCELLED,
            error_kind=FailureKind.CANCELLED,
            error_message="cancelled during verification",
            **common,
        )
    else:
        run._finish(JobState.SUCCEEDED, verification={**result.as_dict(), "rtol": rtol}, **common)
    run._settle_mlflow(result.new_run_id)
    return None


def _store_notebook(settings: Settings, job_id: str, notebook: Path) -> dict[str, Any]:
    from jobrunner.execution.artifacts import store_for

    if not notebook.is_file():
        return {}
    target = store_for(settings.artifact_uri or "")
    uris = {"output_uri": target.put(notebook, f"{job_id}/output.ipynb")}
    html = notebook.with_suffix(".html")
    if html.is_file():
        uris["html_uri"] = target.put(html, f"{job_id}/output.html")
    return uris


def verification_lines(job: JobRead) -> list[str]:
    """How `jobrunner status` shows a verification job."""
    if job.kind != VERIFY_KIND:
        return []
    lines = [f"  verifies: MLflow run {job.verifies}"]
    v = job.verification or {}
    if "reproduced" not in v:
        state = "not done" if job.terminal else "pending"
        lines.append(f"  verification: {state} (rtol {v.get('rtol', DEFAULT_RTOL):g})")
        return lines
    verdict = "REPRODUCED" if v["reproduced"] else "NOT REPRODUCED"
    lines.append(f"  verification: {verdict} as run {v.get('verification_run_id')} (rtol {v.get('rtol'):g})")
    lines += [f"    {d}" for d in v.get("differences", [])]
    lines += [
        f"  model version {m}: tagged reproduced={str(v['reproduced']).lower()}"
        for m in v.get("model_versions", [])
    ]
    return lines
