"""DVC stages and the run cache: a pipeline notebook re-saved as JupyterLab does (outputs, kernelspec
metadata, a markdown cell) is a changed dependency for DVC, so `dvc repro` runs the stage command again;
the stage's run-cache key is unchanged, so the recorded run's outputs are restored and nothing executes.
Drives `pipelines.stage.run_stage`, what `dvc repro` runs for each stage (real kernels and MLflow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from jobrunner.execution.hashing import hash_path
from tests.jobrunner.support import ROOT

OUTS = ["models/model", "models/model_info.json", "metrics/train.json"]
EVALUATE_OUTS = ["plots/evaluation.png", "plots/roc.csv", "plots/confusion.csv", "metrics/evaluate.json"]


@pytest.mark.slow
def test_a_resaved_pipeline_notebook_restores_its_stage_outputs_without_executing(
    project, mlflow_store, monkeypatch, capsys
) -> None:
    from mlflow.tracking import MlflowClient

    from jobrunner.config import get_settings
    from pipelines.stage import run_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("JOBRUNNER_MLFLOW_EXPERIMENT", f"stage-cache-{project.name}")
    monkeypatch.setenv("JOBRUNNER_SERVICE", "off")
    monkeypatch.chdir(project)
    get_settings.cache_clear()
    shutil.copytree(
        ROOT / "notebooks",
        project / "notebooks",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("dashboards"),
    )
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    for stage in ("ingest", "prepare", "train"):
        assert run_stage(stage, profile="ci", quiet=True) == 0, capsys.readouterr().err
    before = {p: hash_path(Path(p), project).md5 for p in OUTS}
    client = MlflowClient(mlflow_store)
    exp = client.get_experiment_by_name(f"stage-cache-{project.name}")
    runs = len(client.search_runs([exp.experiment_id]))

    path = project / "notebooks" / "03_train.ipynb"
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[-1].outputs = [nbformat.v4.new_output("stream", text="logged a model\n")]
    code[-1].execution_count = 12
    nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
    nb.cells.append(nbformat.v4.new_markdown_cell("Notes from a session in JupyterLab."))
    nbformat.write(nb, path)
    shutil.rmtree(project / "models" / "model")  # even gone: restored from the recorded run
    capsys.readouterr()

    assert run_stage("train", profile="ci", quiet=True) == 0
    err = capsys.readouterr().err
    assert "stage train: run cache hit" in err and "nothing executed" in err, err
    assert {p: hash_path(Path(p), project).md5 for p in OUTS} == before  # byte-identical outs for DVC
    assert len(client.search_runs([exp.experiment_id])) == runs  # no kernel, no new run

    assert run_stage("train", profile="ci", quiet=True, cache=False) == 0  # --no-cache executes
    assert len(client.search_runs([exp.experiment_id])) == runs + 1

    # A directory output (04_evaluate's plots_dir) and the stage's dvc.yaml outs inside it: `dvc repro`
    # deletes a stage's outs before running it, and a hit must put every one of them back (it restored
    # nothing for the directory, and DVC then failed: "output 'plots/evaluation.png' does not exist").
    capsys.readouterr()
    assert run_stage("evaluate", profile="ci", quiet=True) == 0, capsys.readouterr().err
    evaluated = {p: hash_path(Path(p), project).md5 for p in EVALUATE_OUTS}
    assert all(evaluated.values()), evaluated
    for rel in EVALUATE_OUTS:
        (project / rel).unlink()
    capsys.readouterr()
    assert run_stage("evaluate", profile="ci", quiet=True) == 0
    err = capsys.readouterr().err
    assert "stage evaluate: run cache hit" in err, err
    assert {p: hash_path(Path(p), project).md5 for p in EVALUATE_OUTS} == evaluated
