"""The local execution service behind `jobrunner run`: real processes, sockets and kernels.

Each test gets its own runtime folder (so its services are its own) and stops and checks them after."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

JOBRUNNER = [sys.executable, "-m", "jobrunner.cli"]
WAIT_S = 120  # a service's first start on a loaded 2-core machine


@pytest.fixture
def svc(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment for CLI calls that use the service; afterwards no service or kernel is left."""
    runtime = tempfile.mkdtemp(prefix="jrs", dir="/tmp")  # short: Unix socket paths are limited
    env = {
        **os.environ,
        "JOBRUNNER_SERVICE": "auto",
        "XDG_RUNTIME_DIR": runtime,
        "JOBRUNNER_PROJECT_DIR": str(project),
        "JOBRUNNER_SERVICE_WAIT": str(WAIT_S),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    yield env
    for info in Path(runtime).glob("*/*.json"):
        pid = json.loads(info.read_text())["pid"]
        _stop_tree(pid)
    shutil.rmtree(runtime, ignore_errors=True)


def _stop_tree(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        kids = proc.children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        proc.kill()
    for kid in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            kid.kill()


def cli(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JOBRUNNER, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def services(env: dict[str, str]) -> list[dict]:
    """Info of the services alive in this test's runtime folder."""
    found = []
    for info in (Path(env["XDG_RUNTIME_DIR"])).glob("*/*.json"):
        data = json.loads(info.read_text())
        if _alive(data["pid"]):
            found.append(data)
    return found


def _status(env: dict[str, str], cwd: Path) -> dict:
    proc = cli(env, "service", "status", "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _mlflow(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def test_runs_go_through_one_warm_service_with_the_same_results_and_exit_codes(project: Path, svc) -> None:
    first = cli(svc, "run", "notebooks/ok.ipynb", "-p", "x", "2", "--json", cwd=project)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["total"] == 4.5
    # recorded completely by the time the CLI returned: nothing deferred
    run = _mlflow(project).get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.params["x"] == "2"
    artifacts = {a.path for a in _mlflow(project).list_artifacts(result["mlflow_run_id"], "notebook")}
    assert len(artifacts) == 2
    [service] = services(svc)

    second = cli(svc, "run", "notebooks/ok.ipynb", "-y", "{x: 5, items: [1]}", cwd=project)
    assert second.returncode == 0, second.stderr
    assert "succeeded: notebooks/ok.ipynb" in second.stderr and "total = 7.5" in second.stderr
    status = _status(svc, project)
    assert status["pid"] == service["pid"] and status["served"] == 2

    bad = cli(svc, "run", "notebooks/raises.ipynb", "--json", cwd=project)
    assert bad.returncode == 1 and json.loads(bad.stdout)["error"]["ename"] == "ValueError"
    unknown = cli(svc, "run", "notebooks/ok.ipynb", "-p", "nope", "1", cwd=project)
    assert unknown.returncode == 2
    assert (
        "unknown parameter 'nope'" in unknown.stderr
        and "(see: jobrunner params notebooks/ok.ipynb)" in unknown.stderr
    )
    missing = cli(svc, "run", "notebooks/missing.ipynb", cwd=project)
    assert missing.returncode == 2 and "notebook not found: notebooks/missing.ipynb" in missing.stderr
    assert [s["pid"] for s in services(svc)] == [service["pid"]]

    kernels = [p.pid for p in psutil.Process(service["pid"]).children(recursive=True)]
    stop = cli(svc, "service", "stop", cwd=project)
    assert stop.returncode == 0 and "stopped" in stop.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_alive(service["pid"]) or any(_alive(k) for k in kernels)):
        time.sleep(0.2)
    assert not _alive(service["pid"])
    assert not [k for k in kernels if _alive(k)]
    assert cli(svc, "service", "status", cwd=project).returncode == 1


def test_service_off_runs_in_process(project: Path, svc) -> None:
    proc = cli({**svc, "JOBRUNNER_SERVICE": "off"}, "run", "notebooks/ok.ipynb", "--no-record", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert services(svc) == [] and not list(Path(svc["XDG_RUNTIME_DIR"]).glob("*/*.sock"))


def test_a_stale_socket_and_a_crashed_service_are_replaced(project: Path, svc) -> None:
    from jobrunner.cli import service_client

    os.environ["XDG_RUNTIME_DIR"] = svc["XDG_RUNTIME_DIR"]
    try:
        key = service_client.service_key(str(project), svc)
        sock_path = service_client.paths(key)["socket"]
    finally:
        del os.environ["XDG_RUNTIME_DIR"]
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock_path))  # a socket file nobody listens on: what a killed service leaves
    stale.close()
    ok = cli(svc, "run", "notebooks/ok.ipynb", "--no-record", cwd=project)
    assert ok.returncode == 0, ok.stderr
    [first] = services(svc)

    # the service dies in the middle of a run: the client says so (exit 3) instead of hanging
    running = subprocess.Popen(
        [*JOBRUNNER, "run", "notebooks/sleeps.ipynb", "-p", "seconds", "60"],
        cwd=project,
        env=svc,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and _status(svc, project)["active"] == 0:
        time.sleep(0.2)
    kernels = [p.pid for p in psutil.Process(first["pid"]).children(recursive=True)]
    os.kill(first["pid"], signal.SIGKILL)
    _, err = running.communicate(timeout=60)
    assert running.returncode == 3
    assert "the execution service stopped during the run" in err and ".log" in err
    # its orphaned kernels notice their parent is gone and exit by themselves
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(k) for k in kernels):
        time.sleep(0.5)
    assert not [k for k in kernels if _alive(k)]

    again = cli(svc, "run", "notebooks/ok.ipynb", "--no-record", cwd=project)
    assert again.returncode == 0, again.stderr
    [second] = services(svc)
    assert second["pid"] != first["pid"]


def test_concurrent_callers_share_one_service_and_sigterm_cancels(project: Path, svc) -> None:
    procs = [
        subprocess.Popen(
            [*JOBRUNNER, "run", "notebooks/ok.ipynb", "-p", "x", str(i), "--json"],
            cwd=project,
            env=svc,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    results = [json.loads(o) for o, _ in outs]
    assert sorted(r["metrics"]["total"] for r in results) == [2.5, 3.5, 4.5]
    assert len({r["mlflow_run_id"] for r in results}) == 3
    assert len(services(svc)) == 1

    running = subprocess.Popen(
        [*JOBRUNNER, "run", "notebooks/sleeps.ipynb", "-p", "seconds", "60", "--json"],
        cwd=project,
        env=svc,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and _status(svc, project)["active"] == 0:
        time.sleep(0.2)
    time.sleep(1.0)
    running.send_signal(signal.SIGTERM)
    out, err = running.communicate(timeout=60)
    assert running.returncode == 1, err
    result = json.loads(out)
    assert result["status"] == "cancelled"
    assert _mlflow(project).get_run(result["mlflow_run_id"]).info.status == "KILLED"


def test_the_service_stops_when_idle_and_leaves_no_kernel(project: Path, svc) -> None:
    env = {**svc, "JOBRUNNER_SERVICE_IDLE_TIMEOUT": "3"}
    ok = cli(env, "run", "notebooks/ok.ipynb", "--no-record", cwd=project)
    assert ok.returncode == 0, ok.stderr
    [service] = services(env)
    kernels = [p.pid for p in psutil.Process(service["pid"]).children(recursive=True)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(service["pid"]):
        time.sleep(0.3)
    assert not _alive(service["pid"])
    assert not [k for k in kernels if _alive(k)]
    assert not list(Path(env["XDG_RUNTIME_DIR"]).glob("*/*.sock"))


def test_the_service_stops_when_its_project_folder_is_removed(tmp_path: Path, svc) -> None:
    """A service of a temporary clone (CI's `dvc repro` tests, a removed checkout) would otherwise hold a
    kernel and ~300 MB for its whole idle timeout (10 minutes by default) after nobody can call it."""
    clone = tmp_path / "clone"
    shutil.copytree(Path(svc["JOBRUNNER_PROJECT_DIR"]), clone)
    env = {**svc, "JOBRUNNER_PROJECT_DIR": str(clone)}  # the default idle timeout: 600 s
    ok = cli(env, "run", "notebooks/ok.ipynb", "--no-record", cwd=clone)
    assert ok.returncode == 0, ok.stderr
    [service] = services(env)
    kernels = [p.pid for p in psutil.Process(service["pid"]).children(recursive=True)]
    shutil.rmtree(clone)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(service["pid"]):
        time.sleep(0.3)
    assert not _alive(service["pid"]), "the service outlived its project folder"
    assert not [k for k in kernels if _alive(k)]


def test_the_stage_commands_help_and_usage_errors_read_the_same_through_the_service(
    project: Path, svc
) -> None:
    """click's help and usage messages of `python -m pipelines.stage`, printed in the service's thread,
    reach the caller as the text a direct run prints (not bytes reprs), with the same exit codes."""

    def stage(*args: str, service: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipelines.stage", *args],
            cwd=project,
            env={**svc, "JOBRUNNER_SERVICE": service},
            capture_output=True,
            text=True,
            timeout=120,
        )

    for args, code in ((("--help",), 0), ((), 2)):
        served, direct = stage(*args, service="auto"), stage(*args, service="off")
        assert (served.returncode, direct.returncode) == (code, code), served.stderr + direct.stderr
        assert served.stdout + served.stderr == direct.stdout + direct.stderr
        assert "Usage: python -m pipelines.stage [OPTIONS] STAGE" in served.stdout + served.stderr
        assert "b'" not in served.stdout + served.stderr


def test_a_dvc_stage_runs_through_the_service_with_the_callers_environment(project: Path, svc) -> None:
    (project / "dvc.yaml").write_text(
        "stages:\n  add:\n    cmd: python -m pipelines.stage add\n    params: [add]\n"
        "    meta:\n      notebook: notebooks/env.ipynb\n"
    )
    (project / "params.yaml").write_text("add:\n  tag: from-params\n")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("tag = 'none'", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint(tag, os.environ.get('JR_CALLER'), os.getcwd())"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "notebooks" / "env.ipynb")

    def stage(caller: str) -> subprocess.CompletedProcess[str]:
        # --no-cache: the second call has the same code and parameters, which the stage cache would reuse;
        # this test is about each caller's environment reaching the execution
        return subprocess.run(
            [sys.executable, "-m", "pipelines.stage", "add", "--quiet", "--no-cache"],
            cwd=project,
            env={**svc, "JR_CALLER": caller},
            capture_output=True,
            text=True,
            timeout=300,
        )

    first, second = stage("caller-1"), stage("caller-2")
    for proc, caller in ((first, "caller-1"), (second, "caller-2")):
        assert proc.returncode == 0, proc.stderr
        assert "stage add: succeeded" in proc.stderr  # the stage's own prints reach the caller
        executed = (
            nbformat.read(project / "reports" / "notebooks" / "env.ipynb", as_version=4)
            if caller == "caller-2"
            else None
        )
        if executed is not None:
            printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
            assert printed.split()[:2] == ["from-params", "caller-2"]
            assert Path(printed.split()[2]).resolve() == project.resolve()
    # served by a service (in-process stages start none); jobrunner's code changing meanwhile (a shared
    # work tree) may have started a second one, so count them all
    assert services(svc)
    bad = subprocess.run(
        [sys.executable, "-m", "pipelines.stage", "nope"],
        cwd=project,
        env=svc,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "no stage 'nope' in dvc.yaml; stages: add" in bad.stderr
