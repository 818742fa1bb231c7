"""Reproducible first run: identical runs write byte-identical DVC outputs, so dvc.lock does not change.

What varies per run (times, run and model ids, the executed notebooks, the promotion decision) is kept in
MLflow; every DVC-tracked file must come out the same. Two fresh clones of the committed repository:
- the `ci` profile: `dvc repro`, then an unchanged `dvc repro -f`: dvc.lock and every output hash equal;
- the committed parameters, as `make demo` runs them: the committed dvc.lock and metrics are exactly
  what it produces (`git status` stays clean). When this fails after a notebook or params change,
  regenerate them from a fresh clone (docs/pipeline.md, "Reproducible outputs").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent  # the venv's dvc (was imported from the test module test_pipeline_e2e.py)

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, profile: str | None) -> subprocess.CompletedProcess[str]:
    """`cmd` in a clean environment (no MLflow/jobrunner settings of the caller, so the stages use the
    execution service as in `make demo`; `fresh_clone` stops it), with `profile` or none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "JOBRUNNER_"))}
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    if profile:
        env["JOBRUNNER_PARAMS_PROFILE"] = profile
    env["JOBRUNNER_STAGE_CACHE"] = "off"  # `dvc repro -f` here must execute again, not restore (run cache)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)


def _outs(lock: dict) -> dict[str, str]:
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_an_unchanged_forced_repro_leaves_dvc_lock_identical(fresh_clone: Path) -> None:
    clone = fresh_clone
    first = _ci(clone, [str(BIN / "dvc"), "repro"])
    lock_1 = (clone / "dvc.lock").read_text()
    metrics_1 = {p.name: p.read_text() for p in (clone / "metrics").glob("*.json")}
    second = _ci(clone, [str(BIN / "dvc"), "repro", "-f"])
    for stage in ("ingest", "prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout and f"Running stage '{stage}'" in second.stdout
    lock_2 = (clone / "dvc.lock").read_text()
    assert _outs(yaml.safe_load(lock_2)) == _outs(yaml.safe_load(lock_1))
    assert lock_2 == lock_1
    assert {p.name: p.read_text() for p in (clone / "metrics").glob("*.json")} == metrics_1
    # the run-specific parts are in MLflow: two train runs, each tagged with the same model hash
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import MODEL_MD5_TAG

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`jobrunner.stage` = 'train'",
    )
    assert len(runs) == 2 and len({r.info.run_id for r in runs}) == 2
    assert {r.data.tags[MODEL_MD5_TAG] for r in runs} == {_outs(yaml.safe_load(lock_2))["models/model"]}


def _ci(clone: Path, cmd: list[str]) -> subprocess.CompletedProcess[str]:
    proc = _run(cmd, clone, "ci")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_the_committed_lock_and_metrics_are_what_a_fresh_make_demo_produces(fresh_clone: Path) -> None:
    clone = fresh_clone
    repro = _run([str(BIN / "dvc"), "repro"], clone, None)
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    summary = _run([sys.executable, "-m", "pipelines.summary"], clone, None)
    assert summary.returncode == 0, summary.stderr
    status = subprocess.run(["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True)
    diff = subprocess.run(
        ["git", "diff", "--", "dvc.lock", "metrics"], cwd=clone, capture_output=True, text=True
    )
    assert status.stdout == "", status.stdout + diff.stdout[-3000:]
