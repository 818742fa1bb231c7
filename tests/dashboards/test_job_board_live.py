"""The job board's schedules (next run, last outcome, pause/resume) and a running job's live output, against
a real API (uvicorn), a real worker and, for the page, Voila in headless Chromium."""

from __future__ import annotations

import html
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboards.client import PlatformClient
from tests.dashboards.conftest import SHOTS, WRITE_KEY, wait_for


@pytest.fixture(scope="module")
def worker(api, model_store, tmp_path_factory) -> Iterator[subprocess.Popen]:
    """An embedded worker (the API's SQLite job store) running jobs for the whole module."""
    client = PlatformClient(api.url, WRITE_KEY)
    for queued in client.jobs(state="QUEUED", limit=100)["items"]:  # earlier modules' jobs: not for this one
        client.cancel(queued["id"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "JOBRUNNER_"))}
    env.update(
        {
            "JOBRUNNER_PROJECT_DIR": str(model_store.project),
            "MLFLOW_TRACKING_URI": model_store.tracking_uri,
            "JOBRUNNER_WORKER_POLL_INTERVAL": "0.3",
            "JOBRUNNER_LOG_JSON": "false",
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        }
    )
    log = (tmp_path_factory.mktemp("board-worker") / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "jobrunner"), "worker"],
        env=env,
        cwd=model_store.project,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def _schedule(client: PlatformClient, prefix: str = "nightly") -> dict:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    return client._call(
        "POST",
        "/v1/schedules",
        json={
            "name": name,
            "notebook": "notebooks/ok.ipynb",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
        },
    )


def _row(board, name: str) -> list:
    cells = board.schedules.rows.children
    start = next(i for i, c in enumerate(cells) if f"<b>{name}</b>" == getattr(c, "value", ""))
    return list(cells[start : start + 7])


def test_job_board_lists_schedules_with_next_run_and_last_outcome_and_pauses_them(api, worker):
    from dashboards.job_board import JobBoard
    from dashboards.settings import Settings

    client = PlatformClient(api.url, WRITE_KEY)
    sched = _schedule(client)
    run = client._call("POST", f"/v1/schedules/{sched['id']}/run-now")
    wait_for(lambda: client.schedule(sched["id"])["runs"][0]["job_state"] == "SUCCEEDED", 120, "the run")
    board = JobBoard(client, Settings(_env_file=None), autorefresh=False)
    row = _row(board, sched["name"])
    assert (
        "notebooks/ok.ipynb" in row[1].value
        and "30 2 * * *" in row[2].value
        and "Europe/Berlin" in row[2].value
    )
    next_run = sched["next_run_at"][:16].replace("T", " ")
    assert next_run in row[3].value  # the API's next slot, in UTC
    assert "SUCCEEDED" in row[4].value and run["job_id"] in row[4].value and "manual" in row[4].value
    assert "active" in row[5].value and row[6].description == "Pause"

    row[6].click()
    assert "is paused" in board.message.value, board.message.value
    assert client.schedule(sched["id"])["paused"] is True
    row = _row(board, sched["name"])
    assert "paused" in row[5].value and row[6].description == "Resume" and row[3].value == "-"
    row[6].click()
    assert client.schedule(sched["id"])["paused"] is False
    row = _row(board, sched["name"])
    assert row[6].description == "Pause" and row[3].value != "-"


def test_job_board_shows_the_running_jobs_output_as_it_is_printed(api, worker):
    from dashboards.job_board import JobBoard
    from dashboards.settings import Settings

    client = PlatformClient(api.url, WRITE_KEY)
    board = JobBoard(client, Settings(_env_file=None), autorefresh=False)
    board.notebook.value = "notebooks/ticks.ipynb"
    board.inputs["n"].value = 4
    board.inputs["interval"].value = 1.0
    board.submit.click()
    assert "Queued job" in board.message.value, board.message.value
    job_id = board.live.job_id
    assert job_id and job_id in board.message.value

    def printed(line: str) -> bool:
        return line in html.unescape(board.live.output.value)

    wait_for(lambda: printed("tick 0"), 120, "the first line on the board")
    state_then = next(j for j in client.jobs(limit=10)["items"] if j["id"] == job_id)["state"]
    assert state_then == "RUNNING"  # shown while the job runs, not after
    assert not printed("tick 3")
    assert board.live.wait(60)
    assert printed("tick 3") and printed("[text/html output: see the executed notebook]")
    assert board.live.state == "SUCCEEDED" and "SUCCEEDED" in board.live.header.value
    # the Watch button of a row follows that job (here: already finished, its whole output at once)
    index = next(i for i, c in enumerate(board.rows.children) if job_id in getattr(c, "value", ""))
    watch = board.rows.children[index + 9]
    assert "dash-watch" in watch._dom_classes
    board.live.watch("00000000-0000-4000-8000-000000000000")
    board.live.wait(30)
    assert "no job" in html.unescape(board.live.header.value).lower(), board.live.header.value
    watch.click()
    assert board.live.wait(30) and printed("tick 2")


