"""The dashboards against a real API process: the widgets' logic directly, then the Voila pages in Chromium.

The API is a real uvicorn (model in a SQLite MLflow store, embedded job store), the dashboards a real Voila
server on notebooks/dashboards, and the pages are driven by Playwright with Debian's chromium. Plots are
PNG images: a test decodes each one and checks it is a real, non-blank picture.
"""

from __future__ import annotations

import html
import io
import os
import re
import time

import httpx
import pytest

from dashboards.client import PlatformClient
from tests.conftest import ROOT, free_port
from tests.dashboards.conftest import SHIFTED, SHOTS, run_burst_worker, wait_for
from tests.serve.conftest import READ_KEY, WRITE, WRITE_KEY


def text(widget) -> str:
    return html.unescape(widget.value)


def assert_picture(data: bytes, what: str) -> None:
    """A decodable PNG of a real size with more than one colour (an empty widget or blank plot fails)."""
    from PIL import Image

    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{what}: not a PNG"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.width >= 300 and image.height >= 80, f"{what}: {image.size}"
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 20, f"{what}: looks blank ({len(colours)} colours)"


# -- the widgets against the API ---------------------------------------------------------------------------
def test_prediction_form_loads_an_example_predicts_and_posts_feedback(api, model_store, reference):
    from dashboards.forms import prediction_form

    form = prediction_form(PlatformClient(api.url, WRITE_KEY), reference=reference)
    assert len(form.fields) == len(model_store.features)
    assert "no feedback labels yet" in form.accuracy.value
    form.example_index.value = "7"
    form.example_button.click()
    assert "Row 7 of the training data" in form.example_note.value, form.example_note.value
    assert f"true target: <b>{reference['target'][7]}" in form.example_note.value
    assert form.fields["mean_radius"].value == pytest.approx(reference["mean_radius"][7], abs=1e-4)
    form.button.click()
    assert "Predicted class: " in form.result.value and "version 1" in form.result.value, form.result.value
    assert_picture(form.bars.value, "probability bars")

    form.thumbs_up.click()
    assert "Recorded" in form.feedback_message.value, form.feedback_message.value
    assert "Live accuracy: <b>1.000</b> over 1 labelled" in form.accuracy.value, form.accuracy.value
    assert form.thumbs_up.disabled and form.thumbs_down.disabled  # one label per prediction

    form.example_index.value = "100000"
    form.example_button.click()
    assert "row must be a number from 0 to" in form.example_note.value


def test_prediction_form_banners_when_the_api_is_down_or_refuses(api, reference):
    from dashboards.forms import prediction_form

    wrong = prediction_form(PlatformClient(api.url, "not-a-key"), reference=reference)
    assert "refused this dashboard's key" in wrong.status.value and "DASHBOARD_API_KEY" in wrong.status.value
    down = prediction_form(PlatformClient(f"http://127.0.0.1:{free_port()}", READ_KEY), reference=reference)
    assert "The API cannot be reached" in down.status.value and "make serve" in down.status.value


def test_monitoring_plots_accuracy_volume_versions_and_the_drifted_feature(
    api, model_store, traffic, reference
):
    from dashboards.monitoring import monitoring

    client = PlatformClient(api.url, WRITE_KEY)
    board = monitoring(client, reference=reference)
    assert board.banner.value == ""
    shown = re.search(r"Last (\d+) predicted rows", board.drift_summary.value)
    assert shown and int(shown.group(1)) >= traffic
    first_row = board.body.value.split("<tbody><tr>", 1)[1].split("</tr>", 1)[0]
    assert SHIFTED in first_row and "drift" in first_row, first_row  # most drifted first
    assert "1 of 30 features drifted (PSI &gt; 0.25)" in board.drift_summary.value
    assert board.feature.value == SHIFTED and board.feature.options[0] == SHIFTED
    assert "v1" in board.versions_table.value and "&#9733;" in board.versions_table.value
    for name, image in board.plots.items():
        assert_picture(image.value, name)

    before = board.summary.value
    for _ in range(3):  # feedback labels: the accuracy curve gets points
        pid = _some_prediction(api, model_store.rows[0])
        r = httpx.post(f"{api.url}/v1/feedback", json={"prediction_id": pid, "label": 0}, headers=WRITE)
        assert r.status_code == 201, r.text
    board.button.click()
    timeline = client.timeline()
    assert timeline["metric"] == "accuracy" and len(timeline["points"]) >= 3
    assert (
        timeline["threshold"] == pytest.approx(0.8) and sum(b["rows"] for b in timeline["volume"]) >= traffic
    )
    assert board.summary.value != before and "labelled predictions" in board.summary.value
    board.feature.value = "mean_radius"
    assert_picture(board.plots["distribution"].value, "distribution of mean_radius")


