"""Fixtures for the production-stack tests: the repository's platform files and the real binaries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, free_port, port_open, service_unavailable

PLATFORM = ROOT / "platform"
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.worker.yml"]


def need_binary(name: str) -> str:
    """Path of a binary the test needs; skips on a laptop without it, fails under CI."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        service_unavailable(name, "binary not on PATH (apt-get install -y nginx prometheus openssl)")
    return path


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def compose() -> dict:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1, made by our script with the real openssl."""
    need_binary("openssl")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-selfsigned-cert.sh"), str(out), "localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return out / "fullchain.pem", out / "privkey.pem"


# -- processes -------------------------------------------------------------------------------------------
@dataclass
class Upstream:
    """A uvicorn process on 127.0.0.1: the real API (serve.app:app) or the echo app standing in for it."""

    app: str
    port: int
    proc: subprocess.Popen

    @property
    def real_api(self) -> bool:
        return self.app == "serve.app:app"


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, timeout=0.2):
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"{what} exited with {proc.returncode}:\n{out[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"{what} did not listen on {port} within {timeout}s")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _uvicorn(app: str, port: int, cwd: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level",
           "warning", *extra, app]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


API_KEY = "platform-tests-read-key"


@pytest.fixture(scope="session")
def api_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The real API as deployed (uvicorn serve.app:app --root-path /api, embedded stores in a temp
    project), preferred; the echo app only while the serve package cannot be imported."""
    work = tmp_path_factory.mktemp("api")
    (work / "dvc.yaml").write_text("stages: {}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SERVE_API_KEYS": f"{API_KEY}:read",
           "JOBRUNNER_PROJECT_DIR": str(work)}
    for var in ("MLFLOW_TRACKING_URI", "JOBRUNNER_DATABASE_URL", "JOBRUNNER_BROKER_URL", "SERVE_DATABASE_URL"):
        env.pop(var, None)
    port = free_port()
    app = "serve.app:app"
    proc = _uvicorn(app, port, work, env, "--root-path", "/api", "--proxy-headers")
    deadline = time.monotonic() + 90
    while not port_open("127.0.0.1", port, timeout=0.2) and time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            if 'Could not import module "serve.app"' not in out and "Attribute \"app\" not found" not in out:
                pytest.fail(f"the API (uvicorn serve.app:app) exited with {proc.returncode}:\n{out[-3000:]}")
            # The API package is not there yet: the echo app stands in (no --root-path: uvicorn would
            # prefix it to the path the echo app reports).
            app = "tests.platform.asgi_echo:app"
            proc = _uvicorn(app, port, work, env)
            wait_port(port, proc, f"uvicorn {app}")
            break
        time.sleep(0.1)
    try:
        wait_port(port, proc, f"uvicorn {app}", timeout=max(1.0, deadline - time.monotonic()))
        yield Upstream(app=app, port=port, proc=proc)
    finally:
        stop([proc])


@pytest.fixture(scope="session")
def echo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = _uvicorn("tests.platform.asgi_echo:app", port, ROOT, env)
    try:
        wait_port(port, proc, "uvicorn (echo app)")
        yield Upstream(app="tests.platform.asgi_echo:app", port=port, proc=proc)
    finally:
        stop([proc])
