"""`jobrunner lineage`: from the registry alias back to the raw data hash that dvc.lock records."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from prodkit import BIN, MODEL_NAME, Pipeline, Services, base_env, free_port, invoke, run

pytestmark = [pytest.mark.production, pytest.mark.services, pytest.mark.slow]


def lineage(pipeline: Pipeline, services: Services, *args: str):
    env = base_env(MLFLOW_TRACKING_URI=services.tracking_uri)
    return run([str(BIN / "jobrunner"), "lineage", *args], cwd=pipeline.clone, env=env, timeout=120)


def raw_md5_in_lock(pipeline: Pipeline) -> str:
    lock = yaml.safe_load((pipeline.clone / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["ingest"]["outs"] if o["path"] == "data/raw/dataset.parquet"]
    return out["md5"]


@pytest.fixture(scope="module")
def champion_lineage(pipeline: Pipeline, services: Services) -> dict:
    return json.loads(lineage(pipeline, services, f"{MODEL_NAME}@champion", "--json").stdout)


def test_lineage_from_champion_reaches_the_raw_data_hash_in_dvc_lock(
    champion_lineage: dict, pipeline: Pipeline
) -> None:
    assert champion_lineage["model"]["version"] == "1"
    assert champion_lineage["model"]["aliases"] == ["champion"]
    train = champion_lineage["run"]
    assert train["stage"] == "train" and train["notebook"] == "notebooks/03_train.ipynb"
    assert train["executed_notebooks"] == [
        f"runs:/{train['run_id']}/notebook/03_train.html",
        f"runs:/{train['run_id']}/notebook/03_train.ipynb",
    ]
    assert train["git"]["commit"] == pipeline.start_commit
    assert train["parameters"]["n_estimators"] == "10"
    (train_data,) = [d for d in train["inputs"] if d["path"] == "data/prepared/train.parquet"]
    assert train_data["matches_dvc_lock"] is True
    prepare = train_data["produced_by"]
    assert prepare["stage"] == "prepare"
    (raw,) = [d for d in prepare["inputs"] if d["path"] == "data/raw/dataset.parquet"]
    ingest = raw["produced_by"]
    assert ingest["stage"] == "ingest" and ingest["notebook"] == "notebooks/01_ingest.ipynb"
    (written,) = [d for d in ingest["outputs"] if d["path"] == "data/raw/dataset.parquet"]
    assert raw["md5"] == written["md5"] == raw_md5_in_lock(pipeline)
    assert raw["matches_dvc_lock"] is True
    assert ingest["inputs"] == []  # the source of the raw data is a parameter, shown with the run
    assert ingest["parameters"]["source"] == "sklearn:breast_cancer"
    assert len(champion_lineage["evaluated_by"]) == 1


def test_lineage_text_shows_the_chain(
    pipeline: Pipeline, services: Services, champion_lineage: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(
        monkeypatch,
        pipeline.clone,
        ["lineage", f"{MODEL_NAME}@champion"],
        {"MLFLOW_TRACKING_URI": services.tracking_uri},
    )
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"model {MODEL_NAME} version 1 (@champion)")
    positions = [text.index(f"stage={s}") for s in ("train", "prepare", "ingest")]
    assert positions == sorted(positions)
    assert f"input  data/raw/dataset.parquet  md5 {raw_md5_in_lock(pipeline)}  = dvc.lock" in text
    assert f"executed notebook: runs:/{champion_lineage['run']['run_id']}/notebook/03_train.ipynb" in text


def test_lineage_by_version_is_the_same_run(
    pipeline: Pipeline, services: Services, champion_lineage: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(
        monkeypatch,
        pipeline.clone,
        ["lineage", f"{MODEL_NAME}/1", "--json"],
        {"MLFLOW_TRACKING_URI": services.tracking_uri},
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["run"] == champion_lineage["run"]


@pytest.mark.parametrize(
    ("ref", "code", "message"),
    [
        (
            "no-such-model@champion",
            4,
            f"no registered model named 'no-such-model' (registered models: {MODEL_NAME})",
        ),
        (f"{MODEL_NAME}@staging", 4, f"model '{MODEL_NAME}' has no alias 'staging' (aliases: champion)"),
        (f"{MODEL_NAME}/99", 4, f"model '{MODEL_NAME}' has no version 99"),
        ("just-a-name", 2, "cannot read model reference 'just-a-name': use MODEL_NAME@ALIAS"),
    ],
)
def test_lineage_of_an_unknown_model_says_what_exists(
    pipeline: Pipeline, services: Services, ref: str, code: int, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke(
        monkeypatch, pipeline.clone, ["lineage", ref], {"MLFLOW_TRACKING_URI": services.tracking_uri}
    )
    assert result.exception is None
    assert result.exit_code == code, result.stderr
    assert f"error: {message}" in result.stderr


def test_lineage_fails_fast_when_the_tracking_server_is_unreachable(tmp_path) -> None:
    env = base_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}", JOBRUNNER_PROJECT_DIR=str(tmp_path))
    started = time.monotonic()
    proc = run(
        [str(BIN / "jobrunner"), "lineage", f"{MODEL_NAME}@champion"], cwd=tmp_path, env=env, check=False
    )
    assert time.monotonic() - started < 20  # MLflow's own client would retry for minutes
    assert proc.returncode == 3
    assert "check MLFLOW_TRACKING_URI" in proc.stderr and "Traceback" not in proc.stderr
