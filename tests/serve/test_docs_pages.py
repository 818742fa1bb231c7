"""/docs and /redoc render in a real browser with no internet: every asset comes from our own server."""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlparse

import pytest

from tests.serve.conftest import start_server

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def test_docs_assets_follow_the_root_path(app_client):
    from fastapi.testclient import TestClient

    behind_proxy = TestClient(app_client.app, root_path="/api")
    page = behind_proxy.get("/docs")
    assert page.status_code == 200
    assert "/api/docs/assets/swagger-ui-bundle.js" in page.text and "/api/openapi.json" in page.text
    assert "cdn.jsdelivr" not in page.text
    redoc = behind_proxy.get("/redoc")
    assert "/api/docs/assets/redoc.standalone.js" in redoc.text and "fonts.googleapis" not in redoc.text
    js = app_client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert len(js.content) > 100_000
    assert app_client.get("/docs/assets/..%2Fcore.py").status_code == 404
    assert app_client.get("/docs/assets/core.py").status_code == 404


@pytest.fixture(scope="module")
def docs_server(model_store, tmp_path_factory):
    server = start_server(model_store, tmp_path_factory.mktemp("docs"), {})
    yield server
    server.stop()


def test_swagger_ui_and_redoc_render_offline_in_chromium(docs_server, tmp_path):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is not installed (apt-get install -y chromium); CI must run the browser tests"
            )
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    ours = urlparse(docs_server.url).netloc
    outside: list[str] = []

    def only_ours(route):
        host = urlparse(route.request.url).netloc
        if host == ours or route.request.url.startswith("data:"):
            route.continue_()
        else:  # what a machine without internet sees
            if route.request.resource_type != "image":  # ReDoc's decorative "by Redocly" logo may go
                outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.route("**/*", only_ours)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(docs_server.url + "/docs", wait_until="domcontentloaded")
            page.wait_for_selector(".opblock-summary-path", timeout=30_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            assert any("/v1/predict" in text for text in paths), paths
            page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)

            page.goto(docs_server.url + "/redoc", wait_until="domcontentloaded")
            page.wait_for_selector("[data-section-id]", timeout=30_000)
            assert "/v1/predict" in page.inner_text("body")
            page.screenshot(path=str(tmp_path / "redoc.png"), full_page=False)
        finally:
            browser.close()
    assert not errors, errors  # e.g. "SwaggerUIBundle is not defined" when the bundle did not load
    assert not outside, f"the pages asked for outside resources: {outside}"
