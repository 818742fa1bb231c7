"""/v1/schedules against a real uvicorn on PostgreSQL (jobs to RabbitMQ): every operation, the scopes, a 422
naming an invalid cron expression, time zone, kernel or parameter, 404/409. schemathesis with every check
covers the schedule operations (10 examples each) in test_contract.py's run, on the same server
(the session's fuzz_target)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.serve.conftest import READ, WRITE

pytestmark = pytest.mark.services


def body(name: str, **extra) -> dict:
    return {
        "name": name,
        "notebook": "notebooks/ok.ipynb",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        **extra,
    }


def problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:800])
    data = r.json()
    assert isinstance(data["detail"], str) and data["detail"]
    return data


def test_create_show_pause_resume_run_now_delete(fuzz_api):
    r = fuzz_api.post(
        "/v1/schedules",
        json=body("nightly", parameters={"x": 5}, max_concurrent_runs=1, catchup="skip", timeout_seconds=600),
        headers=WRITE,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    sid = created["id"]
    assert created["cron"] == "30 2 * * *" and created["timezone"] == "Europe/Berlin"
    assert created["kernel_name"] == "python3" and created["parameters"] == {"x": 5}
    assert created["next_run_at"].endswith(("00:30:00Z", "01:30:00Z"))  # 02:30 Berlin time, in UTC
    listed = fuzz_api.get("/v1/schedules", headers=READ).json()
    assert sid in [s["id"] for s in listed["items"]] and listed["total"] >= 1
    assert fuzz_api.get(f"/v1/schedules/{sid}", headers=READ).json()["runs"] == []

    paused = fuzz_api.post(f"/v1/schedules/{sid}/pause", headers=WRITE).json()
    assert paused["paused"] is True and paused["next_run_at"] is None
    run = fuzz_api.post(f"/v1/schedules/{sid}/run-now", headers=WRITE)
    assert run.status_code == 201, run.text
    assert run.json()["status"] == "submitted" and run.json()["trigger"] == "manual"
    job = fuzz_api.get(f"/v1/jobs/{run.json()['job_id']}", headers=READ).json()
    assert (
        job["state"] == "QUEUED" and job["submitter"] == "schedule:nightly" and job["parameters"] == {"x": 5}
    )
    busy = problem(fuzz_api.post(f"/v1/schedules/{sid}/run-now", headers=WRITE), 409)
    assert "max_concurrent_runs=1 reached" in busy["detail"]
    shown = fuzz_api.get(f"/v1/schedules/{sid}", params={"runs": 5}, headers=READ).json()
    assert [x["job_id"] for x in shown["runs"]] == [run.json()["job_id"]]
    assert shown["runs"][0]["job_state"] == "QUEUED"

    resumed = fuzz_api.post(f"/v1/schedules/{sid}/resume", headers=WRITE).json()
    assert resumed["paused"] is False and resumed["next_run_at"]
    assert fuzz_api.delete(f"/v1/schedules/{sid}", headers=WRITE).json()["id"] == sid
    problem(fuzz_api.get(f"/v1/schedules/{sid}", headers=READ), 404)
    problem(fuzz_api.delete(f"/v1/schedules/{sid}", headers=WRITE), 404)
    assert fuzz_api.get(f"/v1/jobs/{run.json()['job_id']}", headers=READ).status_code == 200  # the job stays


@pytest.mark.parametrize(
    "field,value",
    [
        ("cron", "61 * * * *"),
        ("cron", "every night"),
        ("cron", "0 0 ? * *"),
        ("timezone", "Europe/Atlantis"),
        ("timezone", "../../etc/passwd"),
        ("kernel_name", "julia-1.9"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(fuzz_api, field, value):
    data = problem(fuzz_api.post("/v1/schedules", json=body("bad", **{field: value}), headers=WRITE), 422)
    locations = [p.get("location") for p in data.get("problems") or []]
    assert f"body.{field}" in locations, data
    assert field in data["detail"] or value in data["detail"], data
    if field == "kernel_name":
        assert "python3" in data["detail"]  # the installed kernels are listed


def test_parameters_and_notebook_are_checked_against_the_contract(fuzz_api):
    data = problem(
        fuzz_api.post("/v1/schedules", json=body("bad-params", parameters={"x": "five"}), headers=WRITE), 422
    )
    assert "parameter 'x' must be int" in data["detail"]
    problem(
        fuzz_api.post("/v1/schedules", json=body("bad-nb", notebook="notebooks/none.ipynb"), headers=WRITE),
        404,
    )
    assert fuzz_api.post("/v1/schedules", json=body("twice"), headers=WRITE).status_code == 201
    assert (
        "exists already"
        in problem(fuzz_api.post("/v1/schedules", json=body("twice"), headers=WRITE), 409)["detail"]
    )


def test_scopes_read_lists_write_changes(fuzz_api):
    sid = fuzz_api.post("/v1/schedules", json=body("scoped"), headers=WRITE).json()["id"]
    assert fuzz_api.get("/v1/schedules", headers=READ).status_code == 200
    assert fuzz_api.get(f"/v1/schedules/{sid}", headers=READ).status_code == 200
    problem(fuzz_api.get("/v1/schedules"), 401)
    problem(fuzz_api.post("/v1/schedules", json=body("by-reader"), headers=READ), 403)
    for action in ("pause", "resume", "run-now"):
        problem(fuzz_api.post(f"/v1/schedules/{sid}/{action}", headers=READ), 403)
    problem(fuzz_api.delete(f"/v1/schedules/{sid}", headers=READ), 403)
    problem(fuzz_api.get("/v1/schedules/not-a-uuid", headers=READ), 422)


def test_openapi_documents_the_body_per_notebook_with_time_zones_and_kernels(fuzz_api):
    doc = fuzz_api.get("/openapi.json").json()
    component = doc["components"]["schemas"]["ScheduleCreateIn"]
    variants = {v["title"]: v for v in component["oneOf"]}
    ok = variants["notebooks/ok.ipynb"]["properties"]
    assert set(ok["parameters"]["properties"]) >= {"x", "y", "label"}
    assert "Europe/Berlin" in ok["timezone"]["enum"] and "Europe/Atlantis" not in ok["timezone"]["enum"]
    assert ok["kernel_name"]["anyOf"][0]["enum"] == ["python3"]
    assert re.fullmatch(ok["cron"]["pattern"], "30 2 * * *") and not re.fullmatch(
        ok["cron"]["pattern"], "61 * * * *"
    )
    for path in ("/v1/schedules", "/v1/schedules/{schedule_id}", "/v1/schedules/{schedule_id}/run-now"):
        assert path in doc["paths"]
