"""Which upstream run `jobrunner lineage` picks when several runs wrote the same data, on the real server.

Runs are created directly in the MLflow server (no notebooks), with controlled start times and outcomes.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from prodkit import Services

from jobrunner.provenance.lineage import render, trace
from jobrunner.tags import DATA_PREFIX, OUTCOME_TAG, STAGE_TAG

pytestmark = [pytest.mark.production, pytest.mark.services]

T0 = 1_790_000_000_000  # ms; runs are spaced a minute apart from here
MINUTE = 60_000


def test_producer_is_the_latest_successful_writer_before_the_consumer(
    services: Services, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=services.tracking_uri)
    tag = uuid.uuid4().hex[:8]
    exp = client.create_experiment(f"provenance-{tag}")

    def make_run(minute: int, stage: str, status: str = "FINISHED", **data: str) -> str:
        tags = {
            STAGE_TAG: stage,
            OUTCOME_TAG: "succeeded" if status == "FINISHED" else "failed",
        }
        tags.update({f"{DATA_PREFIX}{k.replace('__', '.')}": v for k, v in data.items()})
        run = client.create_run(exp, start_time=T0 + minute * MINUTE, tags=tags, run_name=f"{stage}-{minute}")
        client.set_terminated(run.info.run_id, status=status, end_time=T0 + minute * MINUTE + 1000)
        return run.info.run_id

    out, inp = "output__data/x.parquet", "input__data/x.parquet"
    old = make_run(0, "prepare", **{out: "h1"})
    newest_before = make_run(1, "prepare", **{out: "h1"})
    make_run(2, "prepare", status="FAILED", **{out: "h1"})  # failed: never the producer
    make_run(3, "prepare", **{out: "h2"})  # other data
    consumer = make_run(4, "train", **{inp: "h1", "input__data/external.csv": "e9"})
    make_run(5, "prepare", **{out: "h1"})  # started after the consumer: cannot have fed it

    name = f"provenance-model-{tag}"
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"runs:/{consumer}/model", run_id=consumer)
    client.set_registered_model_alias(name, "champion", version.version)
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {"schema": "2.0", "stages": {"prepare": {"outs": [{"path": "data/x.parquet", "md5": "h9"}]}}}
        )
    )

    lineage = trace(
        f"{name}@champion", client=client, tracking_uri=services.tracking_uri, project_dir=tmp_path
    )

    assert lineage.run is not None and lineage.run.run_id == consumer
    x, external = sorted(lineage.run.inputs, key=lambda d: d.path != "data/x.parquet")
    assert x.produced_by is not None and x.produced_by.run_id == newest_before != old
    assert x.matches_dvc_lock is False and x.dvc_lock_md5 == "h9"
    assert external.path == "data/external.csv" and external.produced_by is None
    text = render(lineage)
    assert "input  data/x.parquet  md5 h1  (dvc.lock now has h9)" in text
    assert "input  data/external.csv  md5 e9" in text
    assert "(no recorded run wrote this hash: external or pre-platform data)" in text
    assert [s.run_id for s in lineage.stages()] == [consumer, newest_before]
