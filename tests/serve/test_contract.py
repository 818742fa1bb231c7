"""The API keeps its OpenAPI contract: schemathesis with every check against a real uvicorn, and the cases
it found (issue 10 item 7, issue 16) pinned one by one.

The schemathesis run is short and seeded (a fixed number of examples per operation, one worker); the
5-minute run is `make fuzz-fuzz_api` (bench/contract_fuzz.py, result in docs/benchmarks.md). Both use the same
target: PostgreSQL for the job store and the prediction log, RabbitMQ for jobs.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.serve.conftest import READ, WRITE
from tests.serve.contract_support import CONFIG, run_schemathesis

pytestmark = pytest.mark.services


def _error(r: httpx.Response, status: int) -> dict:
    """The body of an error response: the documented ErrorBody shape, and the trace id of the request."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["trace_id"] == r.headers["x-trace-id"]
    assert set(body) <= {"detail", "problems", "trace_id"}, body
    return body


# -- schemathesis, every check ---------------------------------------------------------------------------
SCHEDULE_OPERATIONS = 7  # /v1/schedules: list, create, show, delete, pause, resume, run-now
# One run covers every operation: 5 examples each, 10 for the schedule operations (which had a second,
# separate run of their own before; the coverage phase, most of the run's time, is the same either way).
PER_OPERATION = """
[generation]
max-examples = 5

[[operations]]
include-path-regex = "^/v1/schedules"
generation.max-examples = 10
"""


@pytest.mark.slow
def test_schemathesis_all_checks_find_nothing(fuzz_target, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG.read_text() + PER_OPERATION)
    run = run_schemathesis(fuzz_target.server.url, tmp_path, seed=20261201, config=config)
    (tmp_path / "output.txt").write_text(run.output)
    print(run.summary())
    failures = "\n".join(
        line for line in run.output.splitlines() if line.startswith(("___", "- ST", "    curl"))
    )
    assert run.operations >= 20, run.output[-3000:]
    schedules = [name for name in run.tested if " /v1/schedules" in name]
    assert len(schedules) >= SCHEDULE_OPERATIONS, (schedules, run.output[-3000:])
    assert run.failures == 0 and run.returncode == 0, f"{run.summary()}\n{failures}\n{run.output[-4000:]}"
    assert fuzz_target.server.process.poll() is None, "the server died under fuzzing"
    assert "Traceback" not in fuzz_target.server.log(), fuzz_target.server.log()[-3000:]


# -- the document ----------------------------------------------------------------------------------------
def test_every_operation_documents_its_error_statuses(fuzz_api):
    doc = fuzz_api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ErrorBody"]["properties"]["detail"]["type"] == "string"
    seen = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            if op.get("security"):
                assert "401" in statuses, (method, path)
            if any("WriteKey" in s for s in op.get("security", [])):
                assert "403" in statuses, (method, path)
            if op.get("parameters") or "requestBody" in op:
                assert "422" in statuses, (method, path)
            if path.startswith("/v1/"):
                assert "503" in statuses, (method, path)
            for status, response in op["responses"].items():
                if status.startswith("4") or (status == "503" and path != "/ready"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
            seen += 1
    assert seen >= 20
    jobs = doc["paths"]["/v1/jobs"]["post"]["responses"]
    assert {"201", "401", "403", "404", "409", "422", "503"} <= set(jobs)
    # write routes carry the WriteKey scheme, read routes the read one
    assert doc["paths"]["/v1/jobs/{job_id}/cancel"]["post"]["security"] == [{"WriteKey": []}]
    assert doc["paths"]["/v1/jobs"]["get"]["security"] == [{"APIKeyHeader": []}]


def test_ids_are_patterns_in_the_schema(fuzz_api):
    doc = fuzz_api.get("/openapi.json").json()

    def param(path, method, name):
        return next(p for p in doc["paths"][path][method]["parameters"] if p["name"] == name)["schema"]

    job_id = param("/v1/jobs/{job_id}", "get", "job_id")["pattern"]
    assert re.match(job_id, "5f9ba862-6f62-4716-9a23-a8029c682e23") and not re.match(job_id, "0")
    prediction = param("/v1/predictions/{prediction_id}/lineage", "get", "prediction_id")["pattern"]
    assert re.match(prediction, "0495366995654ee5a3de3a62cd91f4e2-0") and not re.match(prediction, "0")
    assert doc["components"]["schemas"]["FeedbackIn"]["properties"]["prediction_id"]["pattern"] == prediction
    assert re.match(param("/v1/runs/{run_id}/notebook", "get", "run_id")["pattern"], "a" * 32)
    # the format is checked before anything is looked up: a malformed id is a 422 naming the parameter
    body = _error(fuzz_api.get("/v1/jobs/0", headers=READ), 422)
    assert body["problems"][0]["location"] == "path.job_id"
    _error(fuzz_api.get("/v1/jobs/5f9ba862-6f62-4716-9a23-a8029c682e23", headers=READ), 404)


def test_job_body_is_documented_per_notebook(fuzz_api):
    doc = fuzz_api.get("/openapi.json").json()
    variants = doc["components"]["schemas"]["JobCreateIn"]["oneOf"]
    by_title = {v["title"]: v for v in variants}
    ok = by_title["notebooks/ok.ipynb"]["properties"]
    assert ok["notebook"]["const"] == "notebooks/ok.ipynb"
    assert ok["parameters"]["properties"]["x"]["type"] == "integer"
    assert ok["parameters"]["additionalProperties"] is False
    other = next(v for v in variants if "other" in v["title"])
    assert "notebooks/ok.ipynb" in other["properties"]["notebook"]["not"]["enum"]
    # what the variant says is what the API does: a parameter outside it is refused, one inside accepted
    refused = _error(
        fuzz_api.post(
            "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "parameters": {"zz": 1}}, headers=WRITE
        ),
        422,
    )
    assert refused["problems"][0]["name"] == "zz"
    assert (
        fuzz_api.post(
            "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "parameters": {"x": 2}}, headers=WRITE
        ).status_code
        == 201
    )
    # JSON (and JSON Schema) make no difference between 3 and 3.0: an int parameter takes both
    r = fuzz_api.post(
        "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "parameters": {"x": 3.0}}, headers=WRITE
    )
    assert r.status_code == 201
    stored = r.json()["parameters"]["x"]
    assert stored == 3 and isinstance(stored, int), stored


# -- the cases fuzzing found -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "notebook",
    [
        "notebooks/ok\x00.ipynb",
        "notebooks/\x00",
        "../secret.ipynb",
        "/etc/passwd",
        "notebooks/./ok.ipynb",
        "notebooks//ok.ipynb",
        "notebooks\\ok.ipynb",
    ],
)
def test_path_oddities_are_4xx_naming_the_field(fuzz_api, notebook):
    body = _error(fuzz_api.post("/v1/jobs", json={"notebook": notebook}, headers=WRITE), 422)
    assert body["problems"][0]["location"] == "body.notebook"
    listed = _error(fuzz_api.get("/v1/jobs", params={"notebook": notebook}, headers=READ), 422)
    assert listed["problems"][0]["location"] == "query.notebook"


