"""Alertmanager's webhook submits the retraining job once per firing alert (real PostgreSQL and RabbitMQ)."""

from __future__ import annotations

import pytest

from tests.serve.conftest import READ, READ_KEY, WRITE_KEY

pytestmark = pytest.mark.services


def payload(status: str = "firing", action: str = "retrain", fingerprint: str = "abc123") -> dict:
    return {
        "version": "4",
        "status": status,
        "receiver": "retrain",
        "groupKey": '{}:{alertname="ModelAccuracyLow"}',
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": "ModelAccuracyLow", "action": action},
                "annotations": {},
                "startsAt": "2026-11-28T03:00:00Z",
                "fingerprint": fingerprint,
            },
            {"status": "firing", "labels": {"alertname": "ApiDown"}, "startsAt": "2026-11-28T03:00:00Z"},
        ],
    }


def test_firing_retrain_alert_submits_one_job_with_a_bearer_key(jobs_client):
    c = jobs_client
    auth = {"Authorization": f"Bearer {WRITE_KEY}"}
    first = c.post("/v1/alerts/alertmanager", json=payload(), headers=auth)
    assert first.status_code == 200, first.text
    body = first.json()
    assert len(body["submitted"]) == 1 and body["ignored"] == 1
    # Alertmanager repeats the notification: the same job comes back, no second job
    again = c.post("/v1/alerts/alertmanager", json=payload(), headers=auth).json()
    assert again["submitted"] == body["submitted"]
    job = c.get(f"/v1/jobs/{body['submitted'][0]}", headers=READ).json()
    assert job["notebook"] == "notebooks/ok.ipynb" and job["submitter"] == "alertmanager:ModelAccuracyLow"
    # a resolved alert submits nothing
    resolved = c.post("/v1/alerts/alertmanager", json=payload(status="resolved"), headers=auth).json()
    assert resolved == {"submitted": [], "ignored": 2}


def test_webhook_needs_a_write_key(jobs_client):
    c = jobs_client
    assert c.post("/v1/alerts/alertmanager", json=payload()).status_code == 401
    assert (
        c.post(
            "/v1/alerts/alertmanager", json=payload(), headers={"Authorization": "Bearer nope"}
        ).status_code
        == 401
    )
    assert (
        c.post(
            "/v1/alerts/alertmanager", json=payload(), headers={"Authorization": f"Bearer {READ_KEY}"}
        ).status_code
        == 403
    )
    bad = c.post("/v1/alerts/alertmanager", json={"alerts": "x"}, headers={"X-API-Key": WRITE_KEY})
    assert bad.status_code == 422
