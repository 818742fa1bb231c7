"""The local execution service: a background process that keeps MLflow imported and kernels warm.

One-shot runs (`jobrunner run`) pay more for start-up than for the notebook: importing MLflow and
opening its store alone cost more than the whole papermill CLI. Like dmypy or the Gradle daemon, the
first run starts this service (`python -m jobrunner.cli.service --key KEY`, detached) and later runs hand
their request to it over a Unix socket (jobrunner.cli.service_client is the thin client). The service

- holds an exclusive lock for its key while it lives, so one service runs per configuration and a
  stale socket left by a crashed one is simply replaced;
- binds its socket at once and warms up in the background (imports, the HTML exporter, a kernel pool of
  max(1, JOBRUNNER_KERNEL_POOL_SIZE) kernels); requests that arrive meanwhile wait for it;
- runs each request in its own thread, through the same code as an in-process `jobrunner run`
  (cli.run.run_notebook_command) or DVC stage (pipelines.stage.main), with the caller's environment as the
  kernel's; output, progress and the exit code stream back line by line; a cancel message or a
  vanished client cancels a `run`;
- answers only after the run is recorded: the MLflow run is complete when the client prints "done";
- stops after JOBRUNNER_SERVICE_IDLE_TIMEOUT seconds without requests (or on `jobrunner service stop`
  or SIGTERM), letting running requests finish, closing its pool within STOP_TIMEOUT_S (kernels still
  starting or cleaning up after it are killed: no kernel left) and removing its socket. It logs to
  `<runtime dir>/<key>.log` (`jobrunner service status` prints the path).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import signal
import socketserver
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from jobrunner.cli.common import ExitCode
from jobrunner.cli.service_client import PROTOCOL, paths

log = logging.getLogger("jobrunner.cli.service")
STOP_TIMEOUT_S = 20.0  # closing the kernel pool on stop; leftover kernels are killed after it


class _ThreadStreams(io.TextIOBase):
    """sys.stdout / sys.stderr of the service: what a request's thread prints goes to its client (code
    that prints, like pipelines.stage, runs unchanged); everything else goes to the service's log."""

    def __init__(self, fallback: Any):
        self.fallback = fallback
        self.local = threading.local()

    def write(self, text: str) -> int:
        # A text stream refuses bytes, as sys.stdout does: click probes `write(b"")` to tell a binary stream
        # from a text one, and would otherwise send bytes, which the client printed as b'...'.
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        target = getattr(self.local, "write", None)
        (target or self.fallback.write)(text)
        return len(text)

    def flush(self) -> None:
        if getattr(self.local, "write", None) is None:
            self.fallback.flush()

    def isatty(self) -> bool:
        return False if getattr(self.local, "write", None) else bool(self.fallback.isatty())

    @contextlib.contextmanager
    def to(self, write: Any) -> Iterator[None]:
        self.local.write = write
        try:
            yield
        finally:
            self.local.write = None