def _path_of_length(n: int) -> str:
    """A well-formed project-relative path of n characters (segments under the file system's 255)."""
    stem = "notebooks/"
    while len(stem) + 200 + len(".ipynb") < n:
        stem += "d" * 199 + "/"
    return stem + "n" * (n - len(stem) - len(".ipynb")) + ".ipynb"


def test_notebook_path_length_is_the_job_stores_limit(fuzz_api):
    from jobrunner.limits import MAX_NOTEBOOK_PATH

    too_long = _path_of_length(MAX_NOTEBOOK_PATH + 1)
    body = _error(fuzz_api.post("/v1/jobs", json={"notebook": too_long}, headers=WRITE), 422)
    assert body["problems"][0]["location"] == "body.notebook"
    listed = _error(fuzz_api.get("/v1/jobs", params={"notebook": too_long}, headers=READ), 422)
    assert listed["problems"][0]["location"] == "query.notebook"
    schedule = {"name": "long-path", "notebook": too_long, "cron": "30 2 * * *"}
    body = _error(fuzz_api.post("/v1/schedules", json=schedule, headers=WRITE), 422)
    assert "body.notebook" in [p.get("location") for p in body["problems"]]
    # the longest allowed path is looked up (it does not exist), not refused for its length
    longest = _path_of_length(MAX_NOTEBOOK_PATH)
    _error(fuzz_api.post("/v1/jobs", json={"notebook": longest}, headers=WRITE), 404)
    assert fuzz_api.get("/v1/jobs", params={"notebook": longest}, headers=READ).status_code == 200


def test_nul_byte_is_refused_by_jobrunner_itself(project):
    from jobrunner.config import get_settings
    from jobrunner.errors import NotebookNotFound
    from jobrunner.jobs import resolve_notebook

    with pytest.raises(NotebookNotFound, match="control character"):
        resolve_notebook("notebooks/ok\x00.ipynb", get_settings())


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_named(fuzz_api, literal):
    raw = '{"notebook": "notebooks/ok.ipynb", "parameters": {"label": "a long enough prefix", "y": %s}}'
    r = fuzz_api.post(
        "/v1/jobs", content=raw % literal, headers={**WRITE, "Content-Type": "application/json"}
    )
    body = _error(r, 422)
    column = raw.index("%s") + 1
    assert f"{literal} at line 1 column {column} " in body["detail"], body
    assert "JSON has no NaN or Infinity" in body["detail"]


def test_nan_is_named_in_prediction_bodies_too(fuzz_api):
    raw = '{"rows": [{"mean_radius": NaN}]}'
    r = fuzz_api.post("/v1/predict", content=raw, headers={**READ, "Content-Type": "application/json"})
    assert f"NaN at line 1 column {raw.index('NaN') + 1} " in _error(r, 422)["detail"]


