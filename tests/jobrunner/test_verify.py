"""`jobrunner verify`: a recorded run re-executed from its recorded code, parameters and data."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from click.testing import CliRunner

from jobrunner.cli import main
from jobrunner.config import get_settings
from jobrunner.execution.executor import execute
from jobrunner.tags import VERIFICATION_TAG, VERIFIED_BY_TAG, VERIFIES_TAG


def verify(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["verify", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(get_settings().mlflow_tracking_uri)


def _write(project: Path, name: str, code: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('source = "data/in.csv"\nscale = 1.0', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(code),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, project / "notebooks" / name)
    return f"notebooks/{name}"


def test_a_deterministic_run_reproduces_from_what_was_recorded(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "in.csv").write_text("v\n1\n2\n3\n")
    notebook = _write(
        project,
        "mean.ipynb",
        (
            "from jobrunner.notebook import log_metrics, project_path\n"
            "values = [float(v) for v in project_path(source).read_text().split()[1:]]\n"
            "log_metrics({'mean': scale * sum(values) / len(values)})\n"
            "project_path('out.txt').write_text('written')"
        ),
    )
    original = execute(notebook, {"scale": 2.0})
    assert original.ok and original.metrics["mean"] == 4.0
    (project / "out.txt").unlink()
    # the checkout moves on: the notebook now computes something else; verify uses the recorded code
    _write(project, "mean.ipynb", "from jobrunner.notebook import log_metrics\nlog_metrics({'mean': -1.0})")

    code, out, err = verify(original.run_id)
    assert code == 0, out + err
    assert out.startswith(f"REPRODUCED: run {original.run_id}") and "mean: 4 -> 4" in out
    assert not (project / "out.txt").exists()  # the re-execution wrote into a scratch copy

    tags = _client().get_run(original.run_id).data.tags
    assert tags[VERIFICATION_TAG] == "reproduced"
    rerun = _client().get_run(tags[VERIFIED_BY_TAG])
    assert rerun.data.tags[VERIFIES_TAG] == original.run_id
    assert rerun.data.params["scale"] == "2.0" and rerun.data.metrics["mean"] == 4.0

    result = CliRunner().invoke(main, ["verify", original.run_id, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["metrics"]["mean"] == {
        "recorded": 4.0,
        "now": 4.0,
    }


def test_a_random_result_does_not_reproduce_and_changed_data_is_refused(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "in.csv").write_text("v\n1\n")
    notebook = _write(
        project,
        "noisy.ipynb",
        (
            "import random\nfrom jobrunner.notebook import log_metrics\n"
            "log_metrics({'score': random.random()})"
        ),
    )
    noisy = execute(notebook, {})
    code, out, err = verify(noisy.run_id)
    assert code == 1 and out.startswith("NOT REPRODUCED") and "score:" in out and "differs" in out
    assert _client().get_run(noisy.run_id).data.tags[VERIFICATION_TAG] == "not_reproduced"

    (project / "data" / "in.csv").write_text("v\n2\n")  # the input the run read has changed since
    code, out, err = verify(noisy.run_id)
    assert code == 1 and "cannot verify: input data/in.csv is not the data run" in err
    assert "dvc checkout" in err

    code, out, err = verify("0" * 32)
    assert code == 4 and "no MLflow run" in err


def test_verify_queue_queues_a_verification_job_and_status_shows_it(project: Path) -> None:
    code, out, err = verify("0" * 32, "--queue")
    assert code == 4 and f"no MLflow run {'0' * 32}" in err
    code, out, err = verify("not-a-model-ref!", "--queue")
    assert code == 4 and "neither an MLflow run id" in err

    original = execute("notebooks/ok.ipynb", {"x": 2})
    code, out, err = verify(original.run_id, "--queue", "--rtol", "0.001")
    assert code == 0, out + err
    job_id = out.split()[0]
    assert f"queued: verify run {original.run_id} (notebooks/ok.ipynb)" in out
    status = CliRunner().invoke(main, ["status", job_id])
    assert status.exit_code == 0, status.output
    assert "QUEUED  notebooks/ok.ipynb" in status.output
    assert f"verifies: MLflow run {original.run_id}" in status.output
    assert "verification: pending (rtol 0.001)" in status.output
