"""End to end: `dvc repro` in a fresh clone trains, records, registers and promotes a champion.

One temporary clone of the committed repository, the `ci` profile of params.yaml, MLflow in the clone's
own SQLite store. Checks what a user sees after `make demo`: the champion alias, a no-op second run,
a parameter change re-running only the stages that depend on it (`dvc exp run -S`), and `dvc push` to
the embedded local remote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "JOBRUNNER_"))}
    env.update(
        {
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "JOBRUNNER_PARAMS_PROFILE": "ci",
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        }
    )
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def champion(clone: Path) -> tuple[int, dict[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}")
    version = client.get_model_version_by_alias("breast-cancer-classifier", "champion")
    return int(version.version), version.tags


def test_dvc_repro_from_a_fresh_clone_promotes_a_champion(clone: Path) -> None:
    proc = run([str(BIN / "dvc"), "repro"], clone)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("ingest", "prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in proc.stdout
    version, tags = champion(clone)
    assert version == 1
    assert tags["promotion.decision"] == "promoted" and "first model" in tags["promotion.reason"]
    assert float(tags["holdout_roc_auc"]) > 0.9
    evaluate = json.loads((clone / "metrics" / "evaluate.json").read_text())
    assert evaluate["holdout_roc_auc"] > 0.9
    assert "promoted" not in evaluate  # the decision depends on the registry: MLflow holds it, not DVC
    for name in ("01_ingest", "02_prepare", "03_train", "04_evaluate"):
        assert (clone / "reports" / "notebooks" / f"{name}.html").is_file()

    summary = run([sys.executable, "-m", "pipelines.summary"], clone)
    assert summary.returncode == 0, summary.stderr
    assert "Champion model: breast-cancer-classifier version 1" in summary.stdout
    assert "promotion: promoted - first model: no champion yet" in summary.stdout
    assert "reports/notebooks/04_evaluate.html" in summary.stdout


def test_second_repro_does_nothing(clone: Path) -> None:
    proc = run([str(BIN / "dvc"), "repro"], clone)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Running stage" not in proc.stdout
    assert "up to date" in proc.stdout


def test_a_parameter_change_reruns_only_dependent_stages(clone: Path) -> None:
    # max_depth, not n_estimators: the ci profile overlays n_estimators, and an unchanged model (byte-stable
    # outputs) rightly leaves the evaluate stage skipped
    proc = run([str(BIN / "dvc"), "exp", "run", "-S", "train.max_depth=3"], clone)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Running stage 'train'" in proc.stdout and "Running stage 'evaluate'" in proc.stdout
    assert "Running stage 'ingest'" not in proc.stdout and "Running stage 'prepare'" not in proc.stdout
    # the new model was registered as version 2; the alias moved only if it beat version 1
    version, tags = champion(clone)
    from mlflow.tracking import MlflowClient

    v2 = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}").get_model_version(
        "breast-cancer-classifier", "2"
    )
    assert v2.tags["promotion.decision"] in ("promoted", "kept")
    assert version == (2 if v2.tags["promotion.decision"] == "promoted" else 1)
    shown = run([str(BIN / "dvc"), "exp", "show", "--json"], clone)
    assert shown.returncode == 0 and "max_depth" in shown.stdout


def test_dvc_push_to_the_embedded_local_remote(clone: Path) -> None:
    proc = run([str(BIN / "dvc"), "push"], clone)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stored = [p for p in (clone / ".dvc-storage").rglob("*") if p.is_file()]
    assert len(stored) >= 5