def test_a_5000_digit_integer_is_not_echoed(fuzz_api):
    digits = "7" * 5000
    raw = '{"notebook": "notebooks/ok.ipynb", "parameters": {"x": ' + digits + "}}"
    r = fuzz_api.post("/v1/jobs", content=raw, headers={**WRITE, "Content-Type": "application/json"})
    body = _error(r, 422)
    assert "4300 digits" in body["detail"] and "7" * 100 not in r.text
    # a long value that does get into a message is cut too (here: an unknown parameter's name)
    r = fuzz_api.post(
        "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "parameters": {"n" * 5000: 1}}, headers=WRITE
    )
    body = _error(r, 422)
    assert "characters cut" in r.text and "n" * 100 not in r.text and len(r.text) < 3000


def test_errors_show_project_relative_paths(fuzz_api, model_store):
    r = fuzz_api.post(
        "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "parameters": {"x": "three"}}, headers=WRITE
    )
    body = _error(r, 422)
    assert str(model_store.project) not in r.text
    assert "notebooks/ok.ipynb" in body["detail"], body
    r = fuzz_api.post("/v1/jobs", json={"notebook": "notebooks/missing.ipynb"}, headers=WRITE)
    _error(r, 404)
    assert str(model_store.project) not in r.text


def test_undecodable_body_is_a_422_not_a_400(fuzz_api):
    r = fuzz_api.post(
        "/v1/jobs", content=b'{"notebook": "\xff\xfe"}', headers={**WRITE, "Content-Type": "application/json"}
    )
    assert "UTF-8" in _error(r, 422)["detail"]


def test_empty_idempotency_key_is_refused(fuzz_api):
    r = fuzz_api.post(
        "/v1/jobs", json={"notebook": "notebooks/ok.ipynb"}, headers={**WRITE, "Idempotency-Key": ""}
    )
    assert _error(r, 422)["problems"][0]["location"] == "header.Idempotency-Key"


def test_strict_types_in_bodies(fuzz_api):
    # a string or a boolean where the schema says number is refused, not converted
    for timeout in ("5", True):
        r = fuzz_api.post(
            "/v1/jobs", json={"notebook": "notebooks/ok.ipynb", "timeout_seconds": timeout}, headers=WRITE
        )
        assert _error(r, 422)["problems"][0]["location"] == "body.timeout_seconds"


def test_cancel_is_a_post_and_the_job_stays_readable(fuzz_api):
    job = fuzz_api.post("/v1/jobs", json={"notebook": "notebooks/no_parameters.ipynb"}, headers=WRITE).json()
    cancelled = fuzz_api.post(f"/v1/jobs/{job['id']}/cancel", headers=WRITE)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    assert fuzz_api.get(f"/v1/jobs/{job['id']}", headers=READ).json()["state"] == "CANCELLED"
    body = _error(fuzz_api.post(f"/v1/jobs/{job['id']}/cancel", headers=WRITE), 409)
    assert "CANCELLED" in body["detail"]
    _error(fuzz_api.post(f"/v1/jobs/{job['id']}/cancel", headers=READ), 403)
    # DELETE is not an operation of the API: 405 with every method the path has
    r = fuzz_api.delete(f"/v1/jobs/{job['id']}", headers=WRITE)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_allow_lists_every_method_of_a_path(fuzz_api):
    r = fuzz_api.request("OPTIONS", "/v1/jobs", headers=READ)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
    _error(r, 405)


def test_feedback_label_is_one_of_the_served_classes(fuzz_api):
    doc = fuzz_api.get("/openapi.json").json()
    label = doc["components"]["schemas"]["FeedbackIn"]["properties"]["label"]
    assert {"type": "string", "enum": ["0", "1"]} in label["anyOf"]


def test_alert_fields_fit_the_job_store(fuzz_api):
    alert = {
        "status": "firing",
        "labels": {"action": "retrain", "alertname": "a" * 400 + "\x00"},
        "fingerprint": "f" * 20,
        "startsAt": "2026-12-01T00:00:00Z",
    }
    r = fuzz_api.post("/v1/alerts/alertmanager", json={"alerts": [alert]}, headers=WRITE)
    assert r.status_code == 200, r.text
    job = fuzz_api.get(f"/v1/jobs/{r.json()['submitted'][0]}", headers=READ).json()
    assert job["submitter"] == "alertmanager:" + "a" * 100
    r = fuzz_api.post(
        "/v1/alerts/alertmanager", json={"alerts": [{**alert, "fingerprint": "x" * 300}]}, headers=WRITE
    )
    assert _error(r, 422)["problems"][0]["location"].endswith("fingerprint")


def test_errors_are_json_error_bodies_everywhere(fuzz_api):
    _error(fuzz_api.get("/v1/jobs"), 401)
    _error(fuzz_api.get("/v1/no-such-route", headers=READ), 404)
    body = _error(fuzz_api.get("/v1/jobs", params={"limit": "many"}, headers=READ), 422)
    assert body["problems"] == [
        {"location": "query.limit", "problem": "int_parsing", "message": body["problems"][0]["message"]}
    ]
    assert json.loads(fuzz_api.get("/openapi.json").text)["paths"]
