"""Executed notebooks open by clicking a lineage link (signed, root-path aware) and run sandboxed: a cell
output's script can read neither the platform's cookies nor the API."""

from __future__ import annotations

import json
import os
import shutil
from urllib.parse import parse_qs, urlparse

import nbformat
import pytest

from serve.links import NOTEBOOK_CSP, LinkSigner
from tests.serve.conftest import READ, READ_KEY, WRITE_KEY, start_server

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _link(app_client) -> str:
    return app_client.get("/v1/model", headers=READ).json()["lineage"]["run"]["notebook"]["html_url"]


def test_signer_refuses_expired_tampered_and_other_paths() -> None:
    signer = LinkSigner(["k1", "k2"], None, ttl_seconds=60)
    url = signer.sign("/v1/runs/" + "a" * 32 + "/notebook", now=1000)
    path, query = url.split("?")
    q = {k: v[0] for k, v in parse_qs(query).items()}
    assert signer.check(path, q["expires"], q["signature"], now=1000) == ""
    assert "expired" in signer.check(path, q["expires"], q["signature"], now=1061)
    assert "signature" in signer.check(path.replace("a", "b"), q["expires"], q["signature"], now=1000)
    assert "signature" in signer.check(path, str(int(q["expires"]) + 1), q["signature"], now=1000)
    # other keys (rotated, or another deployment) make other signatures; a shared secret makes equal ones
    assert LinkSigner(["k1"], None, 60).check(path, q["expires"], q["signature"], now=1000)
    assert LinkSigner(["x"], "s" * 20, 60).sign(path, now=5) == LinkSigner(["y"], "s" * 20, 60).sign(
        path, now=5
    )


def test_lineage_links_open_without_a_key_and_only_as_signed(app_client) -> None:
    link = _link(app_client)
    assert link.startswith("/v1/runs/") and "signature=" in link and "expires=" in link
    page = app_client.get(link)  # what a click sends: no X-API-Key
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == NOTEBOOK_CSP
    assert "sandbox" in NOTEBOOK_CSP and "allow-same-origin" not in NOTEBOOK_CSP
    assert "03_train executed" in page.text
    bare = link.split("?")[0]
    refused = app_client.get(bare)
    assert refused.status_code == 401 and "signed link" in refused.json()["detail"]
    forged = app_client.get(link[:-4] + "0000")
    assert forged.status_code == 401 and "signature" in forged.json()["detail"]
    other = app_client.get(bare.replace(bare.split("/")[3], "c" * 32) + "?" + link.split("?")[1])
    assert other.status_code == 401  # a link opens its own page only
    # a link cannot open anything else: the same signature on a JSON route is just a missing key
    assert app_client.get("/v1/jobs?" + link.split("?")[1]).status_code == 401
    # behind nginx (uvicorn --root-path /api) the link carries the prefix and still verifies
    from fastapi.testclient import TestClient

    proxied = TestClient(app_client.app, root_path="/api")
    link_api = proxied.get("/v1/model", headers=READ).json()["lineage"]["run"]["notebook"]["html_url"]
    assert link_api.startswith("/api/v1/runs/")
    assert proxied.get(link_api[len("/api") :]).status_code == 200


PROBE = """<div id="probe">script did not run</div>
<script>
var out = {};
try { out.cookie = document.cookie; } catch (e) { out.cookie = "blocked: " + e.name; }
fetch("/v1/jobs", {credentials: "include"}).then(function (r) { return r.text(); }).then(
  function (t) { out.api = "read: " + t.slice(0, 80); done(); },
  function (e) { out.api = "blocked: " + e.name; done(); });
function done() { document.getElementById("probe").textContent = JSON.stringify(out); }
</script>"""


@pytest.mark.slow
def test_a_notebooks_script_finds_neither_cookies_nor_the_api(model_store, tmp_path) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is not installed (apt-get install -y chromium); CI must run the browser tests"
            )
        pytest.skip("chromium is not installed")
    from playwright.sync_api import sync_playwright

    from jobrunner.execution.executor import execute

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"from IPython.display import HTML\nHTML({PROBE!r})")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, model_store.project / "notebooks" / "untrusted_output.ipynb")
    result = execute("notebooks/untrusted_output.ipynb", {})  # recorded in the server's MLflow store
    assert result.ok and result.run_id
    server = start_server(model_store, tmp_path, {})
    try:
        link = LinkSigner([READ_KEY, WRITE_KEY], None, 600).sign(f"/v1/runs/{result.run_id}/notebook")
        url = server.url + link
        seen: dict[str, dict] = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            try:
                context = browser.new_context()
                context.add_cookies([{"name": "platform_session", "value": "s3cret", "url": server.url}])
                for label in ("served", "without the policy"):
                    page = context.new_page()
                    if label == "without the policy":  # the same page as plain same-origin HTML

                        def strip(route):
                            response = route.fetch()
                            headers = {
                                k: v
                                for k, v in response.headers.items()
                                if k.lower() != "content-security-policy"
                            }
                            route.fulfill(response=response, headers=headers)

                        page.route("**/notebook*", strip)
                    page.goto(url, wait_until="domcontentloaded")
                    page.wait_for_function(
                        "document.getElementById('probe') && "
                        "document.getElementById('probe').textContent.startsWith('{')",
                        timeout=30_000,
                    )
                    seen[label] = json.loads(page.inner_text("#probe"))
                    if label == "served":
                        page.screenshot(path=str(tmp_path / "sandboxed.png"))
            finally:
                browser.close()
    finally:
        server.stop()
    # the probe works: unsandboxed, it reads the cookie and the API's answer
    assert "s3cret" in seen["without the policy"]["cookie"]
    assert seen["without the policy"]["api"].startswith("read:")
    # sandboxed (what the API serves), the same script finds neither
    assert seen["served"]["cookie"].startswith("blocked"), seen["served"]
    assert seen["served"]["api"].startswith("blocked"), seen["served"]
    assert urlparse(url).path.endswith("/notebook")
