"""The job board's Diff button: a job's run against the previous run of the same notebook, rendered by
GET /v1/runs/{a}/diff/{b}/html of a real API (uvicorn) after a real worker ran both jobs."""

from __future__ import annotations

import html
import os
import subprocess
import sys
import uuid
from pathlib import Path

from dashboards.board_parts import previous_runs
from dashboards.client import PlatformClient
from tests.dashboards.conftest import run_burst_worker
from tests.serve.conftest import WRITE_KEY


def test_previous_runs_pairs_each_job_with_the_older_run_of_its_notebook() -> None:
    jobs = [
        {"id": "4", "notebook": "a", "mlflow_run_id": "r3"},  # newest first
        {"id": "3", "notebook": "b", "mlflow_run_id": "r2"},
        {"id": "2", "notebook": "a", "mlflow_run_id": "r3"},  # a cache hit shares its source's run
        {"id": "1", "notebook": "a", "mlflow_run_id": "r1"},
        {"id": "0", "notebook": "a", "mlflow_run_id": None},
    ]
    assert previous_runs(jobs) == {"4": "r1", "2": "r1"}


def test_the_diff_button_shows_what_changed_since_the_previous_run(api, model_store, tmp_path):
    from dashboards.job_board import JobBoard
    from dashboards.settings import Settings

    client = PlatformClient(api.url, WRITE_KEY)
    tag = uuid.uuid4().hex[:6]
    first = client.submit("notebooks/ok.ipynb", {"x": 5, "label": f"before-{tag}"})
    second = client.submit("notebooks/ok.ipynb", {"x": 6, "label": f"after-{tag}"})
    for queued in client.jobs(state="QUEUED", limit=100)["items"]:  # earlier tests' jobs: not for this worker
        if queued["id"] not in (first["id"], second["id"]):
            client.cancel(queued["id"])
    run_burst_worker(model_store, tmp_path)

    board = JobBoard(client, Settings(_env_file=None), autorefresh=False)
    cells = board.rows.children
    index = next(i for i, c in enumerate(cells) if second["id"] in getattr(c, "value", ""))
    diff = cells[index + 10]
    assert "dash-diff" in diff._dom_classes and not diff.disabled
    diff.click()
    assert "<iframe class='dash-diff-page' sandbox=''" in board.viewer.value, board.viewer.value[:500]
    page = html.unescape(board.viewer.value)
    assert "Differences, most relevant first" in page
    assert f"before-{tag} 7.5" in page and f"after-{tag} 8.5" in page  # the text output of the print cell
    assert "parameter" in page and "metric" in page


def test_a_verification_job_shows_its_verdict_under_its_state() -> None:
    from dashboards.board_parts import job_notes

    pending = {"kind": "verify", "verifies": "a" * 32, "verification": {"rtol": 1e-6}}
    assert "dash-verify" in job_notes(pending) and ": pending</div>" in job_notes(pending)
    done = {**pending, "verification": {"reproduced": False, "differences": ["metric value: 0.1 -> 0.7"]}}
    note = job_notes(done)
    assert ": NOT reproduced</div>" in note and "title='metric value: 0.1 -&gt; 0.7'" in note
    assert "dash-verify" not in job_notes({"kind": None})
