"""Every pipeline notebook runs on a real kernel under nbmake, with the `ci` profile of params.yaml.

The notebooks are parameterised exactly as `python -m pipelines.stage` would (dvc.yaml meta + params.yaml
+ the ci overlay), written to a temporary project, and executed in pipeline order by `pytest --nbmake`
in a separate process, with MLflow tracking in that project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from pipelines.stage import stage_plan

ROOT = Path(__file__).resolve().parents[2]


def test_every_notebook_runs_with_the_ci_profile(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert [stages[s]["meta"]["notebook"] for s in stages] == [f"notebooks/{p.name}" for p in notebooks]

    run_dir = tmp_path / "nbmake"
    run_dir.mkdir()
    for name in stages:
        plan = stage_plan(name, tmp_path, profile="ci")
        node = parameterize_notebook(load_notebook_node(str(ROOT / plan["notebook"])), plan["parameters"])
        nbformat.write(node, run_dir / Path(plan["notebook"]).name)

    env = {
        **os.environ,
        "JOBRUNNER_PROJECT_DIR": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    for inherited in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(inherited, None)  # e.g. exported by mlflow.set_experiment() in an earlier test's fixture
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbmake",
            "--nbmake-timeout=300",
            "-p",
            "no:cacheprovider",
            "-q",
            str(run_dir),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "4 passed" in proc.stdout
    # the notebooks wrote what dvc.yaml declares
    for rel in (
        "data/raw/dataset.parquet",
        "data/prepared/train.parquet",
        "models/model/MLmodel",
        "metrics/evaluate.json",
        "plots/roc.csv",
    ):
        assert (tmp_path / rel).exists(), rel
