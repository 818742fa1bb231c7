"""The pipeline against production services: DVC data round trip through S3, MLflow server on PostgreSQL
with S3 artifacts, the champion loading in another process, executed notebooks in the artifact store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from prodkit import BIN, MODEL_NAME, Pipeline, Services, base_env, configure_s3_remote, run

from jobrunner.tags import (
    DATA_OUTPUT_PREFIX,
    DVC_LOCK_MD5_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    STAGE_TAG,
    TRIGGER_TAG,
)

pytestmark = [pytest.mark.production, pytest.mark.services, pytest.mark.slow]

DATA = (
    "data/raw/dataset.parquet",
    "data/prepared/train.parquet",
    "data/prepared/holdout.parquet",
    "models/model",
)


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_pipeline_ran_every_stage_against_the_server(pipeline: Pipeline) -> None:
    for stage in ("ingest", "prepare", "train", "evaluate"):
        assert f"stage {stage}: succeeded" in pipeline.repro.stderr
    assert "MLflow run" in pipeline.repro.stderr
    assert "pushed" in pipeline.push.stdout


def test_fresh_clone_pulls_from_s3_and_repro_is_a_no_op(
    pipeline: Pipeline, services: Services, tmp_path: Path
) -> None:
    # the data really is in the S3 bucket, content-addressed by the hashes in dvc.lock
    keys = {o["Key"] for o in services.s3().list_objects_v2(Bucket=services.dvc_bucket)["Contents"]}
    raw_md5 = lock_outs(pipeline.clone)["data/raw/dataset.parquet"]
    assert f"store/files/md5/{raw_md5[:2]}/{raw_md5[2:]}" in keys

    fresh = tmp_path / "fresh"
    env = base_env()  # no AWS_* at all: the remote's endpoint and keys come from .dvc/config.local
    run(["git", "clone", "-q", str(pipeline.clone), str(fresh)], cwd=tmp_path, env=env)
    assert not (fresh / "data/raw/dataset.parquet").exists()
    configure_s3_remote(fresh, services, env)
    committed = run(["git", "show", "HEAD:.dvc/config"], cwd=fresh, env=env).stdout
    assert "secret" not in committed and services.s3_url not in committed  # credentials never committed
    assert run(["git", "status", "--porcelain"], cwd=fresh, env=env).stdout == ""

    pull = run([str(BIN / "dvc"), "pull"], cwd=fresh, env=env)
    assert "added" in pull.stdout or "A " in pull.stdout
    from jobrunner.execution.hashing import hash_path

    outs = lock_outs(fresh)
    for path in DATA:
        assert hash_path(Path(path), fresh).md5 == outs[path], path
    repro = run([str(BIN / "dvc"), "repro"], cwd=fresh, env=env)
    assert "Data and pipelines are up to date." in repro.stdout + repro.stderr
    assert "Running stage" not in repro.stdout + repro.stderr
    status = run([str(BIN / "dvc"), "status", "--cloud"], cwd=fresh, env=env)
    assert "Cache and remote 's3' are in sync." in status.stdout


def test_champion_loads_in_another_process_through_the_server(pipeline: Pipeline, services: Services) -> None:
    # Only the tracking URI: models and artifacts come through the MLflow server, not from S3 directly.
    env = base_env(MLFLOW_TRACKING_URI=services.tracking_uri)
    code = (
        "import json, sys, mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{MODEL_NAME}@champion')\n"
        "df = pd.read_parquet(sys.argv[1])\n"
        "X, y = df.drop(columns=['target']).astype('float64'), df['target']\n"
        "pred = [int(p) for p in model.predict(X)]\n"
        "print(json.dumps({'n': len(pred), 'classes': sorted(set(pred)),"
        " 'accuracy': float((pd.Series(pred) == y.values).mean())}))\n"
    )
    holdout = pipeline.clone / "data/prepared/holdout.parquet"
    proc = run([sys.executable, "-c", code, str(holdout)], cwd=pipeline.clone, env=env, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == len(__import__("pandas").read_parquet(holdout))
    assert result["classes"] == [0, 1]
    assert result["accuracy"] > 0.85


def _champion(services: Services):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=services.tracking_uri)
    return client, client.get_model_version_by_alias(MODEL_NAME, "champion")


def test_executed_notebook_downloads_and_is_a_valid_notebook(
    pipeline: Pipeline, services: Services, tmp_path: Path
) -> None:
    client, version = _champion(services)
    run_ = client.get_run(version.run_id)
    assert run_.data.tags[STAGE_TAG] == "train"
    assert run_.info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server into S3
    names = sorted(f.path for f in client.list_artifacts(version.run_id, "notebook"))
    assert names == ["notebook/03_train.html", "notebook/03_train.ipynb"]
    local = Path(client.download_artifacts(version.run_id, "notebook/03_train.ipynb", str(tmp_path)))
    nb = nbformat.read(local, as_version=4)
    nbformat.validate(nb)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "n_estimators = 10" in injected[0].source  # the ci profile's value
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert f"from run {version.run_id}" in text
    # ... and the bytes are in the S3 bucket behind the server
    keys = [o["Key"] for o in services.s3().list_objects_v2(Bucket=services.mlflow_bucket)["Contents"]]
    assert any(k.endswith(f"{version.run_id}/artifacts/notebook/03_train.ipynb") for k in keys), keys[:20]


def test_runs_record_hashes_that_match_dvc_lock(pipeline: Pipeline, services: Services) -> None:
    """Every output hash the stage runs recorded (files and the models/model directory) is in dvc.lock."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=services.tracking_uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("notebooks").experiment_id],
        filter_string=f"tags.`{TRIGGER_TAG}` = 'dvc'",
    )
    by_stage = {r.data.tags[STAGE_TAG]: r for r in runs}
    assert set(by_stage) == {"ingest", "prepare", "train", "evaluate"}
    outs = lock_outs(pipeline.clone)
    recorded = {
        k.removeprefix(DATA_OUTPUT_PREFIX): v
        for r in runs
        for k, v in r.data.tags.items()
        if k.startswith(DATA_OUTPUT_PREFIX)
    }
    assert recorded["models/model"].endswith(".dir")
    for path, md5 in recorded.items():
        if path in outs:
            assert md5 == outs[path], path
    assert {"data/raw/dataset.parquet", "models/model", "data/prepared/train.parquet"} <= recorded.keys()
    for run_ in runs:
        assert run_.data.tags[GIT_COMMIT_TAG] == pipeline.start_commit
        # a clean checkout stays clean while `dvc repro` rewrites dvc.lock and metrics between stages
        assert run_.data.tags[GIT_DIRTY_TAG] == "false", run_.data.tags[STAGE_TAG]
        assert run_.data.tags[DVC_LOCK_MD5_TAG]
