"""Jobs own their outputs, over REST: an output path inside the project is a 422 naming the parameter
unless write_workspace; the job body and the OpenAPI document carry the outputs (real PostgreSQL,
RabbitMQ; the serve tests' app)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jobrunner.support import write_outputs_notebook as _notebook
from tests.serve.conftest import READ, WRITE

pytestmark = pytest.mark.services


@pytest.fixture
def writes_notebook(jobs_client) -> Iterator[str]:
    """tests/jobrunner/test_outputs.py's notebook in the app's project, removed afterwards."""
    import shutil
    import tempfile

    from jobrunner.config import get_settings

    project = get_settings().project_dir
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "notebooks").mkdir()
        _notebook(Path(tmp))
        target = project / "notebooks" / "writes_rest.ipynb"
        shutil.copy(Path(tmp) / "notebooks" / "writes.ipynb", target)
    yield "notebooks/writes_rest.ipynb"
    target.unlink()


def test_rest_refuses_an_output_path_inside_the_project_unless_write_workspace(
    jobs_client, writes_notebook
) -> None:
    c = jobs_client
    r = c.post(
        "/v1/jobs",
        json={"notebook": writes_notebook, "parameters": {"result_path": "metrics/x.json"}},
        headers=WRITE,
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert [p["name"] for p in body["problems"]] == ["result_path"]
    assert "inside the project" in body["problems"][0]["message"]
    assert "write_workspace" in body["problems"][0]["message"]

    r = c.post(
        "/v1/jobs",
        json={
            "notebook": writes_notebook,
            "parameters": {"result_path": "metrics/x.json"},
            "write_workspace": True,
        },
        headers=WRITE,
    )
    assert r.status_code == 201, r.text
    job = c.get(f"/v1/jobs/{r.json()['id']}", headers=READ).json()
    assert job["write_workspace"] is True and job["outputs"] == [] and job["cached_from"] is None

    defaults = c.post("/v1/jobs", json={"notebook": writes_notebook, "parameters": {"n": 2}}, headers=WRITE)
    assert defaults.status_code == 201 and defaults.json()["write_workspace"] is False
    assert defaults.json()["use_cache"] is True and len(defaults.json()["cache_key"]) == 64
    forced = c.post(
        "/v1/jobs", json={"notebook": writes_notebook, "parameters": {"n": 2}, "cache": False}, headers=WRITE
    )
    assert forced.status_code == 201 and forced.json()["use_cache"] is False, forced.text

    listed = {n["notebook"]: n for n in c.get("/v1/notebooks", headers=READ).json()["notebooks"]}
    flags = {p["name"]: p["output"] for p in listed[writes_notebook]["parameters"]}
    assert flags == {"data_path": False, "result_path": True, "model_dir": True, "n": False}

    doc = c.get("/openapi.json").json()
    read = doc["components"]["schemas"]["JobRead"]["properties"]
    assert {"outputs", "write_workspace", "cached_from"} <= set(read)
    assert "JobOutputFile" in doc["components"]["schemas"]
    variant = next(
        v for v in doc["components"]["schemas"]["JobCreateIn"]["oneOf"] if v["title"] == writes_notebook
    )
    result_path = variant["properties"]["parameters"]["properties"]["result_path"]
    assert result_path["x-jobrunner-output"] is True and "needs write_workspace" in result_path["description"]
