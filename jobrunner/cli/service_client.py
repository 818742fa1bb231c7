"""Thin client of the local execution service (jobrunner.cli.service), for one-shot runs.

Import-light on purpose (standard library only): `jobrunner run` through a warm service must cost less
than importing papermill, let alone MLflow. The client

- finds the service of this configuration by a key (python, jobrunner's code, working directory and
  the JOBRUNNER_*/MLFLOW_*/AWS_* environment): several projects or settings each get their own service;
- starts it on first use (detached, logging to `<runtime dir>/<key>.log`) and waits for its socket; a
  stale socket of a crashed service is replaced (the service holds a lock while it lives);
- sends the request with its environment and working directory, relays the streamed output and
  progress, forwards SIGINT/SIGTERM as a cancel, and returns the command's exit code.

`None` from `run_command` means "could not reach a service before anything ran": the caller executes
in-process instead. JOBRUNNER_SERVICE=off skips the service altogether (tests set it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROTOCOL = 1
KEY_ENV_PREFIXES = ("JOBRUNNER_", "MLFLOW_", "AWS_")
# Variables that differ per call and do not configure the service (they reach the kernel per request).
KEY_ENV_IGNORED = ("MLFLOW_RUN_ID", "JOBRUNNER_SERVICE_WAIT")
START_WAIT_S = 60.0  # first use: MLflow import and a kernel start on a loaded machine


def enabled(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("JOBRUNNER_SERVICE", "auto").strip().lower() not in ("off", "0", "false", "no")


def runtime_dir() -> Path:
    # short, for the socket path; the folder below is the user's own (0700)
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"  # noqa: S108
    path = Path(base) / f"jobrunner-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _code_stamp() -> str:
    """Changes whenever jobrunner's code does: a service never runs stale code after an upgrade."""
    package = Path(__file__).resolve().parent
    stamps = []
    for entry in os.scandir(package):
        if entry.name.endswith(".py"):
            st = entry.stat()
            stamps.append(f"{entry.name}:{st.st_mtime_ns}:{st.st_size}")
    return ",".join(sorted(stamps))


def service_key(cwd: str | None = None, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    config = sorted(
        (k, v) for k, v in env.items() if k.startswith(KEY_ENV_PREFIXES) and k not in KEY_ENV_IGNORED
    )
    dotenv = Path(cwd or os.getcwd()) / ".env"
    try:
        dotenv_text = dotenv.read_text()
    except OSError:
        dotenv_text = ""
    material = json.dumps(
        [PROTOCOL, sys.executable, _code_stamp(), os.path.realpath(cwd or os.getcwd()), config, dotenv_text]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def paths(key: str) -> dict[str, Path]:
    base = runtime_dir()
    return {
        "socket": base / f"{key}.sock",
        "lock": base / f"{key}.lock",
        "log": base / f"{key}.log",
        "info": base / f"{key}.json",
    }


def _connect(sock_path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
        return s
    except (FileNotFoundError, ConnectionRefusedError, OSError):
        s.close()
        return None


def spawn(key: str) -> None:
    """Start the service for `key` in the background (a second one exits at once: the lock)."""
    p = paths(key)
    log = open(p["log"], "ab")  # noqa: SIM115 - handed to the child
    try:
        subprocess.Popen(  # noqa: S603 - our own program (this python, jobrunner.cli.service), a list argv
            [sys.executable, "-m", "jobrunner.cli.service", "--key", key],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()


def connect(key: str, *, start: bool = True, wait: float = START_WAIT_S) -> socket.socket | None:
    """A connection to the service of `key`, starting it if needed; None if none came up in `wait` s."""
    p = paths(key)
    conn = _connect(p["socket"])
    if conn is not None or not start:
        return conn
    spawn(key)
    deadline = time.monotonic() + wait
    delay = 0.02
    while time.monotonic() < deadline:
        conn = _connect(p["socket"])
        if conn is not None:
            return conn
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    return None


class _Lines:
    def __init__(self, conn: socket.socket):
        self.file = conn.makefile("rb")

    def __iter__(self) -> Any:
        for raw in self.file:
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def request(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def run_command(
    op: str,
    args: dict[str, Any],
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    out: Callable[[str], None] | None = None,
    err: Callable[[str], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> int | None:
    """Run `op` in the service and return its exit code; None when no service could be reached."""
    if not enabled():
        return None
    cwd = os.getcwd()
    key = service_key(cwd)
    wait = float(os.environ.get("JOBRUNNER_SERVICE_WAIT", START_WAIT_S))
    conn = connect(key, wait=wait)
    if conn is None:
        print(
            f"note: the execution service did not start within {wait:g}s (log: {paths(key)['log']}); "
            "running in this process",
            file=sys.stderr,
        )
        return None
    write_out: Callable[[str], Any] = out or sys.stdout.write
    write_err: Callable[[str], Any] = err or sys.stderr.write
    send_lock = threading.Lock()

    def cancel(signum: int, _frame: Any) -> None:
        with send_lock, contextlib.suppress(OSError):  # the service has gone: nothing to cancel
            request(conn, {"op": "cancel", "reason": f"{signal.Signals(signum).name} received"})

    previous = {sig: signal.signal(sig, cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    accepted = False
    try:
        try:
            with send_lock:
                request(
                    conn, {"op": op, "protocol": PROTOCOL, "args": args, "cwd": cwd, "env": dict(os.environ)}
                )
        except OSError:
            return None  # the service went away before taking the request: nothing ran
        for event in _Lines(conn):
            kind = event.get("event")
            if kind == "accepted":
                accepted = True
            elif kind == "progress" and on_progress:
                on_progress(event)
            elif kind == "out":
                write_out(event["text"])
            elif kind == "err":
                write_err(event["text"])
            elif kind == "result" and on_result:
                on_result(event["result"])
            elif kind == "exit":
                return int(event["code"])
        if not accepted:
            return None  # closed before it started anything (stopping for idleness): run here instead
        write_err(f"error: the execution service stopped during the run; see its log {paths(key)['log']}\n")
        from jobrunner.cli.common import ExitCode  # here: the client stays light on its normal path

        return ExitCode.INFRA
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        conn.close()


def stop(key: str | None = None, timeout: float = 30.0) -> bool:
    """Ask the service of `key` (default: this configuration's) to stop; True if one was running."""
    key = key or service_key()
    conn = connect(key, start=False)
    if conn is None:
        return False
    try:
        request(conn, {"op": "stop", "protocol": PROTOCOL})
        conn.settimeout(timeout)
        for _event in _Lines(conn):
            pass
    except OSError:
        pass
    finally:
        conn.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and paths(key)["socket"].exists():
        time.sleep(0.05)
    return True


def status(key: str | None = None) -> dict[str, Any] | None:
    key = key or service_key()
    conn = connect(key, start=False)
    if conn is None:
        return None
    try:
        request(conn, {"op": "status", "protocol": PROTOCOL})
        conn.settimeout(10)
        for event in _Lines(conn):
            if event.get("event") == "status":
                return dict(event["status"])
    except OSError:
        return None
    finally:
        conn.close()
    return None
