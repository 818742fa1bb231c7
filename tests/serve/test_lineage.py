"""Lineage: model version -> MLflow run -> executed notebook, parameters, git commit, DVC data hashes."""

from __future__ import annotations

from jobrunner.execution.hashing import file_md5
from tests.serve.conftest import READ, WRITE


def test_model_lineage_chain_resolves(app_client, model_store):
    lineage = app_client.get("/v1/model", headers=READ).json()["lineage"]
    assert lineage["model_uri"] == "models:/breast-cancer-classifier/1"
    run = lineage["run"]
    assert run["run_id"] == model_store.run_id
    assert run["git_commit"] == model_store.commit and run["stage"] == "train"
    assert run["parameters"]["C"] == 1.0 and run["parameters"]["model_type"] == "logistic_regression"
    assert run["notebook"]["path"] == "notebooks/03_train.ipynb"
    # the notebook link answers with the executed notebook's HTML
    page = app_client.get(run["notebook"]["html_url"], headers=READ)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "03_train executed" in page.text and "C=1.0" in page.text
    # the data hash names a file of the project whose bytes have exactly that md5
    (data,) = run["data"]
    assert data["path"] == model_store.data_path and data["direction"] == "input"
    assert data["md5"] == file_md5(model_store.project / data["path"])
    assert data["resolved"] is True and data["location"] == f"workspace:{data['path']}"


def test_changed_data_no_longer_resolves(model_store):
    from mlflow.tracking import MlflowClient

    from serve.lineage import HashResolver, build_lineage

    resolver = HashResolver(model_store.project)
    client = MlflowClient(model_store.tracking_uri)
    lineage = build_lineage(
        client, name="breast-cancer-classifier", version="1", alias="champion", resolver=resolver
    )
    assert lineage["run"]["data"][0]["resolved"] is True
    resolver_other = HashResolver(model_store.project / "elsewhere")
    lineage = build_lineage(
        client, name="breast-cancer-classifier", version="1", alias="champion", resolver=resolver_other
    )
    assert lineage["run"]["data"][0]["resolved"] is False


def test_prediction_lineage_returns_the_row_the_answer_and_the_chain(app_client, model_store):
    answer = app_client.post("/v1/predict", json={"rows": model_store.rows[:2]}, headers=READ)
    body = answer.json()
    pid = body["predictions"][1]["prediction_id"]
    r = app_client.get(f"/v1/predictions/{pid}/lineage", headers=READ)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["prediction"]["features"] == model_store.rows[1]
    assert out["prediction"]["label"] == body["predictions"][1]["label"]
    assert out["prediction"]["trace_id"] == answer.headers["x-trace-id"]
    assert out["prediction"]["true_label"] is None
    assert out["lineage"]["run"]["run_id"] == model_store.run_id
    assert app_client.get(out["lineage"]["run"]["notebook"]["html_url"], headers=READ).status_code == 200
    # feedback shows up in the prediction's lineage
    fb = app_client.post("/v1/feedback", json={"prediction_id": pid, "label": 1}, headers=WRITE)
    assert fb.status_code == 201, fb.text
    # one label type everywhere: the classes are integers in /v1/predict, so in feedback and lineage too
    predicted = body["predictions"][1]["label"]
    assert type(predicted) is int
    assert fb.json()["predicted_label"] == predicted and type(fb.json()["predicted_label"]) is int
    assert fb.json()["true_label"] == 1 and type(fb.json()["true_label"]) is int
    again = app_client.get(f"/v1/predictions/{pid}/lineage", headers=READ).json()["prediction"]
    assert again["true_label"] == 1 and type(again["true_label"]) is int


def test_unknown_prediction_and_run_are_404_and_garbage_ids_422(app_client):
    assert app_client.get(f"/v1/predictions/{'a' * 32}-0/lineage", headers=READ).status_code == 404
    assert app_client.get("/v1/predictions/nonsense/lineage", headers=READ).status_code == 422
    assert app_client.get(f"/v1/runs/{'b' * 32}/notebook", headers=READ).status_code == 404
    assert app_client.get("/v1/runs/not-a-run/notebook", headers=READ).status_code == 422


def test_lineage_reads_the_run_through_jobrunner_provenance(tmp_path):
    """serve's answer is jobrunner.provenance.lineage's reading of the run (the tag names of
    jobrunner.tags), with each hash located; a path recorded as missing has no entry, a run without
    jobrunner's commit tag shows MLflow's."""
    from types import SimpleNamespace as NS

    from jobrunner.execution.hashing import file_md5
    from jobrunner.tags import DATA_INPUT_PREFIX, DATA_OUTPUT_PREFIX, GIT_DIRTY_TAG, NOTEBOOK_TAG, STAGE_TAG
    from serve.lineage import HashResolver, build_lineage

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("a,b\n1,2\n")
    md5 = file_md5(tmp_path / "data" / "in.csv")
    tags = {
        f"{DATA_OUTPUT_PREFIX}models/model.pkl": "0" * 32,
        f"{DATA_INPUT_PREFIX}data/in.csv": md5,
        f"{DATA_INPUT_PREFIX}data/gone.csv": "missing",
        GIT_DIRTY_TAG: "false",
        NOTEBOOK_TAG: "notebooks/03_train.ipynb",
        STAGE_TAG: "train",
        "mlflow.source.git.commit": "c" * 40,
    }
    run = NS(
        info=NS(
            run_id="r" * 32,
            experiment_id="7",
            run_name="train-1",
            status="FINISHED",
            start_time=1_700_000_000_000,
        ),
        data=NS(
            tags=tags, params={"C": "1.0", "model_type": "logistic_regression"}, metrics={"accuracy": 0.9}
        ),
    )
    artifacts = [
        NS(path="notebook/03_train.html", is_dir=False),
        NS(path="notebook/03_train.ipynb", is_dir=False),
    ]
    client = NS(
        get_model_version=lambda name, version: NS(
            version=1, run_id=run.info.run_id, tags={}, creation_timestamp=0
        ),
        get_run=lambda run_id: run,
        list_artifacts=lambda run_id, path: artifacts,
    )
    out = build_lineage(client, name="m", version="1", alias="champion", resolver=HashResolver(tmp_path))
    got = out["run"]
    assert got["git_commit"] == "c" * 40 and got["git_dirty"] is False and got["stage"] == "train"
    assert got["parameters"] == {"C": 1.0, "model_type": "logistic_regression"}
    assert got["metrics"] == {"accuracy": 0.9} and got["run_name"] == "train-1"
    assert got["started_at"].timestamp() == 1_700_000_000
    assert got["notebook"] == {
        "path": "notebooks/03_train.ipynb",
        "html_url": f"/v1/runs/{'r' * 32}/notebook",
        "ipynb_artifact": "notebook/03_train.ipynb",
    }
    assert [(d["direction"], d["path"], d["resolved"]) for d in got["data"]] == [
        ("input", "data/in.csv", True),
        ("output", "models/model.pkl", False),
    ]
