"""`jobrunner run` and `jobrunner params` as a user calls them: a real process, exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JOBRUNNER = [sys.executable, "-m", "jobrunner.cli"]


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*JOBRUNNER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **(env or {})},
    )


def test_unknown_parameter_exits_2_naming_it_and_the_valid_ones() -> None:
    proc = cli("run", "notebooks/03_train.ipynb", "-p", "no_such_param", "1")
    assert proc.returncode == 2
    assert "unknown parameter 'no_such_param'" in proc.stderr
    valid = proc.stderr.split("valid parameters: ", 1)[1].split("\n", 1)[0].split(", ")
    assert valid == sorted(valid) and {"C", "cv_folds", "learning_rate", "max_depth"} <= set(valid)


def test_wrong_type_exits_2_naming_the_type() -> None:
    proc = cli("run", "notebooks/03_train.ipynb", "-p", "n_estimators", "abc")
    assert proc.returncode == 2
    assert "parameter 'n_estimators' must be int, got 'abc'" in proc.stderr


def test_missing_notebook_exits_2() -> None:
    proc = cli("run", "notebooks/nope.ipynb")
    assert proc.returncode == 2 and "notebook not found: notebooks/nope.ipynb" in proc.stderr


def test_params_lists_the_contract_as_json() -> None:
    proc = cli("params", "notebooks/03_train.ipynb", "--json")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    by_name = {p["name"]: p for p in schema["parameters"]}
    assert by_name["n_estimators"]["type"] == "int" and by_name["n_estimators"]["default"] == 100
    assert by_name["max_depth"]["optional"] is True


def test_run_json_success_and_failure(project: Path) -> None:
    env = {"JOBRUNNER_PROJECT_DIR": str(project)}
    params_file = project / "p.yaml"
    params_file.write_text("x: 2\nitems: [1, 2, 3]\n")
    ok = cli(
        "run", "notebooks/ok.ipynb", "-f", str(params_file), "-p", "y", "1", "--json", cwd=project, env=env
    )
    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["status"] == "succeeded"
    assert result["parameters"] == {"x": 2, "items": [1, 2, 3], "y": 1.0}
    assert result["metrics"]["total"] == 3.0 and result["metrics"]["n_items"] == 3.0
    assert Path(result["output_path"]).is_file() and result["mlflow_run_id"]

    bad = cli("run", "notebooks/raises.ipynb", "--json", cwd=project, env=env)
    assert bad.returncode == 1
    failed = json.loads(bad.stdout)
    assert failed["status"] == "failed"
    assert failed["error"]["ename"] == "ValueError" and failed["error"]["cell_index"] == 2
    assert Path(failed["output_path"]).is_file()
