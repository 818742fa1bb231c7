"""`make lab` as a data scientist runs it: JupyterLab starts (also as root), on the port and token asked
for, prints the URL to open, and the project's kernel is the default."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import pytest

from tests.conftest import ROOT, free_port, port_open


@pytest.mark.slow
def test_make_lab_starts_jupyterlab_with_the_printed_url_and_token(tmp_path):
    port = free_port()
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_PORT={port}", "LAB_TOKEN=lab-test-token"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        first = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/lab\?token=\S+)", first)
        assert match, f"make lab did not print the URL first: {first!r}"
        assert match.group(1) == f"http://127.0.0.1:{port}/lab?token=lab-test-token"
        deadline = time.monotonic() + 90
        while not port_open("127.0.0.1", port):
            assert proc.poll() is None, f"make lab exited ({proc.returncode}): {proc.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, "JupyterLab did not open its port within 90 s"
            time.sleep(0.3)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/api/status", params={"token": "lab-test-token"}).status_code == 200
        assert httpx.get(f"{base}/api/status").status_code == 403  # the token is required
        specs = httpx.get(f"{base}/api/kernelspecs", params={"token": "lab-test-token"}).json()
        assert specs["default"] == "python3"
        assert "python3" in specs["kernelspecs"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
