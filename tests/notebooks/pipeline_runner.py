"""Run the four pipeline notebooks through the executor in a test project (ci-sized parameters)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from jobrunner.execution.executor import ExecutionResult, execute

ROOT = Path(__file__).resolve().parents[2]
CI_TRAIN = {"n_estimators": 10, "cv_folds": 2}


def copy_notebooks(project: Path) -> None:
    shutil.copytree(
        ROOT / "notebooks",
        project / "notebooks",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("dashboards"),
    )


def run_stage(name: str, parameters: dict[str, Any]) -> ExecutionResult:
    notebook = {
        "ingest": "01_ingest",
        "prepare": "02_prepare",
        "train": "03_train",
        "evaluate": "04_evaluate",
    }
    return execute(
        f"notebooks/{notebook[name]}.ipynb",
        parameters,
        html=False,
        output_path=f"reports/{notebook[name]}.ipynb",
    )


def run_pipeline(
    *,
    source: str,
    target: str,
    model_name: str,
    ingest: dict[str, Any] | None = None,
    prepare: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    evaluate: dict[str, Any] | None = None,
) -> dict[str, ExecutionResult]:
    """ingest -> prepare -> train -> evaluate with the dvc.yaml paths; stops at the first failure."""
    stages = {
        "ingest": {"source": source, "target": target, **(ingest or {})},
        "prepare": dict(prepare or {}),
        "train": {**CI_TRAIN, **(train or {})},
        "evaluate": {"model_name": model_name, **(evaluate or {})},
    }
    results: dict[str, ExecutionResult] = {}
    for name, params in stages.items():
        results[name] = run_stage(name, params)
        if not results[name].ok:
            break
    return results
