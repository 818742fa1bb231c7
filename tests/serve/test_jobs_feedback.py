"""Jobs over REST and feedback-driven retraining, against real PostgreSQL and RabbitMQ.

The job store and the API's own tables share one fresh PostgreSQL database (each with its own Alembic
version table); jobs are published to a RabbitMQ queue unique to the test. A missing service skips
locally and fails under CI (tests/conftest.py).
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.serve.conftest import READ, WRITE

pytestmark = pytest.mark.services


def _queued_messages(amqp_url: str, queue: str) -> list[dict]:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    found = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=False)
        if method is None:
            break
        found.append(json.loads(body))
    conn.close()  # unacked messages go back to the queue
    return found


def test_jobs_rest_lifecycle(jobs_client, amqp_url, queue_prefix):
    c = jobs_client
    r = c.post(
        "/v1/jobs",
        json={"notebook": "notebooks/ok.ipynb", "parameters": {"x": 5, "y": 1.5}, "timeout_seconds": 600},
        headers=WRITE,
    )
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "QUEUED" and job["parameters"] == {"x": 5, "y": 1.5}
    assert job["timeout_seconds"] == 600
    # published to RabbitMQ through the outbox, with the job id
    assert [m["job_id"] for m in _queued_messages(amqp_url, queue_prefix)] == [job["id"]]

    # the parameter contract is enforced before anything is queued
    bad = c.post(
        "/v1/jobs",
        json={"notebook": "notebooks/ok.ipynb", "parameters": {"x": "five", "z": 1}},
        headers=WRITE,
    )
    assert bad.status_code == 422
    assert {(p["name"], p["problem"]) for p in bad.json()["problems"]} == {("x", "type"), ("z", "unknown")}
    missing = c.post("/v1/jobs", json={"notebook": "notebooks/nope.ipynb"}, headers=WRITE)
    assert missing.status_code == 404 and "nope.ipynb" in missing.json()["detail"]
    outside = c.post("/v1/jobs", json={"notebook": "../etc/passwd.ipynb"}, headers=WRITE)
    assert outside.status_code == 422 and outside.json()["problems"][0]["location"] == "body.notebook"
    other_root = c.post("/v1/jobs", json={"notebook": "data/x.ipynb"}, headers=WRITE)
    assert other_root.status_code == 404 and "outside the notebook roots" in other_root.json()["detail"]
    for limit in (0, -5, 10**9, "soon"):
        refused = c.post(
            "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "timeout_seconds": limit}, headers=WRITE
        )
        assert refused.status_code == 422 and "timeout_seconds" in refused.text, (limit, refused.text)

    # idempotency key: the same key returns the first job
    first = c.post(
        "/v1/jobs", json={"notebook": "notebooks/sleeps.ipynb"}, headers={**WRITE, "Idempotency-Key": "k-1"}
    )
    again = c.post(
        "/v1/jobs", json={"notebook": "notebooks/sleeps.ipynb"}, headers={**WRITE, "Idempotency-Key": "k-1"}
    )
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    reused = c.post(
        "/v1/jobs",
        json={"notebook": "notebooks/sleeps.ipynb", "parameters": {"seconds": 1.0}},
        headers={**WRITE, "Idempotency-Key": "k-1"},
    )
    assert reused.status_code == 409, reused.text

    listed = c.get("/v1/jobs", params={"state": "QUEUED", "limit": 1}, headers=READ).json()
    assert listed["total"] == 2 and len(listed["items"]) == 1 and listed["limit"] == 1
    only_ok = c.get("/v1/jobs", params={"notebook": "notebooks/ok.ipynb"}, headers=READ).json()
    assert [j["id"] for j in only_ok["items"]] == [job["id"]]
    assert c.get("/v1/jobs", params={"state": "BOGUS"}, headers=READ).status_code == 422

    got = c.get(f"/v1/jobs/{job['id']}", headers=READ).json()
    assert got["id"] == job["id"] and got["progress"]["cells_done"] == 0
    unknown = "00000000-0000-4000-8000-000000000000"
    assert c.get(f"/v1/jobs/{unknown}", headers=READ).status_code == 404
    assert c.get("/v1/jobs/does-not-exist", headers=READ).status_code == 422  # not a job id at all
    nb = c.get(f"/v1/jobs/{job['id']}/notebook", headers=READ)
    assert nb.status_code == 409 and "no executed notebook" in nb.json()["detail"]  # not run yet

    cancelled = c.post(f"/v1/jobs/{job['id']}/cancel", headers=WRITE)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    assert c.post(f"/v1/jobs/{job['id']}/cancel", headers=WRITE).status_code == 409
    assert c.post(f"/v1/jobs/{unknown}/cancel", headers=WRITE).status_code == 404
    assert 'serve_job_submissions_total{outcome="submitted"} 3.0' in c.get("/metrics").text


def test_notebooks_lists_parameter_schemas(jobs_client):
    body = jobs_client.get("/v1/notebooks", headers=READ).json()
    by_name = {n["notebook"]: n for n in body["notebooks"]}
    assert set(by_name) >= {"notebooks/ok.ipynb", "notebooks/sleeps.ipynb", "notebooks/no_parameters.ipynb"}
    x = next(p for p in by_name["notebooks/ok.ipynb"]["parameters"] if p["name"] == "x")
    assert x == {
        "name": "x",
        "type": "int",
        "default": 1,
        "optional": False,
        "help": "first addend",
        "output": False,
    }
    assert by_name["notebooks/no_parameters.ipynb"]["has_parameters_cell"] is False


def _retrain_jobs(client) -> list[dict]:
    items = client.get("/v1/jobs", params={"notebook": "notebooks/ok.ipynb"}, headers=READ).json()["items"]
    return [j for j in items if (j["submitter"] or "").startswith("serve:feedback")]


def test_feedback_below_threshold_submits_exactly_one_retrain_job_per_crossing(jobs_client, model_store):
    c = jobs_client
    services = c.app.state.services
    preds = c.post("/v1/predict", json={"rows": model_store.rows[:30]}, headers=READ).json()["predictions"]
    wrong = [(p["prediction_id"], 1 - p["label"]) for p in preds]
    right = [(p["prediction_id"], p["label"]) for p in preds]

    def send(pairs):
        return [
            c.post("/v1/feedback", json={"prediction_id": pid, "label": lab}, headers=WRITE)
            for pid, lab in pairs
        ]

    # 4 wrong labels: below the 5-label minimum, nothing happens yet
    assert all(r.status_code == 201 for r in send(wrong[:4]))
    acc = c.get("/v1/feedback/accuracy", headers=READ).json()
    assert acc["labelled"] == 4 and acc["accuracy"] == 0.0 and acc["below_threshold"] is False
    # 8 more wrong labels from 4 concurrent clients: the threshold is crossed once -> one job
    threads = [threading.Thread(target=send, args=(wrong[4 + 2 * i : 6 + 2 * i],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    services.feedback.join()
    jobs = _retrain_jobs(c)
    assert len(jobs) == 1, jobs
    assert jobs[0]["parameters"]["label"] == "retrain" and jobs[0]["state"] == "QUEUED"
    acc = c.get("/v1/feedback/accuracy", headers=READ).json()
    assert acc["below_threshold"] is True and acc["retrain"]["armed"] is False
    assert acc["retrain"]["last_job_id"] == jobs[0]["id"] and acc["retrain"]["crossings"] == 1

    # accuracy recovers (10 right labels fill the window): re-armed, no new job
    assert all(r.status_code == 201 for r in send(right[12:22]))
    acc = c.get("/v1/feedback/accuracy", headers=READ).json()
    assert acc["accuracy"] == 1.0 and acc["retrain"]["armed"] is True and len(_retrain_jobs(c)) == 1
    # and falls again: the second crossing submits a second job
    send(wrong[22:25])
    services.feedback.join()
    assert len(_retrain_jobs(c)) == 2
    metrics = c.get("/metrics").text
    assert (
        'serve_retrain_jobs_submitted_total{model="breast-cancer-classifier",outcome="submitted"} 2.0'
        in metrics
    )
    assert 'serve_live_accuracy{model="breast-cancer-classifier",version="1"} 0.7' in metrics


def test_feedback_errors(jobs_client, model_store):
    c = jobs_client
    pid = c.post("/v1/predict", json={"rows": model_store.rows[:1]}, headers=READ).json()["predictions"][0][
        "prediction_id"
    ]
    assert c.post("/v1/feedback", json={"prediction_id": pid, "label": 7}, headers=WRITE).status_code == 422
    assert c.post("/v1/feedback", json={"prediction_id": pid, "label": 0}, headers=WRITE).status_code == 201
    dup = c.post("/v1/feedback", json={"prediction_id": pid, "label": 1}, headers=WRITE)
    assert dup.status_code == 409 and "already recorded" in dup.json()["detail"]
    unknown = c.post("/v1/feedback", json={"prediction_id": "f" * 32 + "-0", "label": 1}, headers=WRITE)
    assert unknown.status_code == 404
    assert (
        c.post("/v1/feedback", json={"prediction_id": "nope", "label": 1}, headers=WRITE).status_code == 422
    )
    assert c.post("/v1/feedback", json={"label": 1}, headers=WRITE).status_code == 422


def test_recent_predictions_on_postgresql(jobs_client, model_store):
    c = jobs_client
    for start in (0, 3, 6):
        assert (
            c.post(
                "/v1/predict", json={"rows": model_store.rows[start : start + 3]}, headers=READ
            ).status_code
            == 200
        )
    assert c.app.state.services.writer.flush(5)
    body = c.get("/v1/predictions", params={"limit": 5}, headers=READ).json()
    assert body["count"] == 5 and body["columns"] == model_store.features
    expected = [list(r.values()) for r in model_store.rows[6:9] + model_store.rows[3:5]]
    assert body["rows"] == expected  # newest request first, cut inside the second one