class Service:
    def __init__(self, key: str):
        self.key = key
        self.paths = paths(key)
        self.ready = threading.Event()
        self.failed: str | None = None
        self.pool: Any = None
        self.settings: Any = None
        self.active = 0
        self.served = 0
        self.last_activity = time.monotonic()
        self.started_at = time.time()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server: socketserver.ThreadingUnixStreamServer | None = None

    # -- life cycle ---------------------------------------------------------------------------------
    def warm_up(self) -> None:
        try:
            from jobrunner.config import get_settings

            self.settings = get_settings()
            from jobrunner.execution.pool import KernelPool

            self.pool = KernelPool.start(self.settings, size=max(1, self.settings.kernel_pool_size))
            import mlflow.tracking  # noqa: F401 - the 2.5 s this service exists to pay once

            from jobrunner.execution import executor, notebooks

            executor._render_html_text(notebooks.new_notebook())  # templates compiled before the first run
            log.warning(
                "service %s ready (pid %d, project %s, pool of %d)",
                self.key,
                os.getpid(),
                self.settings.project_dir,
                self.pool.size,
            )
        except Exception as exc:
            log.exception("service warm-up failed")
            self.failed = f"the execution service could not start: {exc}"
        finally:
            self.ready.set()

    def touch(self, delta: int = 0) -> None:
        with self._lock:
            self.active += delta
            self.last_activity = time.monotonic()

    def idle_watch(self) -> None:
        from jobrunner.cli.service_client import _code_stamp

        stamp = _code_stamp()
        while not self._stopping.wait(1.0):
            if self.settings is None:
                continue
            with self._lock:
                quiet = self.active == 0
                idle = quiet and time.monotonic() - self.last_activity > self.settings.service_idle_timeout
            if idle:
                log.warning("idle for %.0fs: stopping", self.settings.service_idle_timeout)
                self.stop()
            elif quiet and not self.settings.project_dir.is_dir():
                # the project folder is gone (a removed clone or temporary checkout): nobody can call again
                log.warning("project %s no longer exists: stopping", self.settings.project_dir)
                self.stop()
            elif quiet and _code_stamp() != stamp:
                # jobrunner's code changed: new clients compute another key and start a new service
                log.warning("jobrunner's code changed: stopping (clients start a service on the new code)")
                self.stop()

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self.server is not None:
            threading.Thread(target=self.server.shutdown, name="service-stop", daemon=True).start()

    def status(self) -> dict[str, Any]:
        stats = self.pool.stats() if self.pool is not None else None
        return {
            "key": self.key,
            "pid": os.getpid(),
            "cwd": os.getcwd(),
            "ready": self.ready.is_set(),
            "project_dir": str(self.settings.project_dir) if self.settings else None,
            "active": self.active,
            "served": self.served,
            "uptime_s": round(time.time() - self.started_at, 1),
            "log": str(self.paths["log"]),
            "pool": stats.__dict__ if stats else None,
        }


class _Handler(socketserver.StreamRequestHandler):
    server: Any

    def handle(self) -> None:
        service: Service = self.server.service
        send_lock = threading.Lock()

        def send(event: dict[str, Any]) -> bool:
            try:
                with send_lock:
                    self.wfile.write(json.dumps(event, default=str).encode() + b"\n")
                    self.wfile.flush()
                return True
            except OSError:
                return False

        try:
            message = json.loads(self.rfile.readline() or b"{}")
        except json.JSONDecodeError:
            send({"event": "err", "text": "error: malformed request to the execution service\n"})
            send({"event": "exit", "code": int(ExitCode.USAGE)})
            return
        op = message.get("op")
        if message.get("protocol") != PROTOCOL:
            send({"event": "err", "text": "error: execution service protocol mismatch\n"})
            send({"event": "exit", "code": int(ExitCode.INFRA)})
            return
        if op == "status":
            send({"event": "status", "status": service.status()})
        elif op == "stop":
            send({"event": "stopping"})
            service.stop()
        elif op in ("run", "stage"):
            self.run(service, message, send)
        else:
            send({"event": "err", "text": f"error: unknown request {op!r}\n"})
            send({"event": "exit", "code": int(ExitCode.USAGE)})

    def run(self, service: Service, message: dict[str, Any], send: Any) -> None:
        service.touch(+1)
        try:
            service.ready.wait()
            if service.failed:
                return  # closed without "accepted": the client runs in-process and shows the real error
            from jobrunner.cli.run import run_notebook_command
            from jobrunner.execution import executor
            from jobrunner.execution.executor import CancelToken

            token = CancelToken()
            finished = threading.Event()

            def listen() -> None:  # cancel messages, or the client going away, stop the run
                try:
                    for raw in self.rfile:
                        event = json.loads(raw)
                        if event.get("op") == "cancel":
                            token.cancel(str(event.get("reason") or "cancelled"))
                except (OSError, ValueError):
                    pass
                if not finished.is_set():
                    token.cancel("the client went away")

            threading.Thread(target=listen, name="service-listen", daemon=True).start()
            send({"event": "accepted"})
            env = dict(message.get("env") or os.environ)
            executor.caller_env.set(env)  # the kernel's base environment is the caller's
            out = lambda text: send({"event": "out", "text": text})  # noqa: E731
            err = lambda text: send({"event": "err", "text": text})  # noqa: E731
            if message["op"] == "stage":
                code = self.stage(message.get("args", {}).get("argv", []), out, err)
            else:
                code = run_notebook_command(
                    message.get("args", {}),
                    cwd=Path(message.get("cwd") or os.getcwd()),
                    env=env,
                    out=out,
                    err=err,
                    cancel=token,
                    on_progress=lambda p: send(
                        {
                            "event": "progress",
                            "cell_index": p.cell_index,
                            "cells_done": p.cells_done,
                            "cells_total": p.cells_total,
                        }
                    ),
                )
            finished.set()
            service.served += 1
            send({"event": "exit", "code": code})
        except Exception as exc:
            log.exception("request failed")
            send({"event": "err", "text": f"error: the execution service failed: {exc}\n"})
            send({"event": "exit", "code": int(ExitCode.INFRA)})
        finally:
            service.touch(-1)

    @staticmethod
    def stage(argv: list[str], out: Any, err: Any) -> int:
        """`python -m pipelines.stage ARGV` (a DVC stage) in this process, its prints sent to the caller.

        A cancel cannot stop a stage midway (the stage runner takes no cancel token): it runs to its end.
        """
        from pipelines.stage import main as stage_main

        streams_out, streams_err = _installed_streams()
        with streams_out.to(out), streams_err.to(err):
            try:
                return int(stage_main(list(argv)) or 0)
            except SystemExit as exc:  # a stage that exits (sys.exit in a notebook helper) answers its code
                return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def _installed_streams() -> tuple[_ThreadStreams, _ThreadStreams]:
    """The service's sys.stdout and sys.stderr (serve() installs them before it takes a request)."""
    out, err = sys.stdout, sys.stderr
    if not (isinstance(out, _ThreadStreams) and isinstance(err, _ThreadStreams)):
        raise RuntimeError("the execution service's per-thread streams are not installed (serve() does)")
    return out, err


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = False
    block_on_close = True  # stopping waits for running requests: nothing a run records is lost
    service: Service  # set by serve() before it serves


