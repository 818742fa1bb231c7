"""The one execution path: success, a raising notebook, timeout, cancellation, and what MLflow records."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import nbformat
import pytest

from jobrunner.config import get_settings
from jobrunner.errors import ParameterError
from jobrunner.execution.executor import CancelToken, execute
from jobrunner.tags import (
    DATA_INPUT_PREFIX,
    ERROR_CELL_INDEX_TAG,
    ERROR_ENAME_TAG,
    ERROR_KIND_TAG,
    GIT_DIRTY_TAG,
    NOTEBOOK_TAG,
    OUTCOME_TAG,
)


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=get_settings().mlflow_tracking_uri)


def test_success_injects_parameters_reports_progress_and_records_the_run(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "in.csv").write_text("a,b\n1,2\n")
    seen = []
    result = execute("notebooks/ok.ipynb", {"x": 5, "label": "data/in.csv"}, on_progress=seen.append)

    assert result.ok and result.status == "succeeded" and result.failure is None
    executed = nbformat.read(result.output_path, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "x = 5" in injected[0].source
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "data/in.csv 7.5" in printed
    assert result.html_path and result.html_path.read_text().startswith("<!DOCTYPE html>")
    # progress: one report per cell, in order, ending with the last cell
    assert [p.cell_index for p in seen] == list(range(len(executed.cells)))
    assert seen[-1].cells_total == len(executed.cells)
    assert result.metrics["total"] == 7.5

    run = _client().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["x"] == "5" and run.data.params["label"] == "data/in.csv"
    assert run.data.metrics["total"] == 7.5 and "duration_s" in run.data.metrics
    tags = run.data.tags
    assert tags[OUTCOME_TAG] == "succeeded"
    assert tags[NOTEBOOK_TAG] == "notebooks/ok.ipynb"
    # the CSV named by a parameter is an input; its DVC-compatible md5 is recorded
    import hashlib

    md5 = hashlib.md5(b"a,b\n1,2\n", usedforsecurity=False).hexdigest()
    assert tags[f"{DATA_INPUT_PREFIX}data/in.csv"] == md5
    artifacts = {a.path for a in _client().list_artifacts(result.run_id, "notebook")}
    assert artifacts == {f"notebook/{result.output_path.name}", f"notebook/{result.html_path.name}"}
    lineage_file = _client().download_artifacts(result.run_id, "lineage.json", str(project))
    lineage = json.loads(Path(lineage_file).read_text())
    assert lineage["inputs"] == [{"path": "data/in.csv", "md5": md5, "size": 8}]
    assert lineage["parameters"]["x"] == 5


def test_git_commit_is_recorded(project: Path) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=t@e.st",
            "-c",
            "user.name=t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
        cwd=project,
        check=True,
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True
    ).stdout.strip()
    result = execute("notebooks/ok.ipynb", {}, html=False)
    tags = _client().get_run(result.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags[GIT_DIRTY_TAG] in ("true", "false")


def test_raising_notebook_is_a_failed_result_with_the_cell(project: Path) -> None:
    result = execute("notebooks/raises.ipynb", {"message": "bad input row 7"})

    assert result.status == "failed"
    failure = result.failure
    assert failure.kind == "error" and failure.ename == "ValueError" and failure.evalue == "bad input row 7"
    # cell_index counts the cells of the notebook as written
    source = nbformat.read(project / "notebooks" / "raises.ipynb", as_version=4)
    assert "raise ValueError" in source.cells[failure.cell_index].source
    assert f"cell {failure.cell_index} (In [{failure.execution_count}]) raised ValueError" in failure.message
    # the executed notebook is kept, with the error in the failing cell and nothing after it run
    executed = nbformat.read(result.output_path, as_version=4)
    failed = [c for c in executed.cells if c.get("execution_count") == failure.execution_count]
    assert failed[0].outputs[-1]["ename"] == "ValueError"
    assert executed.cells[-1].get("execution_count") is None
    run = _client().get_run(result.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_CELL_INDEX_TAG] == str(failure.cell_index)
    assert run.data.tags[ERROR_ENAME_TAG] == "ValueError"


def test_timeout_stops_the_notebook(project: Path) -> None:
    started = time.monotonic()
    result = execute("notebooks/sleeps.ipynb", {"seconds": 60.0}, timeout=5, html=False)
    elapsed = time.monotonic() - started
    assert result.status == "failed" and result.failure.kind == "timeout"
    assert "timed out after 5s in cell 2" in result.failure.message  # the time.sleep cell
    assert elapsed < 60  # 5 s limit + kill + recording, on a loaded 2-core machine
    assert _client().get_run(result.run_id).data.tags[ERROR_KIND_TAG] == "timeout"


def test_cancel_interrupts_a_running_cell(project: Path) -> None:
    token = CancelToken()
    threading.Timer(1.5, token.cancel).start()
    started = time.monotonic()
    result = execute("notebooks/sleeps.ipynb", {"seconds": 60.0}, cancel=token, html=False)
    assert result.status == "cancelled"
    assert time.monotonic() - started < 60  # includes a fresh MLflow store (migrations) on a loaded machine
    assert _client().get_run(result.run_id).info.status == "KILLED"


def test_bad_parameters_fail_before_any_run_is_recorded(project: Path) -> None:
    with pytest.raises(ParameterError, match="unknown parameter 'nope'"):
        execute("notebooks/ok.ipynb", {"nope": 1})
    experiment = _client().get_experiment_by_name("notebooks")
    if experiment is not None:
        assert _client().search_runs([experiment.experiment_id]) == []


def test_metrics_reach_the_result_without_mlflow(project: Path) -> None:
    result = execute("notebooks/ok.ipynb", {"x": 1, "y": 1.0, "items": ["a"]}, record=False, html=False)
    assert result.ok and result.run_id is None
    assert result.metrics == {"total": 2.0, "n_items": 1.0}
    assert not (project / "mlflow.db").exists()


def test_the_kernel_sees_the_executors_experiment_not_the_callers(project: Path, monkeypatch) -> None:
    """mlflow.set_experiment() in the calling process exports MLFLOW_EXPERIMENT_ID, an id of *its* store;
    the kernel gets the experiment of the run the executor opened, so MLflow calls in it stay consistent."""
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "4242")
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("value = 1.5", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os, mlflow\n"
            "experiment = mlflow.get_experiment(os.environ['MLFLOW_EXPERIMENT_ID'])\n"
            "print('experiment', experiment.experiment_id, experiment.name)"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, project / "notebooks" / "experiment.ipynb")
    result = execute("notebooks/experiment.ipynb", {"value": 2.5})
    assert result.ok, result.failure
    parent = _client().get_run(result.run_id)
    printed = "".join(
        o.get("text", "")
        for c in nbformat.read(result.output_path, as_version=4).cells
        for o in c.get("outputs", [])
    )
    assert f"experiment {parent.info.experiment_id} {get_settings().mlflow_experiment}" in printed
