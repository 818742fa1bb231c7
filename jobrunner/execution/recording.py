"""Recording executions in MLflow: one run per execution, opened before the kernel starts.

The run id goes into the kernel's environment (MLFLOW_RUN_ID), so `mlflow.log_*` calls and
`jobrunner.notebook.log_metrics` inside the notebook land in the same run. After execution the recorder
adds what papermill does not: parameters, the executed notebook (ipynb and HTML), git commit and dirty
flag, DVC hashes of inputs and outputs, duration and outcome.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jobrunner import __version__
from jobrunner.errors import NotebookFailure, RecordingError
from jobrunner.execution.hashing import DataHash, GitState
from jobrunner.tags import (
    CACHE_HIT_PREFIX,
    DATA_INPUT_PREFIX,
    DATA_OUTPUT_PREFIX,
    DURATION_TAG,
    DVC_LOCK_MD5_TAG,
    ERROR_CELL_INDEX_TAG,
    ERROR_ENAME_TAG,
    ERROR_KIND_TAG,
    ERROR_MESSAGE_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    JOB_ID_TAG,
    NOTEBOOK_TAG,
    OUTCOME_TAG,
    OUTPUTS_STORED_PREFIX,
    PARAMS_TRUNCATED_TAG,
    SUPERSEDED_BY_TAG,
    SUPERSEDED_REASON_TAG,
    SUPERSEDED_TAG,
    VERSION_TAG,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

# MLflow 3's UI opens an experiment without this tag on its GenAI traces page; ours are model training.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
_MAX_PARAM = 6000


_clients: dict[str, MlflowClient] = {}
_experiment_ids: dict[tuple[str, str], str] = {}
_cache_lock = threading.Lock()


def _client(tracking_uri: str) -> MlflowClient:
    """One MlflowClient per tracking URI per process: a long-lived process (worker, execution service)
    opens its store once instead of once per run."""
    with _cache_lock:
        client = _clients.get(tracking_uri)
        if client is None:
            from mlflow.tracking import MlflowClient

            client = _clients[tracking_uri] = MlflowClient(tracking_uri=tracking_uri)
        return client


def flatten(values: Mapping[str, Any], prefix: str = "", *, limit: int | None = _MAX_PARAM) -> dict[str, str]:
    """Parameters as MLflow params: nested dicts as dotted keys, other values as JSON text, each cut to
    `limit` characters (MLflow's limit for a parameter value; None: whole)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + ".", limit=limit))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            out[name] = text if limit is None else text[:limit]
    return out


class Recorder:
    """Opens and completes the MLflow run of one execution."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None):
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.started_in: str | None = None  # experiment id of the run `start` created
        if tracking_uri.startswith(("http://", "https://")):
            # A server that is down would otherwise cost minutes of MLflow's HTTP retries per call.
            from jobrunner.execution.checks import ChecksFailed, check_mlflow

            result = check_mlflow(tracking_uri)
            if not result.ok:
                raise ChecksFailed([result])
        try:
            self.client = _client(tracking_uri)
        except Exception as exc:
            raise RecordingError(f"MLflow tracking at {tracking_uri} is not usable: {exc}") from exc

    def experiment_id(self) -> str:
        key = (self.tracking_uri, self.experiment)
        cached = _experiment_ids.get(key)
        if cached is not None:
            return cached
        found = self._find_or_create_experiment()
        _experiment_ids[key] = found
        return found

    def _find_or_create_experiment(self) -> str:
        try:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None:
                if EXPERIMENT_KIND_TAG not in exp.tags:  # made by an older version or by hand
                    self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
                return exp.experiment_id
            location = self.artifact_root if self.tracking_uri.startswith(("sqlite:", "file:", "/")) else None
            try:
                return self.client.create_experiment(
                    self.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
                )
            except Exception:  # another process created it first
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                return exp.experiment_id
        except Exception as exc:
            raise RecordingError(
                f"cannot open MLflow experiment '{self.experiment}' at {self.tracking_uri} "
                f"(check MLFLOW_TRACKING_URI): {exc}"
            ) from exc

    def start(self, *, notebook: str, run_name: str, tags: Mapping[str, str]) -> str:
        experiment_id = self.experiment_id()
        all_tags = {
            "mlflow.source.name": notebook,
            "mlflow.source.type": "NOTEBOOK",
            NOTEBOOK_TAG: notebook,
            VERSION_TAG: __version__,
            OUTCOME_TAG: "running",
            **tags,
        }
        try:
            try:
                run = self.client.create_run(experiment_id, tags=all_tags, run_name=run_name)
            except Exception:  # noqa: BLE001 - any failure: retry once below; a second failure raises
                # the cached experiment may have been deleted meanwhile: look it up again, once
                _experiment_ids.pop((self.tracking_uri, self.experiment), None)
                experiment_id = self.experiment_id()
                run = self.client.create_run(experiment_id, tags=all_tags, run_name=run_name)
        except Exception as exc:
            raise RecordingError(f"cannot create an MLflow run at {self.tracking_uri}: {exc}") from exc
        self.started_in = experiment_id
        # RunInfo.run_id is a str behind MLflow's untyped `searchable_attribute` decorator
        return cast(str, run.info.run_id)

    def finish(
        self,
        run_id: str,
        *,
        parameters: Mapping[str, Any],
        git: GitState,
        inputs: Iterable[DataHash],
        outputs: Iterable[DataHash],
        dvc_lock_md5: str | None,
        artifacts: Iterable[Path],
        duration: float,
        failure: NotebookFailure | None,
        cancelled: bool = False,
        reported: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, float]:
        """Complete the run; returns the metrics the run holds (those the notebook reported included).

        `reported` are the metrics the notebook handed over with `log_metrics` (key, value, step,
        timestamp in ms).
        """
        from mlflow.entities import Metric, Param, RunTag

        inputs, outputs = list(inputs), list(outputs)
        outcome = "cancelled" if cancelled else ("failed" if failure else "succeeded")
        tags = {
            OUTCOME_TAG: outcome,
            DURATION_TAG: f"{duration:.3f}",
        }
        if git.commit:
            tags["mlflow.source.git.commit"] = git.commit
            tags[GIT_COMMIT_TAG] = git.commit
            tags[GIT_DIRTY_TAG] = str(git.dirty).lower()
        if dvc_lock_md5:
            tags[DVC_LOCK_MD5_TAG] = dvc_lock_md5
        for prefix, hashes in ((DATA_INPUT_PREFIX, inputs), (DATA_OUTPUT_PREFIX, outputs)):
            for h in hashes:
                tags[f"{prefix}{h.path}"] = h.md5 or "missing"
        if failure is not None:
            tags[ERROR_KIND_TAG] = failure.kind
            tags[ERROR_MESSAGE_TAG] = failure.message[:5000]
            if failure.cell_index is not None:
                tags[ERROR_CELL_INDEX_TAG] = str(failure.cell_index)
            if failure.ename:
                tags[ERROR_ENAME_TAG] = failure.ename
        lineage = {
            "git": {"commit": git.commit, "dirty": git.dirty, "branch": git.branch},
            "dvc_lock_md5": dvc_lock_md5,
            "inputs": [h.as_dict() for h in inputs],
            "outputs": [h.as_dict() for h in outputs],
            "parameters": dict(parameters),
            "outcome": outcome,
            "failure": failure.as_dict() if failure else None,
        }
        now = int(time.time() * 1000)
        whole = flatten(parameters, limit=None)
        truncated = sorted(k for k, v in whole.items() if len(v) > _MAX_PARAM)
        if truncated:  # MLflow keeps 6000 characters of a value: say so, and keep the values as an artifact
            tags[PARAMS_TRUNCATED_TAG] = ",".join(truncated)[:5000]
        try:
            params = [Param(k, v) for k, v in flatten(parameters).items()]
            metrics = [Metric("duration_s", duration, now, 0)] + [
                Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m["step"])) for m in reported
            ]
            self.client.log_batch(run_id, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
            for i in range(0, len(metrics), 1000):  # MLflow's per-batch limit
                self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
            with tempfile.TemporaryDirectory() as tmp:
                lineage_file = Path(tmp) / "lineage.json"
                lineage_file.write_text(json.dumps(lineage, indent=2, default=str))
                self.client.log_artifact(run_id, str(lineage_file))
                if truncated:
                    params_file = Path(tmp) / "parameters.json"
                    params_file.write_text(json.dumps(dict(parameters), indent=2, default=str))
                    self.client.log_artifact(run_id, str(params_file))
            for path in artifacts:
                if path.is_file():
                    self.client.log_artifact(run_id, str(path), artifact_path="notebook")
            status = "KILLED" if cancelled else ("FAILED" if failure else "FINISHED")
            self.client.set_terminated(run_id, status=status)
            return dict(self.client.get_run(run_id).data.metrics)
        except Exception as exc:
            raise RecordingError(f"cannot complete MLflow run {run_id}: {exc}") from exc

    def abort(self, run_id: str, reason: str) -> None:
        """Mark a run FAILED when execution never got going (kernel failed to start)."""
        try:
            self.client.set_tag(run_id, OUTCOME_TAG, "infrastructure_error")
            self.client.set_tag(run_id, ERROR_MESSAGE_TAG, reason[:5000])
            self.client.set_terminated(run_id, status="FAILED")
        except Exception:
            log.warning("could not mark MLflow run %s as failed", run_id, exc_info=True)


def close_lost_attempts(tracking_uri: str, experiment: str, job_id: str, reason: str) -> list[str]:
    """Mark the still-RUNNING MLflow runs of a job's earlier attempts KILLED (outcome `worker_lost`).

    An attempt whose worker was killed never completes its run. The worker that takes the job over (or
    gives up on it) calls this before it starts its own run: the job is claimed, so no other attempt of it
    can be live. Best effort: returns the ids it closed and logs, never raises.
    """
    if not tracking_uri:
        return []
    try:
        client = _client(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}' and attributes.status = 'RUNNING'",
            max_results=100,
        )
        closed = []
        for run in runs:
            client.set_tag(run.info.run_id, OUTCOME_TAG, "worker_lost")
            client.set_tag(run.info.run_id, ERROR_MESSAGE_TAG, reason[:5000])
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
        if closed:
            log.info("job %s: marked %d lost attempt run(s) KILLED: %s", job_id, len(closed), closed)
        return closed
    except Exception:
        log.warning("job %s: could not close the MLflow runs of lost attempts", job_id, exc_info=True)
        return []


def mark_superseded(
    tracking_uri: str,
    experiment: str,
    job_id: str,
    *,
    keep: str | None = None,
    only: str | None = None,
    reason: str = "",
) -> list[str]:
    """Tag MLflow runs of a job `jobrunner.superseded=true`, so each job shows one authoritative run.

    With `keep`: every other run of the job (the attempt whose result the store took calls this when its
    terminal state is committed: an earlier attempt may have FINISHED in MLflow before its worker died).
    With `only`: just that run (an attempt whose result the store refused). Best effort: logs, never raises.
    """
    if not tracking_uri:
        return []
    try:
        client = _client(tracking_uri)
        if only is not None:
            targets = [only]
            why = reason or "superseded"
        else:
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                return []
            runs = client.search_runs(
                [exp.experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'", max_results=1000
            )
            targets = [
                r.info.run_id
                for r in runs
                if r.info.run_id != keep and r.data.tags.get(SUPERSEDED_TAG) != "true"
            ]
            why = reason or f"superseded by run {keep}, whose result the job store recorded"
        for run_id in targets:
            client.set_tag(run_id, SUPERSEDED_TAG, "true")
            client.set_tag(run_id, SUPERSEDED_REASON_TAG, why[:5000])
            if keep:
                client.set_tag(run_id, SUPERSEDED_BY_TAG, keep)
        if targets:
            log.info("job %s: marked %d MLflow run(s) superseded: %s", job_id, len(targets), targets)
        return targets
    except Exception:
        log.warning("job %s: could not mark superseded MLflow runs", job_id, exc_info=True)
        return []


def tag_outputs(tracking_uri: str, run_id: str, files: Iterable[Any]) -> None:
    """Tag the run with where each output was stored (`jobrunner.outputs.stored.<path>` = URI), after the
    job copied them to its artifact store. Best effort: logs, never raises."""
    if not tracking_uri:
        return
    try:
        from mlflow.entities import RunTag

        tags = [RunTag(f"{OUTPUTS_STORED_PREFIX}{f.path}"[:250], f.uri) for f in files if f.uri]
        if tags:
            _client(tracking_uri).log_batch(run_id, tags=tags)
    except Exception:
        log.warning("run %s: could not tag its stored outputs", run_id, exc_info=True)


def tag_cache_hit(tracking_uri: str, run_id: str | None, job_id: str, source_job_id: str) -> None:
    """Tag the reused run `jobrunner.cache.hit.<job id>` = the job whose execution it is. Best effort."""
    if not tracking_uri or not run_id:
        return
    try:
        _client(tracking_uri).set_tag(run_id, f"{CACHE_HIT_PREFIX}{job_id}", source_job_id)
    except Exception:
        log.warning("run %s: could not tag the cache hit of job %s", run_id, job_id, exc_info=True)
