"""Opening a pipeline notebook in JupyterLab (real Lab, real kernel, Chromium) does not mark it modified,
and saving it there writes the same bytes that are committed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "lab-roundtrip-test-token"
NOTEBOOKS = ["01_ingest", "02_prepare", "03_train", "04_evaluate"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is not installed (apt-get install -y chromium); CI must run the browser tests"
            )
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    root = tmp_path_factory.mktemp("lab")
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / f"{name}.ipynb", root / f"{name}.ipynb")
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        "JUPYTER_CONFIG_DIR": str(root / ".cfg"),
    }
    proc = subprocess.Popen(
        [
            str(bin_dir / "jupyter"),
            "lab",
            "--no-browser",
            "--allow-root",
            f"--port={port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/status", params={"token": TOKEN}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 90 s")
        yield url, root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_opening_in_lab_keeps_the_notebook_unmodified(lab, name: str) -> None:
    from playwright.sync_api import sync_playwright

    url, root = lab
    before = (root / f"{name}.ipynb").read_bytes()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            # a workspace of its own, reset: only this notebook is open
            page.goto(
                f"{url}/lab/workspaces/{name}/tree/{name}.ipynb?reset&token={TOKEN}",
                wait_until="domcontentloaded",
            )
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            # the kernel has started and answered kernel_info (Lab then writes language_info)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
            page.wait_for_timeout(1500)
            tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=f"{name}.ipynb")
            dirty = "jp-mod-dirty" in (tab.get_attribute("class") or "")
            saved_before = (root / f"{name}.ipynb").stat().st_mtime_ns
            page.locator(".jp-Notebook:visible .jp-Cell").first.click()
            page.keyboard.press("Control+s")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (root / f"{name}.ipynb").stat().st_mtime_ns == saved_before:
                time.sleep(0.2)
            assert (root / f"{name}.ipynb").stat().st_mtime_ns != saved_before, (
                "Lab did not save the notebook"
            )
            page.wait_for_timeout(500)
        finally:
            browser.close()
    after = (root / f"{name}.ipynb").read_bytes()
    import difflib

    diff = "".join(
        difflib.unified_diff(
            before.decode().splitlines(True), after.decode().splitlines(True), "committed", "saved by Lab"
        )
    )
    assert after == before, f"saving in Lab changed the committed bytes:\n{diff[:3000]}"
    assert not dirty, "Lab marked the notebook modified on opening"