def _some_prediction(api, row: dict[str, float]) -> str:
    r = httpx.post(f"{api.url}/v1/predict", json={"rows": [row]}, headers={"X-API-Key": READ_KEY})
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]["prediction_id"]


def test_monitoring_versions_route_lists_the_champion_history(api, model_store):
    r = httpx.get(f"{api.url}/v1/monitoring/versions", headers={"X-API-Key": READ_KEY})
    assert r.status_code == 200, r.text
    versions = r.json()["versions"]
    assert [v["version"] for v in versions] == ["1"] and versions[0]["champion"] is True
    assert versions[0]["metrics"]["train_accuracy"] > 0.9  # the training run's metric
    assert httpx.get(f"{api.url}/v1/monitoring/timeline").status_code == 401
    bad = httpx.get(
        f"{api.url}/v1/monitoring/timeline", params={"hours": -1}, headers={"X-API-Key": READ_KEY}
    )
    assert bad.status_code == 422 and "hours" in bad.text


def test_job_board_builds_typed_inputs_from_the_schema_and_submits_them(api):
    from dashboards.job_board import job_board

    board = job_board(PlatformClient(api.url, WRITE_KEY), autorefresh=False)
    assert board.notebook.value is None and board.submit.disabled  # nothing chosen, nothing destructive
    assert "notebooks/ok.ipynb" in [v for _, v in board.notebook.options]
    assert not any("dashboards" in (v or "") for _, v in board.notebook.options)
    board.notebook.value = "notebooks/ok.ipynb"
    kinds = {name: type(field).__name__ for name, field in board.inputs.items()}
    assert kinds == {
        "x": "IntText",
        "y": "FloatText",
        "label": "Text",
        "flag": "Checkbox",
        "items": "Text",
        "out_path": "Text",
    }
    assert board.inputs["y"].value == 2.5 and board.inputs["items"].value == "[]"

    board.inputs["items"].value = "[1, 2"
    board.submit.click()
    assert "parameter 'items' must be a JSON value" in text(board.message)

    board.inputs["x"].value = 3
    board.inputs["y"].value = 0.25
    board.inputs["flag"].value = True
    board.inputs["items"].value = '["a", 2]'
    board.inputs["out_path"].value = ""
    board.timeout.value = 120
    board.submit.click()
    assert "Queued job" in board.message.value, board.message.value
    job_id = re.search(r"title=\"([0-9a-f-]{20,})\"", board.message.value).group(1)
    job = PlatformClient(api.url, READ_KEY).jobs(limit=5)["items"][0]
    assert job["id"] == job_id
    assert job["parameters"] == {
        "x": 3,
        "y": 0.25,
        "label": "sum",
        "flag": True,
        "items": ["a", 2],
        "out_path": None,
    }
    assert any(job_id in line and "QUEUED" in line for line in board.lines)

    cancel = next(c for c in board.rows.children if "dash-cancel" in c._dom_classes and not c.disabled)
    cancel.click()
    assert "is CANCELLED" in board.message.value, board.message.value
    assert any(job_id in line and "CANCELLED" in line for line in board.lines)
    index = next(i for i, c in enumerate(board.rows.children) if job_id in getattr(c, "value", ""))
    assert board.rows.children[index + 7].disabled and board.rows.children[index + 8].disabled  # never ran