def test_job_board_page_shows_live_output_and_schedules_in_a_browser(voila, browser, api, worker):
    client = PlatformClient(api.url, WRITE_KEY)
    sched = _schedule(client, "zz-board")  # listed last (by name)
    job = client.submit("notebooks/ticks.ipynb", {"n": 30, "interval": 1.0})
    wait_for(
        lambda: next(j for j in client.jobs(limit=10)["items"] if j["id"] == job["id"])["state"] == "RUNNING",
        120,
        "the job to run",
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    try:
        page.goto(f"{voila}/voila/render/job_board.ipynb", timeout=120_000, wait_until="domcontentloaded")
        page.wait_for_selector(".dash-live", timeout=120_000)
        page.wait_for_function(
            "document.querySelector('.dash-live').innerText.includes('tick 1')", timeout=60_000
        )
        first = page.inner_text(".dash-live")
        later = f"tick {max(int(t.split()[1]) for t in first.splitlines() if t.startswith('tick ')) + 2}"
        assert later not in first and int(later.split()[1]) < 30
        page.wait_for_function(
            "line => document.querySelector('.dash-live').innerText.includes(line)", arg=later, timeout=60_000
        )  # the page updates while the job runs
        assert job["id"] in page.inner_html("h3:has(.dash-live-state)")
        page.wait_for_selector(f"text={sched['name']}", timeout=30_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "job_board_live.png"), full_page=True)
        row_button = page.locator(".dash-pause").last
        row_button.click()
        page.wait_for_selector(f"text=Schedule {sched['name']} is paused", timeout=30_000)
        assert client.schedule(sched["id"])["paused"] is True
    finally:
        page.close()
        client.cancel(job["id"])


def _output_notebook(project: Path) -> str:
    """A notebook with an output parameter (`# output:`), in the API's project."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('result_path = "results/board.txt"  # output: the result\nn = 1')
    params.metadata["tags"] = ["parameters"]
    code = nbformat.v4.new_code_cell(
        "from jobrunner.notebook import project_path\n"
        "project_path(result_path).parent.mkdir(parents=True, exist_ok=True)\n"
        "project_path(result_path).write_text(str(n * 21))"
    )
    nb.cells = [params, code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    (project / "notebooks").mkdir(exist_ok=True)
    nbformat.write(nb, project / "notebooks" / "board_output.ipynb")
    return "notebooks/board_output.ipynb"


def test_job_board_shows_a_jobs_outputs_and_a_cache_hit(api, worker, model_store):
    from dashboards.job_board import JobBoard
    from dashboards.settings import Settings

    client = PlatformClient(api.url, WRITE_KEY)
    notebook = _output_notebook(model_store.project)
    n = int(uuid.uuid4().int % 1000) + 2  # parameters no earlier run had: the first job executes
    first = client.submit(notebook, {"n": n})
    wait_for(lambda: client._call("GET", f"/v1/jobs/{first['id']}")["state"] == "SUCCEEDED", 120, "the job")
    second = client.submit(notebook, {"n": n})  # the same code, parameters and inputs: a cache hit
    done = client._call("GET", f"/v1/jobs/{second['id']}")
    assert done["state"] == "SUCCEEDED" and done["cached_from"] == first["id"]
    assert not (model_store.project / "results" / "board.txt").exists()  # the job's own folder, not ours

    board = JobBoard(client, Settings(_env_file=None), autorefresh=False)
    cells = board.rows.children
    width = board.COLUMNS  # cells per row of the board's grid
    row = {
        jid: cells[i : i + width]
        for i, c in enumerate(cells)
        for jid in (first["id"], second["id"])
        if jid in getattr(c, "value", "") and "dash-id" in c.value and i % width == 0
    }
    state_cell = html.unescape(row[second["id"]][2].value)
    assert "cached from" in state_cell and first["id"] in state_cell
    assert "1 output(s)" in html.unescape(row[first["id"]][2].value)
    assert "result_path: results/board.txt" in html.unescape(row[first["id"]][2].value)  # the hover
