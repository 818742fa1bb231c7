"""Kernels forked from a pre-imported template process: a kernel start without the start-up imports.

Starting an ipykernel costs ~0.5 CPU-s, almost all of it importing Python, IPython, ipykernel, ZeroMQ and
`jobrunner.notebook`. A warm pool (jobrunner.execution.pool) takes that off a job's latency but not off the
machine: every job still pays one kernel start, since a kernel serves one job. A `ForkServer` is one
long-lived *template* process per pool that has imported all of that once (and the pool's preload modules);
each kernel is `os.fork()`ed from it and only initialises its sockets and shell (~0.05 CPU-s), sharing the
imported modules' memory copy-on-write.

What a forked kernel gets, so that it is the kernel a fresh start would give:
- its own session and process group (signals and `killpg` work as for a Popen'd kernel), stdin on
  /dev/null, stdout and stderr where the template's stderr goes;
- exactly the environment and working directory it was launched with, plus what the template's imports
  added to `os.environ` (as those imports would have in a fresh kernel), the locale set from that
  environment as a new interpreter sets it, and `sys.argv` and `sys.path` as `python -m
  ipykernel_launcher` in that folder has them;
- fresh random state: `random` reseeds itself at fork, NumPy's global generator is reseeded here;
- `--IPKernelApp.parent_handle` set to the template, so a kernel exits when its template does, and the
  template exits when the process that started it does (end of its stdin).

Not the same as a fresh kernel, by construction: the str hash seed (PYTHONHASHSEED) and anything else a
module computed at import time come from the template. The pool therefore starts a kernel the usual way
for a job whose PYTHONHASHSEED differs from the pool's (jobrunner.execution.pool).

Used only where the kernelspec runs `<python> -m ipykernel_launcher ...` with a Python that can import
jobrunner; any other kernel (another language, another environment without jobrunner) starts the usual
way. JOBRUNNER_KERNEL_FORK=off turns it off.

The template speaks JSON lines on its stdin/stdout: a first line with what to import, answered by
{"ready": pid}; then one {"argv", "env", "cwd"} per kernel, answered by {"pid": N} or {"error": "..."}.
This module is the template's program too (`python -m jobrunner.execution.forkserver`), so its top level
imports only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from typing import Any

PROTOCOL = 1
# What a kernel imports while it starts (measured: `IPKernelApp.initialize` after importing
# ipykernel.kernelapp still imported 160 modules, the debugger's debugpy 0.14 s of them), imported once in the
# template.
_KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "ipykernel.comm",
    "IPython.core.history",
    "IPython.core.completer",
    "sqlite3",
    "pdb",
    "pydoc",
)


# -- the template process (runs in the kernel's Python) -------------------------------------------------
class _BecomeKernel(Exception):
    def __init__(self, argv: list[str]):
        super().__init__()
        self.argv = argv


def _reap(signum: int, frame: Any) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _locale_of_a_new_interpreter() -> None:
    """What a Python interpreter does with the locale at its start (PEP 538 and 3.x's setlocale), for the
    forked kernel's environment: a C or POSIX LC_CTYPE (no LC_ALL) is coerced to a UTF-8 one, exported as
    LC_CTYPE, and LC_CTYPE is set from the environment. (The encodings Python fixed at its start stay the
    template's.)"""
    import locale

    if os.environ.get("PYTHONCOERCECLOCALE") != "0" and not os.environ.get("LC_ALL"):
        effective = os.environ.get("LC_CTYPE") or os.environ.get("LANG") or "C"
        if effective in ("C", "POSIX"):
            for target in ("C.UTF-8", "C.utf8", "UTF-8"):
                try:
                    locale.setlocale(locale.LC_CTYPE, target)
                except locale.Error:
                    continue
                os.environ["LC_CTYPE"] = target
                break
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")


def _spawn(
    request: dict[str, Any], added_env: dict[str, str], ctl: tuple[Any, Any], template_cwd: str, argv0: str
) -> int:
    """Fork one kernel; in the child, raises _BecomeKernel once it is set up. The parent returns the
    child's pid after the child reports its set-up (its own session, folder and environment) done."""
    argv = [str(a) for a in request["argv"]]
    env = {str(k): str(v) for k, v in request["env"].items()}
    cwd = str(request["cwd"])
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the kernel-to-be
        os.close(ready_r)
        try:
            for stream in ctl:  # the template's control pipes are not the kernel's
                stream.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.setsid()
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(
                {
                    **{k: v for k, v in added_env.items() if k not in env},
                    **env,
                    "JPY_PARENT_PID": str(os.getppid()),
                }
            )  # as jupyter_client's launcher sets it
            _locale_of_a_new_interpreter()
            if sys.path and sys.path[0] in ("", template_cwd):
                del sys.path[0]  # as ipykernel_launcher does; the kernel's shell adds '' after the stdlib
            numpy = sys.modules.get("numpy")
            if numpy is not None:
                numpy.random.seed()  # the legacy global generator was seeded once, in the template
            os.write(ready_w, b"ok")
        except BaseException as exc:  # noqa: BLE001 - reported to the template, then this child ends
            try:
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode()[:4000])
            finally:
                os._exit(70)
        finally:
            os.close(ready_w)
        raise _BecomeKernel([argv0, *argv, f"--IPKernelApp.parent_handle={os.getppid()}"])
    os.close(ready_w)
    chunks = []
    while True:
        chunk = os.read(ready_r, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(ready_r)
    answer = b"".join(chunks).decode(errors="replace")
    if answer != "ok":
        raise RuntimeError(answer or "the forked kernel ended before its set-up")
    return pid


def _serve() -> list[str] | None:
    """The template's loop; returns a kernel's argv in a forked child, None when the template ends."""
    ctl_in = os.dup(0)
    ctl_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # a kernel's stdout goes where the template's stderr goes
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C of a terminal: the starting process decides
    reader = os.fdopen(ctl_in, "r", encoding="utf-8")
    writer = os.fdopen(ctl_out, "w", encoding="utf-8", buffering=1)

    def answer(obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj) + "\n")
        writer.flush()

    first = reader.readline()
    if not first:
        return None
    hello = json.loads(first)
    before = dict(os.environ)
    import importlib
    import importlib.util

    try:
        for name in (*_KERNEL_MODULES, *hello.get("modules", [])):
            importlib.import_module(name)
    except BaseException as exc:  # noqa: BLE001 - the starting process falls back to fresh kernels
        answer({"error": f"importing {name!r} failed: {type(exc).__name__}: {exc}"})
        return None
    missing = []
    for name in hello.get("optional", []):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    added_env = {k: v for k, v in os.environ.items() if k not in before}
    threads = threading.active_count()
    signal.signal(signal.SIGCHLD, _reap)
    template_cwd = os.getcwd()
    launcher = importlib.util.find_spec("ipykernel_launcher")
    argv0 = launcher.origin if launcher is not None and launcher.origin else "ipykernel_launcher"
    answer({"ready": os.getpid(), "protocol": PROTOCOL, "missing": missing, "threads": threads})
    for line in reader:
        try:
            pid = _spawn(json.loads(line), added_env, (reader, writer), template_cwd, argv0)
        except _BecomeKernel as become:
            return become.argv
        except Exception as exc:  # noqa: BLE001 - one failed fork is that kernel's error, not the template's
            answer({"error": f"{type(exc).__name__}: {exc}"})
            continue
        answer({"pid": pid})
    return None


# -- the starting process's side ---------------------------------------------------------------------
class ForkServerError(Exception):
    """The template could not start, or could not fork a kernel."""


def template_command(argv: list[str]) -> list[str] | None:
    """The template's command for a kernelspec whose (formatted) argv is `<python> -m ipykernel_launcher
    ...`, or None when its kernels cannot be forked from one."""
    if len(argv) < 3 or argv[1:3] != ["-m", "ipykernel_launcher"]:
        return None
    python = (
        sys.executable
        if argv[0] in {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}
        else argv[0]
    )
    # the last argument names what it forks: `ps` shows the template and each kernel forked from it (whose
    # command line is the template's) as `... jobrunner.execution.forkserver ipykernel_launcher`
    return [python, "-m", "jobrunner.execution.forkserver", "ipykernel_launcher"]


class ForkedProcess:
    """What jupyter_client's provisioner asks of a Popen, for a kernel that is the template's child (the
    template reaps it; its exit status is not known here, so `returncode` is -1 once it has ended)."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        import psutil

        self.pid = pid
        self.returncode: int | None = None
        try:
            self._proc: Any = psutil.Process(pid)  # remembers its start time: a reused pid is not it
        except psutil.NoSuchProcess:
            self._proc = None
            self.returncode = -1

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        import psutil

        try:
            running = self._proc.is_running() and self._proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            running = False
        if not running:
            self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                import subprocess

                raise subprocess.TimeoutExpired(f"kernel {self.pid}", timeout or 0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """One template process; `spawn` forks kernels from it. Thread-safe; see the module docstring."""

    def __init__(
        self,
        command: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        modules: tuple[str, ...] = (),
        optional: tuple[str, ...] = (),
        timeout: float = 60.0,
    ):
        self.command = command
        self.env = env
        self.cwd = cwd
        self.modules = modules
        self.optional = optional
        self.timeout = timeout
        self.missing: list[str] = []
        self._proc: Any = None
        self._buffer = b""
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ForkServer:
        """Start the template and wait until it has imported everything (ForkServerError)."""
        import subprocess

        with self._lock:
            # our own module (jobrunner.execution.forkserver) under the kernelspec's python, a list argv
            self._proc = subprocess.Popen(  # noqa: S603
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
            try:
                reply = self._ask(
                    {"modules": list(self.modules), "optional": list(self.optional)}, self.timeout
                )
            except ForkServerError:
                self._stop()
                raise
            if "ready" not in reply:
                self._stop()
                raise ForkServerError(f"the kernel template did not start: {reply.get('error', reply)}")
            self.missing = list(reply.get("missing", []))
            if reply.get("threads", 1) > 1:  # forking a process with threads copies only the forking one
                log_warning(
                    "the kernel template has %s threads after its imports; kernels forked from it lose them",
                    reply["threads"],
                )
        return self

    def spawn(self, argv: list[str], env: dict[str, str], cwd: str, timeout: float = 10.0) -> ForkedProcess:
        """Fork one kernel with `argv` (the arguments after `-m ipykernel_launcher`), `env` and `cwd`."""
        with self._lock:
            if not self.alive():
                raise ForkServerError("the kernel template is not running")
            reply = self._ask({"argv": argv, "env": env, "cwd": cwd}, timeout)
        if "pid" not in reply:
            raise ForkServerError(f"the kernel template could not fork a kernel: {reply.get('error', reply)}")
        return ForkedProcess(int(reply["pid"]))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the template (its kernels end with it: their parent is gone). Idempotent."""
        with self._lock:
            self._stop(timeout)

    def _stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.close()  # the template ends at the end of its input
            proc.wait(timeout)
        except Exception:  # noqa: BLE001 - it did not end by itself: it is killed
            proc.kill()
            proc.wait(5)
        finally:
            proc.stdout.close()

    def _ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        import select
        import time

        proc = self._proc
        try:
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
        except OSError as exc:
            raise ForkServerError(f"the kernel template is gone ({exc})") from exc
        deadline = time.monotonic() + timeout
        fd = proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._stop(0.1)
                raise ForkServerError(f"the kernel template did not answer within {timeout:g}s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = proc.poll()
                self._stop(0.1)
                raise ForkServerError(f"the kernel template ended (exit status {code})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, Any] = json.loads(line)
        return reply


def log_warning(message: str, *args: object) -> None:
    import logging

    logging.getLogger(__name__).warning(message, *args)


def main() -> None:
    argv = _serve()
    if argv is None:
        return
    sys.argv = argv  # as `python -m ipykernel_launcher` would see them
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()