def test_output_parameters_are_listed_apart_and_optional_ones_take_none():
    from dashboards.job_board import is_output, param_input, read_param

    out = {"name": "model_dir", "type": "str", "default": "models/model", "help": "output: the model"}
    depth = {"name": "max_depth", "type": "int", "default": None, "optional": True, "help": "tree depth"}
    assert is_output(out) and not is_output(depth)
    field = param_input(depth)
    assert field.placeholder == "None" and read_param(depth, field) is None
    field.value = "7"
    assert read_param(depth, field) == 7
    field.value = "seven"
    with pytest.raises(ValueError, match="parameter 'max_depth' must be a whole number, got 'seven'"):
        read_param(depth, field)


# -- the pages in a browser ------------------------------------------------------------------------------
def _pictures_in_page(page, selector: str) -> list[dict]:
    return page.eval_on_selector_all(
        selector, "els => els.map(e => ({w: e.naturalWidth, h: e.naturalHeight, src: e.src.length}))"
    )


def test_voila_pages_render_and_work_in_a_browser(voila, browser, traffic, api):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(voila, timeout=60_000)
    for name in ("prediction_form", "monitoring", "job_board"):  # the tree lists the three dashboards
        page.get_by_text(name).first.wait_for(timeout=60_000)

    # prediction form: an example row, predict, thumbs up -> the live accuracy shown changes
    page.goto(f"{voila}/voila/render/prediction_form.ipynb", timeout=120_000)
    page.get_by_role("button", name="Load example row").click(timeout=120_000)
    page.get_by_text("of the training data").wait_for(timeout=60_000)
    before = page.inner_text(".dash-live-accuracy")
    page.get_by_role("button", name="Predict").click()
    page.get_by_text("Predicted class:").wait_for(timeout=60_000)
    page.wait_for_function(
        "() => { const i = document.querySelector('img.dash-probabilities');"
        " return i && i.naturalWidth > 100 }",
        timeout=60_000,
    )
    page.get_by_role("button", name="Correct").click()
    page.get_by_text("Recorded: true label").wait_for(timeout=60_000)
    after = page.inner_text(".dash-live-accuracy")
    assert after != before and "Live accuracy:" in after, (before, after)
    assert page.inner_text("body").count("Prediction form") == 1  # the heading is not repeated
    page.screenshot(path=str(SHOTS / "prediction_form.png"), full_page=True)

    # monitoring: every plot drawn
    page.goto(f"{voila}/voila/render/monitoring.ipynb", timeout=120_000)
    page.get_by_text("Feature drift").wait_for(timeout=120_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.dash-plot')].filter(i => i.naturalWidth > 100).length >= 5",
        timeout=60_000,
    )
    pictures = _pictures_in_page(page, "img.dash-plot")
    assert len(pictures) == 5 and all(p["w"] > 300 and p["h"] > 80 for p in pictures), pictures
    assert SHIFTED in page.inner_text("table.dash-drift tbody tr:first-child")
    page.set_viewport_size({"width": 1280, "height": 3400})  # Voila scrolls inside the page: show it all
    page.screenshot(path=str(SHOTS / "monitoring.png"), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 1000})

    # job board: the form from the schema submits typed values; auto-refresh shows a job queued elsewhere
    page.goto(f"{voila}/voila/render/job_board.ipynb", timeout=120_000)
    page.get_by_text("Run a notebook").wait_for(timeout=120_000)
    assert page.locator("select").first.input_value() == ""  # no notebook chosen at first
    page.locator("select").first.select_option(label="notebooks/ok.ipynb")
    x = page.locator(".widget-inline-hbox", has_text="x").locator("input[type=number]").first
    x.fill("5")
    x.press("Enter")
    page.get_by_role("button", name="Submit").click(timeout=60_000)
    page.get_by_text("Queued job").wait_for(timeout=60_000)
    job = PlatformClient(api.url, READ_KEY).jobs(limit=1)["items"][0]
    assert job["parameters"]["x"] == 5 and job["parameters"]["y"] == 2.5, job["parameters"]
    assert job["id"] in page.content()  # the full id is in the page (hover and copy give all of it)
    other = httpx.post(
        f"{api.url}/v1/jobs",
        json={"notebook": "notebooks/ok.ipynb", "parameters": {"x": 9}},
        headers={"X-API-Key": WRITE_KEY},
    ).json()
    page.wait_for_function(f"() => document.body.innerHTML.includes('{other['id']}')", timeout=60_000)
    page.screenshot(path=str(SHOTS / "job_board.png"), full_page=True)
    assert "Traceback" not in page.inner_text("body")


