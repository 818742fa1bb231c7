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


@pytest.fixture(scope="package")
def compose() -> dict:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="package")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1, made by our script with the real openssl."""
    need_binary("openssl")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-selfsigned-cert.sh"), str(out), "localhost"],
        check=True,
        capture_output=True,
        timeout=60,
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


def spawn(cmd: list[str], log: Path, **kwargs: object) -> subprocess.Popen:
    """Start a process with its output in a file (a pipe nobody reads would block a chatty process)."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, **kwargs)  # type: ignore[call-overload]
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    log = getattr(proc, "log_path", None)
    if log is not None:
        return Path(log).read_text(errors="replace")
    return proc.stdout.read() if proc.stdout else ""


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port, timeout=0.2):
            return
        if proc.poll() is not None:
            out = output(proc)
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
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
        app,
    ]
    return spawn(cmd, cwd / f"uvicorn-{port}.log", cwd=cwd, env=env)


API_KEY = "platform-tests-read-key"


@dataclass
class Spawned:
    api: subprocess.Popen
    api_port: int
    api_env: dict[str, str]
    api_dir: Path
    worker: subprocess.Popen
    worker_port: int


@pytest.fixture(scope="package")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawned]:
    """Start the real API and a real worker together: each takes many seconds to import its stack, so
    they start in parallel and the fixtures below wait for whichever they need."""
    api_dir = tmp_path_factory.mktemp("api")
    (api_dir / "dvc.yaml").write_text("stages: {}\n")
    api_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SERVE_API_KEYS": f"{API_KEY}:read",
        "JOBRUNNER_PROJECT_DIR": str(api_dir),
    }
    worker_dir = tmp_path_factory.mktemp("worker")
    (worker_dir / "dvc.yaml").write_text("stages: {}\n")
    worker_port = free_port()
    worker_env = {
        **os.environ,
        "JOBRUNNER_PROJECT_DIR": str(worker_dir),
        "JOBRUNNER_WORKER_METRICS_PORT": str(worker_port),
    }
    for env in (api_env, worker_env):
        for var in (
            "MLFLOW_TRACKING_URI",
            "JOBRUNNER_DATABASE_URL",
            "JOBRUNNER_BROKER_URL",
            "SERVE_DATABASE_URL",
        ):
            env.pop(var, None)
    api_port = free_port()
    api = _uvicorn("serve.app:app", api_port, api_dir, api_env, "--root-path", "/api", "--proxy-headers")
    cli = Path(sys.executable).with_name("jobrunner")
    worker = spawn([str(cli), "worker"], worker_dir / "worker.log", cwd=worker_dir, env=worker_env)
    s = Spawned(
        api=api, api_port=api_port, api_env=api_env, api_dir=api_dir, worker=worker, worker_port=worker_port
    )
    yield s
    stop([s.api, s.worker])


@pytest.fixture(scope="package")
def api_upstream(spawned: Spawned) -> Iterator[Upstream]:
    """The real API as deployed (uvicorn serve.app:app --root-path /api, embedded stores in a temp
    project). An API that does not start fails the tests (the echo app stood in for it before the serve
    package existed; that fallback let a broken serve.app pass them)."""
    proc, port, app = spawned.api, spawned.api_port, "serve.app:app"
    deadline = time.monotonic() + 90
    while not port_open("127.0.0.1", port, timeout=0.2) and time.monotonic() < deadline:
        if proc.poll() is not None:
            out = output(proc)
            pytest.fail(f"the API (uvicorn serve.app:app) exited with {proc.returncode}:\n{out[-3000:]}")
        time.sleep(0.1)
    wait_port(port, proc, f"uvicorn {app}", timeout=max(1.0, deadline - time.monotonic()))
    yield Upstream(app=app, port=port, proc=proc)


@pytest.fixture(scope="package")
def echo_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = _uvicorn("tests.platform.asgi_echo:app", port, ROOT, env)
    try:
        wait_port(port, proc, "uvicorn (echo app)")
        yield Upstream(app="tests.platform.asgi_echo:app", port=port, proc=proc)
    finally:
        stop([proc])


@pytest.fixture(scope="package")
def worker_metrics_port(spawned: Spawned) -> int:
    """A real `jobrunner worker` (embedded mode: it polls a SQLite job store) with its metrics endpoint."""
    wait_port(spawned.worker_port, spawned.worker, "jobrunner worker (metrics)", timeout=90)
    return spawned.worker_port


@pytest.fixture(scope="package", autouse=True)
def _start_processes_early(request: pytest.FixtureRequest) -> None:
    """When any selected test needs the API or a worker, start them before the first platform test, so
    their start-up overlaps the static checks."""
    needed = set()
    for item in request.session.items:
        needed |= set(getattr(item, "fixturenames", ())) & {"spawned", "jupyter_upstream"}
    for name in sorted(needed, reverse=True):  # spawned (API, worker) first: they take longest
        request.getfixturevalue(name)


JUPYTER_TOKEN = "platform-tests-jupyter-token"


@pytest.fixture(scope="package")
def jupyter_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """JupyterLab started with the command line docker-compose.yml gives the `jupyter` service (address,
    port and root folder swapped for the test), token from JUPYTER_TOKEN as in the compose file."""
    jupyter = Path(sys.executable).with_name("jupyter")
    if not jupyter.exists():
        service_unavailable("JupyterLab", f"{jupyter} missing")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["jupyter"]
    assert service["environment"]["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?")
    port = free_port()
    work = tmp_path_factory.mktemp("jupyter")
    args = []
    for arg in service["command"][1:]:
        if arg.startswith("--ip="):
            arg = "--ip=127.0.0.1"
        elif arg.startswith("--port="):
            arg = f"--port={port}"
        elif arg.startswith("--ServerApp.root_dir="):
            arg = f"--ServerApp.root_dir={work}"
        args.append(arg)
    env = {
        **os.environ,
        "JUPYTER_TOKEN": JUPYTER_TOKEN,
        "HOME": str(work),
        "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
        "JUPYTER_CONFIG_DIR": str(work / "config"),
    }
    extra = ["--allow-root"] if os.geteuid() == 0 else []
    proc = spawn([str(jupyter), *args, *extra], work / "jupyter.log", cwd=work, env=env)
    try:
        wait_port(port, proc, "jupyter lab", timeout=90)
        yield Upstream(app="jupyter lab", port=port, proc=proc)
    finally:
        stop([proc])
