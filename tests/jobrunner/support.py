"""Helpers of the job tests (no tests, no fixtures here: those are in tests/jobrunner/conftest.py): worker
subprocesses, a cuttable TCP proxy in front of PostgreSQL, polling helpers."""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

# Short intervals so that dead workers are detected in seconds (production defaults are 2 s / 30 s / 5 s).
# A killed worker is taken over after TAKEOVER_TIMEOUT (it is gone from the broker); HEARTBEAT_TIMEOUT
# leaves room for heartbeats delayed by a loaded machine (busy workers reap too).
FAST = {
    "JOBRUNNER_HEARTBEAT_INTERVAL": "0.5",
    "JOBRUNNER_HEARTBEAT_TIMEOUT": "8",
    "JOBRUNNER_TAKEOVER_TIMEOUT": "2",
    "JOBRUNNER_WORKER_POLL_INTERVAL": "0.3",
    "JOBRUNNER_RETRY_BACKOFF": "0.2",
    "JOBRUNNER_WORKER_GRACE_PERIOD": "20",
    "JOBRUNNER_KERNEL_START_TIMEOUT": "30",  # a kernel that lost its port is retried sooner than at 60 s
}

# The newest migration file: what `jobrunner migrate` must bring a store to (read from the folder, not
# from alembic, so a broken revision chain fails the tests that compare the two).
LATEST_MIGRATION = sorted((ROOT / "jobrunner/store/migrations/versions").glob("0*.py"))[-1].stem


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Workers:
    """Starts `jobrunner worker` subprocesses and stops (or kills) them at the end of the test."""

    def __init__(self, env: dict[str, str], logdir: Path):
        self.env = env
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str = "w", **extra: str) -> subprocess.Popen[bytes]:
        env = {**self.env, **extra, "JOBRUNNER_WORKER_ID": f"{name}-{len(self.procs)}"}
        log = open(self.logdir / f"worker-{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [PYTHON, "-m", "jobrunner.cli", "-v", "worker"],
            env=env,
            cwd=env["JOBRUNNER_PROJECT_DIR"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.worker_id = env["JOBRUNNER_WORKER_ID"]  # type: ignore[attr-defined]
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout)

    def close(self) -> None:
        stop_all(self.procs, 15)


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every live process at once, then wait up to `timeout` s for each; SIGKILL what remains."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def kernel_children(pid: int) -> list[int]:
    """Pids of ipykernel processes started by process `pid`."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c.pid for c in children if "ipykernel" in " ".join(c.cmdline())]


def job_kernels(pid: int) -> list[int]:
    """Kernels of process `pid` that run a job: not the idle ones of its warm pool (whose working folder
    is the pool's scratch folder until a job takes them)."""
    import psutil

    busy = []
    for k in kernel_children(pid):
        try:
            if "jobrunner-pool-" not in psutil.Process(k).cwd():
                busy.append(k)
        except psutil.Error:
            continue
    return busy


def alive(pids: list[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def job(job_id: str) -> Any:
    from jobrunner.jobs import get_job

    return get_job(job_id)


def wait_state(job_id: str, states: set[str], timeout: float) -> Any:
    return wait_for(
        lambda: (j := job(job_id)).state.value in states and j,
        timeout,
        f"job {job_id} to reach {sorted(states)}",
    )


def infrastructure_retries(job_id: str) -> list[str]:
    """Requeues after infrastructure errors. With two workers starting kernels at the same moment a kernel
    can lose a race for a TCP port and never answer; the job is then retried, which is correct."""
    from jobrunner.jobs import job_events

    return [
        e.message or ""
        for e in job_events(job_id)
        if e.from_state == "RUNNING"
        and e.to_state == "QUEUED"
        and "infrastructure error" in (e.message or "")
    ]


def wait_consumers(env: dict[str, str], count: int, timeout: float = 60) -> None:
    """Wait until `count` workers consume the job queue (worker start-up takes seconds on a busy box)."""
    import pika

    def consumers() -> int:
        conn = pika.BlockingConnection(pika.URLParameters(env["JOBRUNNER_BROKER_URL"]))
        try:
            ch = conn.channel()
            return ch.queue_declare(env["JOBRUNNER_QUEUE_NAME"], passive=True).method.consumer_count
        except Exception:  # noqa: BLE001 - not declared yet
            return 0
        finally:
            if conn.is_open:
                conn.close()

    wait_for(lambda: consumers() >= count, timeout, f"{count} consumer(s)", interval=0.5)


def delete_queues(amqp_url: str, prefix: str) -> None:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    for name in (prefix, f"{prefix}.dlq"):
        ch.queue_delete(name)
    ch.exchange_delete(f"{prefix}.dlx")
    conn.close()


class TcpProxy:
    """A TCP forwarder in front of a server that a test can cut (refuse and drop connections) and restore."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(timeout=1):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, as a stopped server would."""
        if self._listener is not None:
            # wakes the thread blocked in accept(); close() alone leaves the socket listening
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self._conns.clear()

    def restore(self) -> None:
        self.start()

    @property
    def url_for(self) -> Callable[[str], str]:
        return lambda url: url.replace("127.0.0.1:5432", f"127.0.0.1:{self.port}")


# -- the outputs notebook (test_outputs.py, test_runcache.py, test_outputs_rest.py) --------------------------
OUTPUTS_PARAMETERS = """data_path = "data/in.csv"  # input table
result_path = "results/out.json"  # output: the result
model_dir = "models/m"  # output: a folder
n = 1  # a multiplier
"""
OUTPUTS_CODE = """import json, time
from jobrunner.notebook import log_metrics, project_path
total = n * sum(int(x) for x in project_path(data_path).read_text().split())
time.sleep(1)  # two jobs overlap
project_path(result_path).write_text(json.dumps({"total": total}))
project_path(model_dir).mkdir(parents=True, exist_ok=True)
(project_path(model_dir) / "weights.txt").write_text(str(total))
log_metrics({"total": total})
print("wrote", result_path)
"""


def write_outputs_notebook(project: Path) -> str:
    """notebooks/writes.ipynb: reads data/in.csv, writes the outputs `result_path` (a file) and `model_dir`
    (a folder); plus the workspace files an earlier run left (test_outputs.py, test_runcache.py,
    test_outputs_rest.py)."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(OUTPUTS_PARAMETERS)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(OUTPUTS_CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "notebooks" / "writes.ipynb")
    (project / "data").mkdir()
    (project / "data" / "in.csv").write_text("1 2 3\n")
    # what an earlier `jobrunner run` / `dvc repro` left in the workspace
    (project / "results").mkdir()
    (project / "results" / "out.json").write_text('{"total": "workspace"}')
    (project / "models" / "m").mkdir(parents=True)
    (project / "models" / "m" / "weights.txt").write_text("workspace")
    return "notebooks/writes.ipynb"