def serve(key: str) -> int:
    p = paths(key)
    lock_file = open(p["lock"], "a+")  # noqa: SIM115 - held for the life of the process
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another service of this key is running or starting
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s service[{os.getpid()}] %(name)s: %(message)s",
    )
    os.environ["JOBRUNNER_SERVICE"] = "off"  # code run here (a stage's main) must not call a service
    sys.stdout, sys.stderr = _ThreadStreams(sys.stdout), _ThreadStreams(sys.stderr)
    service = Service(key)
    p["socket"].unlink(missing_ok=True)  # left by a crashed service: we hold the lock, so it is not live
    server = _Server(str(p["socket"]), _Handler)
    server.service = service
    service.server = server
    os.chmod(p["socket"], 0o600)
    inode = os.stat(p["socket"]).st_ino
    p["info"].write_text(json.dumps({"pid": os.getpid(), "key": key, "cwd": os.getcwd()}))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    threading.Thread(target=service.warm_up, name="service-warm-up", daemon=True).start()
    threading.Thread(target=service.idle_watch, name="service-idle", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        service._stopping.set()
        try:
            if os.stat(p["socket"]).st_ino == inode:
                p["socket"].unlink()
        except FileNotFoundError:
            pass
        server.server_close()  # waits for running requests
        service.ready.wait(STOP_TIMEOUT_S)  # stopped while warming up: the pool it starts is closed too
        if service.pool is not None:
            # bounded: a kernel start hanging on a loaded machine must not keep the service alive; what
            # is left after the deadline is killed (no kernel outlives the service)
            service.pool.close(timeout=STOP_TIMEOUT_S)
        p["info"].unlink(missing_ok=True)
        log.warning("service %s stopped after %d run(s)", key, service.served)
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--key", required=True, help="Service key (computed by the client).")
def main(key: str) -> None:
    """The local execution service: a background process that keeps MLflow imported and kernels warm."""
    sys.exit(serve(key))


if __name__ == "__main__":
    main(prog_name="python -m jobrunner.cli.service")
