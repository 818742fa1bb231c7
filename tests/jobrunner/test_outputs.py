"""Jobs own their outputs: a queued job never writes the project's files (real worker, PostgreSQL,
RabbitMQ, S3 on moto, MLflow). Output parameters are marked `# output:` in the parameters cell."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import boto3
import nbformat
import pytest

from jobrunner.errors import ParameterError
from jobrunner.tags import DATA_INPUT_PREFIX, DATA_OUTPUT_PREFIX, DATA_PREFIX, OUTPUTS_STORED_PREFIX
from tests.jobrunner.support import ROOT, wait_state
from tests.jobrunner.support import write_outputs_notebook as _notebook


def _snapshot(project: Path) -> dict[str, str]:
    """md5 of every file of the project but jobrunner's state folder and what the test set-up puts there:
    the SQLite MLflow store's artifacts (in the worker's working folder) and the workers' logs."""
    return {
        p.relative_to(project).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()  # noqa: S324
        for p in sorted(project.rglob("*"))
        if p.is_file()
        and not {".jobrunner", "mlartifacts"} & set(p.parts)
        and not (p.parent == project and p.name.startswith("worker-"))
    }


def _s3(uri: str) -> bytes:
    bucket, key = uri[len("s3://") :].split("/", 1)
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_the_parameters_cell_marks_outputs() -> None:
    from jobrunner.execution.params import read_schema

    schema = read_schema(ROOT / "notebooks" / "03_train.ipynb")
    assert schema.outputs == ["model_dir", "model_info_path", "metrics_path"]
    assert schema.parameters["model_dir"].as_dict()["output"] is True
    assert schema.parameters["train_path"].output is False
    assert read_schema(ROOT / "notebooks" / "04_evaluate.ipynb").outputs == ["metrics_path", "plots_dir"]


@pytest.mark.services
def test_jobs_with_default_outputs_leave_the_project_unchanged(job_env, workers, mlflow_store) -> None:
    from mlflow.tracking import MlflowClient

    from jobrunner.jobs import submit

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    notebook = _notebook(project)
    before = _snapshot(project)
    workers.start("a")
    workers.start("b")
    # the second passes the defaults explicitly, as the job board does: the same as leaving them out
    first = submit(notebook, {"n": 1})
    second = submit(notebook, {"n": 2, "result_path": "results/out.json", "model_dir": "models/m"})
    done = [wait_state(j.id, {"SUCCEEDED", "FAILED"}, 120) for j in (first, second)]
    assert [j.state.value for j in done] == ["SUCCEEDED", "SUCCEEDED"], [j.error for j in done]
    assert _snapshot(project) == before  # byte-identical: no workspace file written, none added

    client = MlflowClient(mlflow_store)
    uris = set()
    for job, total in zip(done, (6, 12), strict=True):
        outputs = {o.parameter: o for o in job.outputs}
        assert set(outputs) == {"result_path", "model_dir"}
        result, model = outputs["result_path"], outputs["model_dir"]
        assert result.path == "results/out.json" and model.path == "models/m"
        assert json.loads(_s3(result.uri)) == {"total": total}  # stored with the job, in S3
        assert result.uri.startswith(f"{job_env['JOBRUNNER_ARTIFACT_URI']}/{job.id}/outputs/")
        assert _s3(f"{model.uri}/weights.txt") == str(total).encode()
        assert result.md5 == hashlib.md5(json.dumps({"total": total}).encode()).hexdigest()  # noqa: S324
        assert model.md5.endswith(".dir")
        uris |= {result.uri, model.uri}
        tags = client.get_run(job.mlflow_run_id).data.tags
        assert tags[f"{DATA_OUTPUT_PREFIX}results/out.json"] == result.md5
        assert tags[f"{DATA_OUTPUT_PREFIX}models/m"] == model.md5
        inputs = {k for k in tags if k.startswith(DATA_INPUT_PREFIX)}
        assert inputs == {f"{DATA_INPUT_PREFIX}data/in.csv"}  # the data it read, not its outputs
        assert tags[f"{OUTPUTS_STORED_PREFIX}results/out.json"] == result.uri
    assert len(uris) == 4  # two concurrent jobs wrote and stored different files

    # `jobrunner status` lists them
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "status", done[0].id],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"output result_path: results/out.json (md5 {done[0].outputs[0].md5}" in proc.stdout


@pytest.mark.services
def test_an_output_path_inside_the_project_needs_write_workspace(job_env, workers) -> None:
    from jobrunner.jobs import submit

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    notebook = _notebook(project)
    with pytest.raises(ParameterError) as refused:
        submit(notebook, {"result_path": "metrics/mine.json"})
    assert refused.value.problems[0].name == "result_path"
    assert "output parameter 'result_path' = 'metrics/mine.json' is inside the project" in str(refused.value)
    assert "--write-workspace" in str(refused.value)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobrunner.cli",
            "submit",
            notebook,
            "-p",
            "result_path",
            str(project / "results" / "out.json"),
        ],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "output parameter 'result_path'" in proc.stderr and "nothing was queued" in proc.stderr
    from jobrunner.jobs import list_jobs

    assert list_jobs().total == 0

    workers.start()
    job = submit(notebook, {"result_path": "results/mine.json", "n": 3}, write_workspace=True)
    assert job.write_workspace
    done = wait_state(job.id, {"SUCCEEDED", "FAILED"}, 120)
    assert done.state.value == "SUCCEEDED", done.error
    assert json.loads((project / "results" / "mine.json").read_text()) == {"total": 18}
    assert (project / "models" / "m" / "weights.txt").read_text() == "18"  # the default, in the workspace
    assert {o.path for o in done.outputs} == {"results/mine.json", "models/m"}


