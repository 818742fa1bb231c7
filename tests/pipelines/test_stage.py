"""dvc.yaml, params.yaml and the notebooks agree: every stage's parameters pass its notebook's contract."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from jobrunner.execution.params import read_schema
from pipelines.stage import StageError, load_params, main, stage_plan

ROOT = Path(__file__).resolve().parents[2]
STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])


@pytest.mark.parametrize("profile", [None, "ci"])
@pytest.mark.parametrize("stage", STAGES)
def test_stage_parameters_satisfy_the_notebook_contract(stage: str, profile: str | None) -> None:
    plan = stage_plan(stage, ROOT, profile)
    schema = read_schema(ROOT / plan["notebook"])
    schema.validate(plan["parameters"])  # raises ParameterError naming any mismatch
    dvc_stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    # the stage's command runs this runner; the executed notebook (run ids, timings) is NOT a DVC output,
    # so that identical runs leave dvc.lock identical - it is git-ignored and kept in the MLflow run
    assert dvc_stage["cmd"] == f"python -m pipelines.stage {stage}"
    assert plan["output_path"].startswith("reports/notebooks/")
    assert not any(str(o).startswith("reports/") for o in dvc_stage["outs"])
    ignored = subprocess.run(["git", "check-ignore", "-q", plan["output_path"]], cwd=ROOT)
    assert ignored.returncode == 0, f"{plan['output_path']} must be git-ignored"
    # every path parameter that is written is declared as an output or metric of the stage
    declared = {
        next(iter(o)) if isinstance(o, dict) else o
        for o in dvc_stage.get("outs", []) + dvc_stage.get("metrics", []) + dvc_stage.get("plots", [])
    }
    for key, value in dvc_stage["meta"]["parameters"].items():
        if (
            key.endswith(
                (
                    "output_path",
                    "train_path",
                    "holdout_path",
                    "schema_path",
                    "model_dir",
                    "model_info_path",
                    "metrics_path",
                )
            )
            and stage != "evaluate"
            or key == "metrics_path"
        ):
            assert value in declared or value in dvc_stage.get("deps", []), (stage, key)


def test_ci_profile_overlays_params() -> None:
    assert load_params(ROOT)["train"]["n_estimators"] == 100
    assert load_params(ROOT, "ci")["train"]["n_estimators"] == 10
    with pytest.raises(StageError, match="no profile 'nope'"):
        load_params(ROOT, "nope")


def test_unknown_stage_exits_2_with_the_stage_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBRUNNER_PROJECT_DIR", str(ROOT))
    from jobrunner.config import get_settings

    get_settings.cache_clear()
    try:
        assert main(["nope"]) == 2
    finally:
        get_settings.cache_clear()
    assert "no stage 'nope' in dvc.yaml; stages: ingest, prepare, train, evaluate" in capsys.readouterr().err
