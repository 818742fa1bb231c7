"""`jobrunner diff`: two recorded executions compared as a user reads them (real executions, real MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from click.testing import CliRunner

from jobrunner.cli import main
from jobrunner.config import get_settings
from jobrunner.execution.executor import execute


def diff(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["diff", *args], catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


def test_parameters_metrics_data_and_code_changes_are_shown(project: Path) -> None:
    (project / "data").mkdir()
    (project / "data" / "in.csv").write_text("a\n1\n")
    first = execute("notebooks/ok.ipynb", {"x": 1, "label": "data/in.csv"})
    (project / "data" / "in.csv").write_text("a\n2\n")  # the data changes ...
    path = project / "notebooks" / "ok.ipynb"  # ... and so does the code
    nb = nbformat.read(path, as_version=4)
    nb.cells[2].source = nb.cells[2].source.replace("total = x + y", "total = x + y + 100")
    nbformat.write(nb, path)
    second = execute("notebooks/ok.ipynb", {"x": 3, "label": "data/in.csv"})

    code, out = diff(first.run_id, second.run_id)
    assert code == 1, out
    assert "parameters:\n  x: 1 -> 3" in out
    assert "total: 3.5 -> 105.5 (+102)" in out
    assert "input data/in.csv:" in out  # md5 of the input before -> after
    assert "-total = x + y\n" in out.replace("  -", "-") and "+total = x + y + 100" in out
    assert "duration_s:" in out and "(timing, not compared)" in out

    result = CliRunner().invoke(main, ["diff", first.run_id, second.run_id, "--json"])
    code, report = result.exit_code, json.loads(result.stdout)
    assert code == 1 and report["identical"] is False
    assert report["parameters"]["x"] == {"a": "1", "b": "3"}
    assert report["metrics"]["total"] == {"a": 3.5, "b": 105.5}
    assert set(report["data"]) == {"input data/in.csv"} and report["code_compared"] is True


def test_two_runs_of_the_same_code_data_and_parameters_are_identical(project: Path) -> None:
    a = execute("notebooks/ok.ipynb", {"x": 2})
    b = execute("notebooks/ok.ipynb", {"x": 2})
    code, out = diff(a.run_id, b.run_id)
    assert code == 0, out
    assert "no differences" in out and "code cells: identical" in out

    # a parameter left at its default compares as that default, and is marked as one
    assert diff(a.run_id, execute("notebooks/ok.ipynb", {"x": 2, "y": 2.5}).run_id)[0] == 0
    code, out = diff(a.run_id, execute("notebooks/ok.ipynb", {"x": 2, "y": 1.0}).run_id)
    assert code == 1 and "y: 2.5 (default) -> 1.0" in out


def test_model_versions_stand_for_their_runs_and_unknown_references_are_named(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    a = execute("notebooks/ok.ipynb", {"x": 2})
    b = execute("notebooks/ok.ipynb", {"x": 5})
    client = MlflowClient(get_settings().mlflow_tracking_uri)
    client.create_registered_model("diffed")
    version = client.create_model_version("diffed", f"runs:/{a.run_id}/model", run_id=a.run_id)
    client.set_registered_model_alias("diffed", "champion", version.version)

    code, out = diff("diffed@champion", b.run_id)
    assert code == 1 and f"a: run {a.run_id} (diffed@champion)" in out and "x: 2 -> 5" in out
    assert diff("diffed/1", a.run_id)[0] == 0

    code, out = diff("diffed@nope", b.run_id)
    assert code == 4 and "no model version diffed@nope" in out
    code, out = diff("0" * 32, b.run_id)
    assert code == 4 and "no MLflow run 00000000" in out
    code, out = diff("not a run", b.run_id)
    assert code == 4 and "neither an MLflow run id" in out
