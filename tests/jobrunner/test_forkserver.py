"""Kernels forked from a pool's template process (jobrunner/execution/forkserver.py): each is the kernel a
fresh start would give (its own environment, folder, sys.path, random state, process group), the template
is replaced when it dies, nothing outlives the pool or its process, and kernels that cannot be forked
(a job's own hash seed, a kernelspec that is not `python -m ipykernel_launcher`) start the usual way.
Real kernels and processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from jupyter_core.utils import run_sync

from jobrunner.errors import KernelStartError
from jobrunner.execution.forkserver import ForkServer, template_command
from jobrunner.execution.kernels import KernelHandle, release_kernel, start_kernel
from jobrunner.execution.pool import KernelPool

READY_S = 90  # a loaded 2-core machine


def _printed(handle: KernelHandle, code: str) -> str:
    """What `code` prints in the kernel (stdout stream messages of that execution)."""
    out: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"ERROR {msg['content']['ename']}: {msg['content']['evalue']}")

    reply = run_sync(handle.client.execute_interactive)(code, timeout=30, output_hook=hook)
    assert reply["content"]["status"] == "ok", out
    return "".join(out)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if not _gone(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


@pytest.fixture
def template(tmp_path: Path) -> Iterator[ForkServer]:
    folder = tmp_path / "template"
    folder.mkdir()
    command = template_command(["python", "-m", "ipykernel_launcher"])
    assert command is not None
    server = ForkServer(
        command,
        env={**os.environ, "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        cwd=str(folder),
        modules=("numpy",),
    ).start()
    yield server
    server.close()
    assert not server.alive()


def test_a_forked_kernel_has_the_environment_folder_and_path_of_a_fresh_kernel(
    tmp_path: Path, template: ForkServer
) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "helper_mod.py").write_text("VALUE = 'from the job folder'\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "JR_ONLY_THIS": "yes"}
    probe = (
        "import os, sys, json, helper_mod\n"
        "print(json.dumps({'env': sorted(os.environ), 'cwd': os.getcwd(), 'path': sys.path,"
        " 'path0': os.path.abspath(sys.path[sys.path.index('')]),"
        " 'helper': helper_mod.VALUE, 'pgid': os.getpgid(0), 'pid': os.getpid(), 'ppid': os.getppid(),"
        " 'argv0': sys.argv[0]}))"
    )
    forked = start_kernel("python3", env=env, cwd=job, forkserver=template)
    fresh = start_kernel("python3", env=env, cwd=job)
    try:
        a = json.loads(_printed(forked, probe))
        b = json.loads(_printed(fresh, probe))
    finally:
        forked.shutdown()
        fresh.shutdown()
    assert a["ppid"] == template.pid and b["ppid"] == os.getpid()
    assert a["env"] == b["env"]  # the same variable names, nothing of the template's own environment
    assert "JR_ONLY_THIS" in a["env"] and "PYTEST_CURRENT_TEST" not in a["env"]
    for key in ("cwd", "path0", "helper"):
        assert a[key] == b[key] == (str(job) if key != "helper" else "from the job folder"), key
    assert a["pgid"] == a["pid"]  # its own process group: killpg reaches it and its children only
    assert a["argv0"] == b["argv0"] and a["path"] == b["path"]
    assert _wait_gone([a["pid"], b["pid"]], 10) == []


def test_forked_kernels_do_not_share_random_state(tmp_path: Path, template: ForkServer) -> None:
    draws = []
    for _ in range(2):
        handle = start_kernel("python3", env=dict(os.environ), cwd=tmp_path, forkserver=template)
        try:
            draws.append(
                _printed(handle, "import random, numpy\nprint(random.random(), numpy.random.rand())")
            )
        finally:
            handle.shutdown()
    assert draws[0] != draws[1]
    assert (
        draws[0].split()[1] != draws[1].split()[1]
    )  # NumPy's global generator too (imported in the template)


def test_a_kernel_that_cannot_be_forked_reports_why(tmp_path: Path, template: ForkServer) -> None:
    with pytest.raises(KernelStartError, match="No such file or directory"):
        start_kernel("python3", env=dict(os.environ), cwd=tmp_path / "missing-folder", forkserver=template)
    assert template.alive()  # one failed fork is that kernel's error, not the template's


def test_a_pool_forks_its_kernels_and_replaces_a_template_that_died(project: Path) -> None:
    pool = KernelPool("python3", 2, health_timeout=5).open()
    try:
        assert pool.wait_ready(READY_S), pool.stats()
        stats = pool.stats()
        assert (stats.forked, stats.template_starts) == (2, 1)
        first_template = pool._forkserver.pid
        idle = pool.idle_pids()
        assert all(psutil.Process(p).ppid() == first_template for p in idle)
        os.kill(first_template, signal.SIGKILL)
        # its kernels notice their parent is gone (ipykernel's parent poller, every second) and end
        assert _wait_gone(idle, 15) == []
        handle = pool.take(env=dict(os.environ), cwd=project)  # never one of the dead ones
        try:
            assert "ran" in _printed(handle, "print('ran')")
        finally:
            release_kernel(handle)
        assert pool.wait_ready(READY_S), pool.stats()
        stats = pool.stats()
        assert stats.template_starts == 2 and pool._forkserver.pid != first_template
        assert all(psutil.Process(p).ppid() == pool._forkserver.pid for p in pool.idle_pids())
        template_pid = pool._forkserver.pid
        kernels = pool.idle_pids()
    finally:
        pool.close(timeout=15)
    assert _wait_gone([template_pid, *kernels], 10) == []


def test_a_job_with_its_own_hash_seed_gets_a_kernel_started_for_it(project: Path) -> None:
    expected = subprocess.run(
        [sys.executable, "-c", "print(hash('jobrunner'))"],
        env={**os.environ, "PYTHONHASHSEED": "123"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    with KernelPool("python3", 1).open() as pool:
        assert pool.wait_ready(READY_S), pool.stats()
        handle = pool.take(env={**os.environ, "PYTHONHASHSEED": "123"}, cwd=project)
        try:
            assert _printed(handle, "print(hash('jobrunner'))").strip() == expected
        finally:
            release_kernel(handle)
        stats = pool.stats()
        assert (stats.taken, stats.missed, stats.idle) == (0, 1, 1)  # the warm one waits for the next job


def test_a_kernelspec_that_is_not_ipykernel_launcher_starts_the_usual_way(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "jupyter"
    spec = data / "kernels" / "wrapped"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [
                    sys.executable,
                    "-c",
                    "from ipykernel import kernelapp; kernelapp.launch_new_instance()",
                    "-f",
                    "{connection_file}",
                ],
                "display_name": "wrapped",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(data))
    with KernelPool("wrapped", 1).open() as pool:
        assert pool.wait_ready(READY_S), pool.stats()
        handle = pool.take(env=dict(os.environ), cwd=project)
        try:
            assert "ok" in _printed(handle, "print('ok')")
        finally:
            release_kernel(handle)
        stats = pool.stats()
        assert (stats.forked, stats.template_starts, stats.taken) == (0, 0, 1)


def test_when_the_pools_process_is_killed_its_template_and_kernels_end(tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent("""
        import json, sys, time
        from jobrunner.execution.pool import KernelPool
        pool = KernelPool("python3", 2).open()
        assert pool.wait_ready(90)
        print(json.dumps([pool._forkserver.pid, *pool.idle_pids()]), flush=True)
        time.sleep(600)
    """)
    )
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = holder.stdout.readline()
        pids = json.loads(line)
        assert len(pids) == 3 and not any(_gone(p) for p in pids)
    finally:
        holder.kill()
        holder.wait(10)
    # the template sees the end of its input at once; its kernels see their parent gone within a second
    assert _wait_gone(pids, 15) == []


def test_a_forked_kernel_is_interrupted_on_timeout_and_on_cancel(project: Path) -> None:
    """The executor stops a cell by signalling the kernel's process group: a forked kernel (its own
    session, the template's child) must stop as a started one does."""
    import threading

    from jobrunner.execution.executor import CancelToken, execute

    with KernelPool("python3", 1).open() as pool:
        assert pool.wait_ready(READY_S), pool.stats()
        started = time.monotonic()
        result = execute("notebooks/sleeps.ipynb", {"seconds": 60.0}, timeout=3, record=False, html=False)
        assert result.status == "failed" and result.failure.kind == "timeout", result.failure
        assert time.monotonic() - started < 30
        assert pool.wait_ready(READY_S), pool.stats()
        token = CancelToken()
        threading.Timer(1.5, token.cancel).start()
        result = execute("notebooks/sleeps.ipynb", {"seconds": 60.0}, cancel=token, record=False, html=False)
        assert result.status == "cancelled"
        stats = pool.stats()
        assert stats.taken == 2 and stats.forked >= 3  # both jobs ran in forked kernels