def test_a_workspace_run_writes_the_workspace_and_records_outputs_not_inputs(
    project, mlflow_store, monkeypatch
) -> None:
    """`jobrunner run` (and DVC stages) keep writing where the parameters say; files an earlier run left
    at the output paths are outputs of this run, never its inputs."""
    from mlflow.tracking import MlflowClient

    from jobrunner.config import get_settings
    from jobrunner.execution.executor import execute

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    get_settings.cache_clear()
    notebook = _notebook(project)
    result = execute(notebook, {"n": 5}, html=False)
    assert result.ok, result.failure
    assert json.loads((project / "results" / "out.json").read_text()) == {"total": 30}
    assert [h.path for h in result.inputs] == ["data/in.csv"]
    assert {h.path: h.md5 for h in result.outputs} == {
        "results/out.json": hashlib.md5(b'{"total": 30}').hexdigest(),  # noqa: S324
        "models/m": result.outputs[1].md5,
    }
    tags = MlflowClient(mlflow_store).get_run(result.run_id).data.tags
    assert {k for k in tags if k.startswith(DATA_PREFIX)} == {
        f"{DATA_INPUT_PREFIX}data/in.csv",
        f"{DATA_OUTPUT_PREFIX}results/out.json",
        f"{DATA_OUTPUT_PREFIX}models/m",
    }


def _prepared_project(project: Path) -> None:
    """The pipeline notebooks with ingest and prepare run in the workspace, and what an earlier training
    left at 03_train's output paths."""
    import shutil

    from jobrunner.execution.executor import execute

    shutil.copytree(
        ROOT / "notebooks",
        project / "notebooks",
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("dashboards"),
    )
    for nb in ("01_ingest", "02_prepare"):
        result = execute(f"notebooks/{nb}.ipynb", {}, html=False, record=False)
        assert result.ok, result.failure
    (project / "models" / "model").mkdir(parents=True)
    (project / "models" / "model" / "MLmodel").write_text("the served champion's files\n")
    (project / "models" / "model_info.json").write_text('{"earlier": true}\n')
    (project / "metrics").mkdir()
    (project / "metrics" / "train.json").write_text('{"accuracy": 0.5}\n')


@pytest.mark.services
@pytest.mark.slow
def test_a_03_train_job_owns_its_model_and_metrics_and_verifies(job_env, workers, mlflow_store) -> None:
    from mlflow.tracking import MlflowClient

    from jobrunner.config import get_settings
    from jobrunner.jobs import submit
    from jobrunner.provenance.verify import verify_run

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    _prepared_project(project)
    before = _snapshot(project)
    workers.start()
    job = submit("notebooks/03_train.ipynb", {"n_estimators": 10, "cv_folds": 2})
    done = wait_state(job.id, {"SUCCEEDED", "FAILED"}, 240)
    assert done.state.value == "SUCCEEDED", done.error
    assert _snapshot(project) == before  # the workspace's model, model info and metrics untouched

    outputs = {o.parameter: o for o in done.outputs}
    assert {p: o.path for p, o in outputs.items()} == {
        "model_dir": "models/model",
        "model_info_path": "models/model_info.json",
        "metrics_path": "metrics/train.json",
    }
    metrics = json.loads(_s3(outputs["metrics_path"].uri))
    assert 0.5 < metrics["cv_accuracy"] <= 1.0
    assert b"flavors" in _s3(f"{outputs['model_dir'].uri}/MLmodel")  # the new model, not the placeholder

    client = MlflowClient(mlflow_store)
    tags = client.get_run(done.mlflow_run_id).data.tags
    data = {k[len(DATA_PREFIX) :]: v for k, v in tags.items() if k.startswith(DATA_PREFIX)}
    assert set(data) == {
        "input.data/prepared/train.parquet",
        "input.data/prepared/schema.json",
        "output.models/model",
        "output.models/model_info.json",
        "output.metrics/train.json",
    }
    assert data["output.metrics/train.json"] == outputs["metrics_path"].md5

    verification = verify_run(done.mlflow_run_id, get_settings(), client=client)
    assert verification.reproduced, verification.render()
    assert _snapshot(project) == before  # verifying wrote into its scratch folder too


def test_a_schedule_with_an_output_path_inside_the_project_is_refused(project) -> None:
    from jobrunner.scheduling.schedules import ScheduleCreate, create_schedule, list_schedules

    notebook = _notebook(project)
    with pytest.raises(ParameterError) as refused:
        create_schedule(
            ScheduleCreate(
                name="nightly",
                notebook=notebook,
                cron="0 3 * * *",
                parameters={"model_dir": "models/nightly"},
            )
        )
    assert [p.name for p in refused.value.problems] == ["model_dir"]
    assert "inside the project" in str(refused.value)
    assert list_schedules().total == 0
    # the defaults are fine: each run writes into its job's folder
    assert (
        create_schedule(ScheduleCreate(name="nightly", notebook=notebook, cron="0 3 * * *")).name == "nightly"
    )
