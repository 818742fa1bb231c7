"""Verify and diff for everyone: POST /v1/runs/{id}/verify runs the verification as a job on a real worker
(PostgreSQL, RabbitMQ, S3, MLflow), with the recorded data fetched by DVC md5 from the DVC remote;
GET /v1/runs/{a}/diff/{b} (and its page) names what changed, most relevant first."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner

from jobrunner.tags import VERIFICATION_TAG
from tests.jobrunner.support import wait_state
from tests.serve.conftest import READ, WRITE

pytestmark = pytest.mark.services
DVC = str(Path(sys.executable).parent / "dvc")
TRAIN = """import json
import numpy as np
from jobrunner.notebook import log_metrics, project_path
data = np.loadtxt(project_path(data_path), delimiter=",", skiprows=1)
X, y = data[:, :2], data[:, 2]
w = np.random.default_rng(seed).normal(size=2)
for _ in range(200):
    w -= 0.05 * X.T @ (X @ w - y) / len(y)
loss = float(np.mean((X @ w - y) ** 2))
project_path(model_path).parent.mkdir(parents=True, exist_ok=True)
project_path(model_path).write_text(json.dumps([round(float(v), 12) for v in w]))
log_metrics({"loss": loss})
print("trained: loss", loss)"""


def _notebook(project: Path, name: str, parameters: str, code: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ]
    nbformat.write(nb, project / "notebooks" / name)
    return f"notebooks/{name}"


def _run_job(api: Any, notebook: str, parameters: dict[str, Any]) -> dict[str, Any]:
    r = api.post(
        "/v1/jobs", json={"notebook": notebook, "parameters": parameters, "cache": False}, headers=WRITE
    )
    assert r.status_code == 201, r.text
    done = wait_state(r.json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"}, 180)
    assert done.state.value == "SUCCEEDED", done
    return api.get(f"/v1/jobs/{done.id}", headers=READ).json()


def _verify(api: Any, run_id: str, **body: Any) -> dict[str, Any]:
    r = api.post(f"/v1/runs/{run_id}/verify", json=body or None, headers=WRITE)
    assert r.status_code == 202, r.text
    assert r.json()["kind"] == "verify" and r.json()["verifies"] == run_id
    done = wait_state(r.json()["id"], {"SUCCEEDED", "FAILED", "CANCELLED"}, 180)
    job = api.get(f"/v1/jobs/{done.id}", headers=READ).json()
    assert job["state"] == "SUCCEEDED", job
    return job


def _dvc(project: Path, *args: str) -> None:
    subprocess.run([DVC, *args], cwd=project, check=True, capture_output=True, timeout=120)


def test_a_seeded_training_run_reproduces_on_a_worker_with_data_from_the_dvc_remote(
    job_env, workers, runs_api, tmp_path
):
    from mlflow.tracking import MlflowClient

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    (project / "data").mkdir()
    rows = [f"{a},{b},{2 * a - b + 0.5}" for a in range(6) for b in range(3)]
    (project / "data" / "train.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    _dvc(project, "init", "--no-scm")
    _dvc(project, "remote", "add", "-d", "store", str(tmp_path / "dvc-remote"))
    _dvc(project, "add", "data/train.csv")
    _dvc(project, "push")
    notebook = _notebook(
        project,
        "train_seeded.ipynb",
        'data_path = "data/train.csv"\nseed = 7\n'
        'model_path = "models/weights.json"  # output: the trained weights',
        TRAIN,
    )
    workers.start()
    trained = _run_job(runs_api, notebook, {})
    run_id = trained["mlflow_run_id"]
    client = MlflowClient(job_env["MLFLOW_TRACKING_URI"])
    name = f"weights-{job_env['JOBRUNNER_QUEUE_NAME']}"
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/notebook", run_id=run_id).version

    # the checkout moves on: other data in the workspace and no DVC cache; the remote still has the data
    (project / "data" / "train.csv").unlink()
    (project / "data" / "train.csv").write_text("a,b,y\n1,1,1\n")
    shutil.rmtree(project / ".dvc" / "cache")

    job = _verify(runs_api, run_id)
    v = job["verification"]
    assert v["reproduced"] is True, v["differences"]
    assert v["differences"] == [] and v["metrics"]["loss"]["recorded"] == v["metrics"]["loss"]["now"]
    assert v["fetched_inputs"] == {"data/train.csv": "DVC remote 'store'"}
    assert set(v["outputs"]) == {"models/weights.json"} and v["mismatched_outputs"] == []
    assert v["cells_compared"] == 2 and v["cells"] == []
    assert v["model_versions"] == [f"{name}/{version}"]
    assert job["mlflow_run_id"] == v["verification_run_id"] != run_id
    assert (project / "data" / "train.csv").read_text() == "a,b,y\n1,1,1\n"  # the workspace is untouched

    tags = client.get_model_version(name, version).tags
    assert tags["reproduced"] == "true" and tags["reproduced.differences"] == "none"
    assert tags["reproduced.run"] == v["verification_run_id"]
    report = client.download_artifacts(v["verification_run_id"], "verification", str(tmp_path / "report"))
    assert json.loads((Path(report) / "verification.json").read_text())["reproduced"] is True
    assert '<h1 style="color:#15803d">Reproduced</h1>' in (Path(report) / "verification.html").read_text()
    assert client.get_run(run_id).data.tags[VERIFICATION_TAG] == "reproduced"

    from jobrunner.cli import main

    status = CliRunner().invoke(main, ["status", job["id"]])
    assert status.exit_code == 0, status.output
    assert f"verification: REPRODUCED as run {v['verification_run_id']}" in status.output
    assert f"model version {name}/{version}: tagged reproduced=true" in status.output


def test_an_unseeded_notebook_is_not_reproduced_naming_the_metric_and_the_cell(job_env, workers, runs_api):
    from mlflow.tracking import MlflowClient

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    notebook = _notebook(
        project,
        "unseeded.ipynb",
        "label = 'x'",
        "import random\nfrom jobrunner.notebook import log_metrics\nvalue = random.random()\n"
        "log_metrics({'value': value})\nprint(label, 'value', value)",
    )
    workers.start()
    noisy = _run_job(runs_api, notebook, {"label": "noisy"})
    client = MlflowClient(job_env["MLFLOW_TRACKING_URI"])
    name = f"noisy-{job_env['JOBRUNNER_QUEUE_NAME']}"
    client.create_registered_model(name)
    version = client.create_model_version(
        name, f"runs:/{noisy['mlflow_run_id']}/notebook", run_id=noisy["mlflow_run_id"]
    ).version

    from jobrunner.cli import main

    queued = CliRunner().invoke(main, ["verify", noisy["mlflow_run_id"], "--queue", "--json"])
    assert queued.exit_code == 0, queued.output
    job_id = json.loads(queued.stdout)["id"]
    done = wait_state(job_id, {"SUCCEEDED", "FAILED", "CANCELLED"}, 180)
    v = runs_api.get(f"/v1/jobs/{done.id}", headers=READ).json()["verification"]
    assert v["reproduced"] is False
    assert v["mismatched"] == ["value"] and v["differences"][0].startswith("metric value: ")
    assert [c["index"] for c in v["cells"]] == [1] and "cell 1 (`import random`)" in v["differences"][1]
    tags = client.get_model_version(name, version).tags
    assert tags["reproduced"] == "false"
    assert "metric value" in tags["reproduced.differences"] and "cell 1" in tags["reproduced.differences"]


def test_the_diff_route_names_a_changed_parameter_metric_code_cell_and_text_output(job_env, runs_api):
    from jobrunner.execution.executor import execute

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    first = execute("notebooks/ok.ipynb", {"x": 1})
    path = project / "notebooks" / "ok.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("total = x + y", "total = x + y + 100")
    nbformat.write(nb, path)
    second = execute("notebooks/ok.ipynb", {"x": 3})

    r = runs_api.get(f"/v1/runs/{first.run_id}/diff/{second.run_id}", headers=READ)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["identical"] is False
    kinds = [c["kind"] for c in d["changes"]]
    # most relevant first; both cells print another total (log_metrics prints what it logs)
    assert kinds == ["metric", "parameter", "code", "text_output", "text_output"], d["changes"]
    assert d["changes"][0] == {"kind": "metric", "name": "total", "a": 3.5, "b": 105.5}
    assert d["changes"][1] == {"kind": "parameter", "name": "x", "a": "1", "b": "3"}
    assert "+total = x + y + 100" in d["changes"][2]["b"]
    assert (
        d["text_outputs"][0]["cell"] == "cell 2 (`from jobrunner.notebook import log_metrics, project_path`)"
    )
    assert (d["text_outputs"][0]["a"], d["text_outputs"][0]["b"]) == ("sum 3.5\n", "sum 105.5\n")
    assert [c["index"] for c in d["text_outputs"]] == [2, 3]
    assert d["environment"] == {} and d["a"]["environment"]["jobrunner"]  # same environment, recorded

    page = runs_api.get(f"/v1/runs/{first.run_id}/diff/{second.run_id}/html", headers=READ)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Differences, most relevant first" in page.text and "sum 105.5" in page.text
    assert page.text.index("total") < page.text.index("text output")
    assert runs_api.get(f"/v1/runs/{first.run_id}/diff/{second.run_id}").status_code == 401  # a read key


def test_unknown_and_malformed_run_ids_are_a_404_and_a_422_not_a_500(job_env, runs_api):
    unknown = "0" * 32
    r = runs_api.post(f"/v1/runs/{unknown}/verify", headers=WRITE)
    assert r.status_code == 404 and f"no MLflow run {unknown}" in r.json()["detail"], r.text
    r = runs_api.get(f"/v1/runs/{unknown}/diff/{'1' * 32}", headers=READ)
    assert r.status_code == 404 and "no MLflow run" in r.json()["detail"], r.text
    for bad in (
        runs_api.post("/v1/runs/not-a-run/verify", headers=WRITE),
        runs_api.get(f"/v1/runs/{unknown}/diff/zz", headers=READ),
        runs_api.get(f"/v1/runs/x/diff/{unknown}/html", headers=READ),
        runs_api.post(f"/v1/runs/{unknown}/verify", json={"rtol": 2}, headers=WRITE),
    ):
        assert bad.status_code == 422, bad.text
        assert bad.json()["detail"]
    assert runs_api.post(f"/v1/runs/{unknown}/verify", headers=READ).status_code == 403  # a write key
    from jobrunner.jobs import list_jobs

    assert list_jobs().total == 0  # nothing was queued
