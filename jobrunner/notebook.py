"""Helpers for code inside notebooks: where the project is, and reporting metrics.

Kept import-light (no papermill, MLflow only when a run is active) so that a notebook opened in
JupyterLab, executed by papermill, or tested by nbmake behaves the same way.

    from jobrunner.notebook import project_path, log_metrics, submit
    df.to_parquet(project_path(output_path))
    log_metrics({"accuracy": 0.97})
    submit("notebooks/03_train.ipynb", {"n_estimators": 200}).wait()   # a job on the workers
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobrunner.config import METRICS_FILE_ENV, find_project_dir


def project_dir() -> Path:
    """The project root (where dvc.yaml is), wherever the kernel was started."""
    return find_project_dir()


def project_path(path: str | os.PathLike[str]) -> Path:
    """Resolve a path parameter: relative paths are relative to the project root."""
    p = Path(path)
    return p if p.is_absolute() else project_dir() / p


def active_run_id() -> str | None:
    """The MLflow run this execution records into (set by the executor), or None when interactive."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def log_metrics(metrics: Mapping[str, float], *, step: int | None = None, path: str | None = None) -> None:
    """Report metrics of this execution.

    Under the executor they go into its MLflow run (and its result); with `path` they are also written
    as JSON (for DVC `metrics:` files); interactively they are just shown.
    """
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"metric '{key}' is {value}; report finite numbers only")
        clean[key] = number
    sink = os.environ.get(METRICS_FILE_ENV)
    if sink:
        # Under the executor: hand the values to it through a file; it logs them into its MLflow run,
        # so the kernel never pays for importing MLflow just to report a number.
        now = int(time.time() * 1000)
        with open(sink, "a", encoding="utf-8") as fh:
            for key, value in clean.items():
                fh.write(json.dumps({"key": key, "value": value, "step": step or 0, "timestamp": now}) + "\n")
    elif run_id := active_run_id():
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        now = int(time.time() * 1000)
        MlflowClient().log_batch(run_id, metrics=[Metric(k, v, now, step or 0) for k, v in clean.items()])
    if path:
        target = project_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(target.read_text()) if target.is_file() else {}
        existing.update(clean)
        target.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")
    print("metrics:", ", ".join(f"{k}={v:.4g}" for k, v in clean.items()))


def submit(
    notebook: str,
    parameters: Mapping[str, object] | None = None,
    *,
    timeout: float | None = None,
    idempotency_key: str | None = None,
) -> Any:
    """Queue NOTEBOOK as a job on the platform's workers; returns a handle with `wait()` and `cancel()`.

    The parameters are checked against the notebook's parameters cell now, so a typo fails here and not
    on a worker. `wait()` shows cell progress and raises JobFailed if the notebook failed:

        job = submit("notebooks/03_train.ipynb", {"model_type": "random_forest"}, timeout=600)
        done = job.wait()
        done.mlflow_run_id, done.output_uri
    """
    import getpass

    from jobrunner.jobs import JobHandle
    from jobrunner.jobs import submit as submit_job

    job = submit_job(
        notebook,
        dict(parameters or {}),
        idempotency_key=idempotency_key,
        submitter=f"{getpass.getuser()} (notebook)",
        timeout=timeout,
    )
    return JobHandle(job)
