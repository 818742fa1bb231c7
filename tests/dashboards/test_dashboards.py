"""The dashboards against a real API process: the widgets' logic directly, then the Voila pages in Chromium.

The API is a real uvicorn (model in a SQLite MLflow store, embedded job store), the dashboards a real Voila
server on notebooks/dashboards, and the pages are driven by Playwright with Debian's chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboards.client import PlatformClient
from tests.conftest import ROOT, free_port
from tests.serve.conftest import READ_KEY, WRITE_KEY, ModelStore, Server, model_store, start_server  # noqa: F401

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHIFTED = "worst_area"
# Screenshots of the pages as the browser drew them (kept for a look after the run).
SHOTS = Path(os.environ.get("DASHBOARD_SCREENSHOTS", "/tmp/dashboard-screenshots"))  # the feature the tests move far out of its training range


@pytest.fixture(scope="module")
def api(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:  # noqa: F811
    server = start_server(model_store, tmp_path_factory.mktemp("dash-api"), {"SERVE_LOG_FLUSH_INTERVAL": "0.2"})
    yield server
    server.stop()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def traffic(api: Server, model_store: ModelStore) -> int:  # noqa: F811
    """300 rows drawn at random from the training data, with SHIFTED at 10x its value: one drifted feature."""
    import pandas as pd

    sample = pd.read_csv(model_store.project / model_store.data_path)[model_store.features].sample(300, random_state=7)
    sample[SHIFTED] *= 10
    rows = sample.to_dict(orient="records")
    r = httpx.post(f"{api.url}/v1/predict", json={"rows": rows}, headers={"X-API-Key": READ_KEY})
    assert r.status_code == 200, r.text
    client = PlatformClient(api.url, READ_KEY)
    wait_for(lambda: client.recent_predictions()["count"] >= len(rows), 30, "the prediction log")
    return len(rows)


def test_prediction_form_predicts_and_shows_the_apis_errors(api, model_store):  # noqa: F811
    from dashboards.forms import prediction_form

    form = prediction_form(PlatformClient(api.url, READ_KEY), defaults=model_store.rows[0])
    assert len(form.fields) == len(model_store.features)
    assert form.fields["mean_radius"].value == pytest.approx(model_store.rows[0]["mean_radius"], abs=1e-4)
    form.button.click()
    assert "Predicted class: " in form.result.value and "version 1" in form.result.value, form.result.value
    assert "prediction id" in form.result.value

    wrong = prediction_form(PlatformClient(api.url, "not-a-key"))
    assert "not valid" in wrong.result.value and "DASHBOARD_API_KEY" in wrong.result.value
    down = prediction_form(PlatformClient(f"http://127.0.0.1:{free_port()}", READ_KEY))
    assert "cannot be reached" in down.result.value


def test_monitoring_shows_accuracy_traffic_and_the_drifted_feature(api, model_store, traffic):  # noqa: F811
    import pandas as pd

    from dashboards.monitoring import monitoring
    from dashboards.reference import load_reference

    reference = pd.read_csv(model_store.project / model_store.data_path)
    board = monitoring(PlatformClient(api.url, READ_KEY), reference=reference)
    text = board.body.value
    assert "Live accuracy: no feedback labels yet" in text
    shown = re.search(r"Last (\d+) predicted rows", text)
    assert shown and int(shown.group(1)) >= traffic, text[:500]  # (plus the prediction form's row)
    first_row = text.split("<tbody><tr>", 1)[1].split("</tr>", 1)[0]
    assert SHIFTED in first_row and "drift" in first_row, first_row  # most drifted first
    assert "1 of 30 features drifted (PSI &gt; 0.25)" in text  # the others are the training data's rows

    with pytest.raises(ValueError, match="no reference data at .*DASHBOARD_REFERENCE_DATA"):
        load_reference(str(model_store.project / "data" / "missing.parquet"))
    with pytest.raises(ValueError, match="must be a .csv or .parquet"):
        load_reference("data/train.txt")


def test_job_board_submits_lists_cancels_and_explains_refusals(api):
    from dashboards.job_board import job_board

    board = job_board(PlatformClient(api.url, WRITE_KEY))
    assert "notebooks/ok.ipynb" in board.notebook.options
    assert not any("dashboards" in nb for nb in board.notebook.options)
    board.notebook.value = "notebooks/ok.ipynb"
    assert '"x"' in board.parameters.value  # the notebook's defaults, from its parameters cell

    board.parameters.value = '{"x": 2'
    board.submit.click()
    assert "not valid JSON" in board.message.value
    board.parameters.value = '{"x": "two", "nope": 1}'
    board.submit.click()
    assert "x" in board.message.value and "nope" in board.message.value and "Error" in board.message.value

    board.parameters.value = '{"x": 2}'
    board.timeout.value = 120
    board.submit.click()
    assert "Queued job" in board.message.value, board.message.value
    job_id = board.message.value.split("<code>")[1].split("</code>")[0]
    assert job_id[:8] in board.table.value and "QUEUED" in board.table.value

    board.cancel_id.value = job_id
    board.cancel.click()
    assert "is CANCELLED" in board.message.value and "CANCELLED" in board.table.value
    board.cancel.click()
    assert "Error" in board.message.value  # already finished: the API's 409 explanation


# -- the pages in a browser ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def voila(api: Server, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:  # noqa: F811
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install -y chromium); CI must run the browser tests")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    port = free_port()
    logdir = tmp_path_factory.mktemp("voila")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SERVE_", "JOBRUNNER_", "DASHBOARD_"))}
    env.update(
        {
            "DASHBOARD_API_URL": api.url,
            "DASHBOARD_API_KEY": WRITE_KEY,
            "DASHBOARD_REFERENCE_DATA": str(model_store.project / model_store.data_path),
            "JOBRUNNER_PROJECT_DIR": str(model_store.project),
            "PYTHONPATH": str(ROOT),
        }
    )
    log = (logdir / "voila.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "voila"), str(ROOT / "notebooks" / "dashboards"), "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1"],
        env=env, cwd=logdir, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url) or proc.poll() is not None, 90, "Voila to start")
        assert proc.poll() is None, (logdir / "voila.log").read_text()[-3000:]
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def browser(voila):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_voila_pages_render_and_work_in_a_browser(voila, browser, traffic):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(voila, timeout=60_000)
    for name in ("prediction_form", "monitoring", "job_board"):  # the tree lists the three dashboards
        page.get_by_text(name).first.wait_for(timeout=60_000)

    page.goto(f"{voila}/voila/render/prediction_form.ipynb", timeout=120_000)
    page.get_by_role("button", name="Predict").click(timeout=120_000)
    page.get_by_text("Predicted class:").wait_for(timeout=60_000)
    assert "version 1" in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "prediction_form.png"), full_page=True)

    page.goto(f"{voila}/voila/render/monitoring.ipynb", timeout=120_000)
    page.get_by_text("Feature drift").wait_for(timeout=120_000)
    assert SHIFTED in page.inner_text("table.dash-drift tbody tr:first-child")
    page.screenshot(path=str(SHOTS / "monitoring.png"), full_page=True)

    page.goto(f"{voila}/voila/render/job_board.ipynb", timeout=120_000)
    page.get_by_role("button", name="Submit").click(timeout=120_000)
    page.get_by_text("Queued job").wait_for(timeout=60_000)
    assert "QUEUED" in page.inner_text("table.dash-jobs")
    page.screenshot(path=str(SHOTS / "job_board.png"), full_page=True)
    assert "Traceback" not in page.inner_text("body")