def test_a_categorical_dropdown_in_the_browser_predicts(voila_mixed, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{voila_mixed}/voila/render/prediction_form.ipynb", timeout=120_000)
    island = page.locator(".widget-dropdown", has_text="island").locator("select")
    island.wait_for(timeout=300_000)
    options = island.locator("option").all_inner_texts()
    assert options == ["Biscoe", "Dream", "Torgersen"], options
    island.select_option("Torgersen")
    page.get_by_role("button", name="Predict").click()
    page.get_by_text("Predicted class:").wait_for(timeout=60_000)
    answer = page.inner_text(".dash-result")
    assert re.search(r"Predicted class: (Adelie|Chinstrap|Gentoo)", answer), answer
    page.screenshot(path=str(SHOTS / "prediction_form_categorical.png"), full_page=True)
    assert "Error" not in page.inner_text("body")


def _kernels(pid: int) -> int:
    """Live ipykernel processes under Voila (a culled kernel may linger a moment as a zombie: not counted)."""
    import psutil

    alive = 0
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(child.cmdline()):
                alive += 1
        except psutil.Error:  # gone (or a zombie) between listing and asking
            continue
    return alive


def test_voila_culls_the_kernel_of_a_closed_page(api, model_store, browser, tmp_path):
    from tests.dashboards.conftest import start_voila

    # voila.json (repo root) sets the culling; the short times here only make the test quick.
    url, proc = start_voila(
        api.url,
        model_store.project / model_store.data_path,
        model_store.project,
        tmp_path,
        ("--MappingKernelManager.cull_idle_timeout=15", "--MappingKernelManager.cull_interval=2"),
    )
    try:
        page = browser.new_page()
        page.goto(f"{url}/voila/render/prediction_form.ipynb", timeout=120_000)
        page.get_by_role("button", name="Predict").wait_for(timeout=300_000)
        assert _kernels(proc.pid) == 1
        page.close()
        wait_for(lambda: _kernels(proc.pid) == 0, 180, "Voila to cull the closed page's kernel")
        log = (tmp_path / "voila.log").read_text()
        assert "Culling kernels with idle durations > 15 seconds" in log, log[-2000:]
        assert '"cull_connected": false' in (ROOT / "voila.json").read_text()
    finally:
        proc.terminate()
        proc.wait(30)


def test_job_board_opens_the_executed_notebook_sandboxed_and_links_the_mlflow_run(api, model_store, tmp_path):
    from dashboards.job_board import JobBoard
    from dashboards.settings import Settings

    client = PlatformClient(api.url, WRITE_KEY)
    job = client.submit("notebooks/ok.ipynb", {"x": 40, "y": 2.0, "label": "answer"})
    for queued in client.jobs(state="QUEUED", limit=100)["items"]:  # earlier tests' jobs: not for this worker
        if queued["id"] != job["id"]:
            client.cancel(queued["id"])
    run_burst_worker(model_store, tmp_path)
    finished = client.jobs(limit=100)["items"]
    ran = next(j for j in finished if j["id"] == job["id"])
    assert ran["state"] == "SUCCEEDED", ran

    settings = Settings(_env_file=None, mlflow_ui_url="http://mlflow.example:5000")
    board = JobBoard(client, settings, autorefresh=False)
    html_rows = " ".join(getattr(c, "value", "") for c in board.rows.children)
    assert ran["mlflow_run_id"], ran  # the executor records each job as an MLflow run
    assert f"http://mlflow.example:5000/#/runs/{ran['mlflow_run_id']}" in html_rows
    index = next(i for i, c in enumerate(board.rows.children) if job["id"] in getattr(c, "value", ""))
    open_button = board.rows.children[index + 8]
    assert "dash-open" in open_button._dom_classes and not open_button.disabled
    cancel_button = board.rows.children[index + 7]
    assert cancel_button.disabled  # a finished job cannot be cancelled
    open_button.click()
    assert "<iframe class='dash-notebook' sandbox=''" in board.viewer.value, board.viewer.value[:300]
    assert "answer 42.0" in html.unescape(board.viewer.value)
