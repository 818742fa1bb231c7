"""Kernel acquisition: the one place that starts, prepares, signals and stops notebook kernels.

Every execution gets a kernel that is used for that one job and then shut down immediately (graceful
shutdown stalled for seconds in measurements; a reused kernel would leak the previous job's variables).
`acquire_kernel` hands out either a fresh kernel or, when this process runs a warm pool
(jobrunner.execution.pool.KernelPool), a pre-started one with its client already connected.

Two things every kernel start here does, pooled or not:
- it uses the `ipc` transport by default (Unix sockets in a private folder): there are no TCP ports to
  pick, so two processes starting kernels at once cannot race for the same port (papermill #511,
  jupyter_client #487). With JOBRUNNER_KERNEL_TRANSPORT=tcp, starts are serialised per process until the
  kernel has bound its ports;
- it connects one kernel client and waits until the kernel answers on shell and IOPub (`_handshake`:
  jupyter_client's wait_for_ready without its fixed 0.2 s IOPub drain), so the executor never pays
  nbclient's own client start on the job's clock, and a pool refills 0.2 s sooner.

A pooled kernel was started before its job was known, so its job's environment and working directory
are applied inside it, before the first cell, by `KernelHandle.prepare` - the one place that does it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from jupyter_core.utils import run_sync

from jobrunner.errors import KernelStartError
from jobrunner.execution.forkserver import ForkServer, ForkServerError

log = logging.getLogger(__name__)

TRANSPORTS = ("ipc", "tcp")
_TCP_START_LOCK = threading.Lock()  # tcp: one start at a time per process, until the ports are bound
_IPC_ROOT: str | None = None
_IPC_ROOT_LOCK = threading.Lock()

# Run inside a pooled kernel before the notebook's first cell (silent: no execution count, no output).
# The whole environment is replaced, not merged: the kernel must see exactly its job's variables.
_PREPARE = """\
import os as __jr_os
__jr_os.environ.clear()
__jr_os.environ.update({env!r})
__jr_os.chdir({cwd!r})
del __jr_os
"""
# Preloads import modules without binding names, so the notebook's namespace stays empty. `optional`
# ones may be missing in the kernel's environment (another kernel name without jobrunner installed).
_PRELOAD = """\
import importlib as __jr_importlib
for __jr_name in {modules!r}:
    __jr_importlib.import_module(__jr_name)
for __jr_name in {optional!r}:
    try:
        __jr_importlib.import_module(__jr_name)
    except ImportError:
        pass
del __jr_importlib, __jr_name
"""
# Imported in every pooled kernel: the notebook-side helper every project notebook imports
# (`log_metrics`, `project_path`); its import (settings, pydantic) is ~0.4 s of a job's first cell.
BASE_PRELOAD = ("jobrunner.notebook",)


def _ipc_root() -> str:
    """A private folder (0700) for this process's kernel sockets, removed at interpreter exit."""
    global _IPC_ROOT
    with _IPC_ROOT_LOCK:
        if _IPC_ROOT is None or not os.path.isdir(_IPC_ROOT):
            # short path: Unix socket paths are limited to ~107 bytes; mkdtemp makes a new 0700 folder
            _IPC_ROOT = tempfile.mkdtemp(
                prefix=f"jrk{os.getpid()}-",
                dir="/tmp" if os.path.isdir("/tmp") else None,  # noqa: S108
            )
            import atexit

            atexit.register(shutil.rmtree, _IPC_ROOT, True)
        return _IPC_ROOT


@dataclass
class KernelHandle:
    """A started kernel owned by one execution, with a connected, ready client."""

    manager: AsyncKernelManager
    pgid: int | None
    client: Any = None  # AsyncKernelClient; channels started, kernel answered
    pooled: bool = False
    started_at: float = 0.0
    _closed: bool = field(default=False, repr=False)

    def signal(self, signum: int) -> bool:
        """Send a signal to the kernel's process group (its own session); False if already gone.

        Safe to call from any thread: it uses only the operating system, not the kernel's event loop.
        """
        if self.pgid is None:
            return False
        try:
            os.killpg(self.pgid, signum)
            return True
        except ProcessLookupError:
            return False

    def interrupt(self) -> bool:
        return self.signal(signal.SIGINT)

    def kill(self) -> bool:
        return self.signal(signal.SIGKILL)

    @property
    def pid(self) -> int | None:
        process = getattr(self.manager.provisioner, "process", None)
        return getattr(process, "pid", None)

    def alive(self) -> bool:
        """The kernel process still runs (polls and reaps it; a zombie counts as dead)."""
        process = getattr(self.manager.provisioner, "process", None)
        return process is not None and process.poll() is None

    def run_silent(self, code: str, timeout: float) -> None:
        """Execute `code` in the kernel without output or execution count; KernelStartError on failure."""
        if self.client is None:
            raise KernelStartError("kernel has no connected client")
        try:
            reply = run_sync(self.client.execute_interactive)(
                code, silent=True, store_history=False, timeout=timeout
            )
        except TimeoutError as exc:
            raise KernelStartError(f"kernel did not answer within {timeout:g}s") from exc
        except Exception as exc:
            raise KernelStartError(f"kernel did not run its set-up code: {exc}") from exc
        content = reply.get("content", {})
        if content.get("status") != "ok":
            raise KernelStartError(f"kernel set-up failed: {content.get('ename')}: {content.get('evalue')}")

    def reconnect(self, timeout: float) -> None:
        """Replace the client with one whose sockets belong to the calling thread, and wait until the
        kernel answers on it. A pooled kernel is started (and its client connected) by the pool's filler
        thread but used by the job's thread: ZeroMQ's file descriptors signal edges, so an asyncio loop in
        another thread than the one that first polled the socket misses wake-ups and each wait ran to its
        timeout (10 s stalls before a job's first cell, 1 s between cells). KernelStartError."""
        old = self.client
        self.client = None
        if old is not None:
            try:
                old.stop_channels()
            except Exception:
                log.debug("stopping the filler's kernel client raised", exc_info=True)
        client = self.manager.client()
        client.start_channels()
        self.client = client
        try:
            run_sync(_handshake)(client, timeout)
        except Exception as exc:
            raise KernelStartError(f"kernel did not answer within {timeout:g}s: {exc}") from exc

    def prepare(self, env: Mapping[str, str], cwd: Path, timeout: float = 10.0) -> None:
        """Give a pooled kernel its job's environment (replacing the pool's) and working directory. The
        kernelspec's own `env` (kernel.json) stays on top, as in a kernel started fresh for the job."""
        spec = self.manager.kernel_spec
        job_env = {**env, **dict(spec.env if spec is not None else {})}
        self.run_silent(_PREPARE.format(env=job_env, cwd=str(cwd)), timeout)

    def shutdown(self) -> None:
        """Stop the kernel at once and release its client, sockets and connection file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:
                log.debug("stopping the kernel client raised", exc_info=True)
            self.client = None
        try:
            if run_sync(self.manager.is_alive)():
                run_sync(self.manager.shutdown_kernel)(now=True)
        except Exception:
            log.debug("kernel shutdown raised", exc_info=True)
            self.kill()
        finally:
            try:
                run_sync(self.manager.cleanup_resources)()
            except Exception:
                log.debug("kernel cleanup raised", exc_info=True)
            if self.alive():  # shutdown_kernel gave up: never leave a process behind
                self.kill()


async def _handshake(client: Any, timeout: float, alive: Callable[[], Any] | None = None) -> None:
    """Wait until a newly connected client hears the kernel on shell AND on IOPub (a SUB socket misses
    what is published before its subscription lands): send kernel_info until its status message arrives.
    jupyter_client's wait_for_ready does the same and then drains IOPub for 0.2 s, which a job does not
    need (every reader filters IOPub by its request's msg_id). `alive` (async, e.g. the manager's
    is_alive): checked every second while no reply came, so a kernel that died fails at once."""
    import queue
    import time

    deadline = time.monotonic() + timeout
    while True:
        msg_id = client.kernel_info()
        while True:
            try:
                reply = await client.get_shell_msg(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                if alive is not None and not await alive():
                    raise RuntimeError("the kernel died before replying to kernel_info") from None
                if time.monotonic() >= deadline:
                    raise TimeoutError("no reply from the kernel") from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        try:
            while True:
                msg = await client.get_iopub_msg(timeout=min(0.25, max(0.0, deadline - time.monotonic())))
                if msg["parent_header"].get("msg_id") == msg_id:
                    return
        except queue.Empty:
            if time.monotonic() >= deadline:
                raise TimeoutError("no IOPub message from the kernel") from None


class _ForkProvisioner(LocalProvisioner):
    """jupyter_client's local provisioner, except that the kernel process is forked from a template
    (jobrunner.execution.forkserver) instead of started with Popen. Everything else (connection file, signals
    to the process group, shutdown) is the local provisioner's."""

    forkserver: ForkServer | None = None

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        if self.forkserver is None:
            raise KernelStartError("the fork provisioner was given no template process (forkserver)")
        env = dict(kwargs.get("env") or os.environ)
        cwd = str(kwargs.get("cwd") or os.getcwd())
        try:
            process = self.forkserver.spawn(cmd[3:], env, cwd)  # the arguments after -m ipykernel_launcher
        except ForkServerError as exc:
            raise KernelStartError(str(exc)) from exc
        self.process = process  # type: ignore[assignment]  # Popen's interface, for a process not our child
        self.pid = self.pgid = process.pid  # its own session
        self.cwd = cwd
        return self.connection_info


def fork_template_command(kernel_name: str) -> list[str] | None:
    """The command of a template process that kernels named `kernel_name` can be forked from, or None
    (not an ipykernel started as `<python> -m ipykernel_launcher`)."""
    from jobrunner.execution.forkserver import template_command

    try:
        spec = AsyncKernelManager(kernel_name=kernel_name).kernel_spec
    except Exception:  # noqa: BLE001 - an unknown kernel name fails where it is started, with its own error
        return None
    return template_command(list(spec.argv)) if spec is not None else None


def kernelspec_env(kernel_name: str) -> dict[str, str]:
    spec = AsyncKernelManager(kernel_name=kernel_name).kernel_spec
    return dict(spec.env) if spec is not None and spec.env else {}


def start_kernel(
    kernel_name: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    transport: str = "ipc",
    timeout: float = 60.0,
    preload: Sequence[str] = (),
    optional_preload: Sequence[str] = (),
    forkserver: ForkServer | None = None,
) -> KernelHandle:
    """Start one kernel, connect a client and wait until it answers (one attempt; KernelStartError).
    With `forkserver` (a running template of this kernel name) the kernel is forked from it."""
    import time

    if transport not in TRANSPORTS:
        raise KernelStartError(f"unknown kernel transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
    if transport == "ipc":
        manager = AsyncKernelManager(
            kernel_name=kernel_name, transport="ipc", ip=os.path.join(_ipc_root(), uuid.uuid4().hex[:12])
        )
    else:
        manager = AsyncKernelManager(kernel_name=kernel_name)
    if forkserver is not None:
        manager.kernel_id = str(uuid.uuid4())
        forking = _ForkProvisioner(
            kernel_id=manager.kernel_id, kernel_spec=manager.kernel_spec, parent=manager
        )
        forking.forkserver = forkserver
        manager.provisioner = forking
    # ipykernel warns on every start that local TCP is unencrypted; keep its log to errors so that
    # `dvc repro` and job logs show the notebook's progress, not that banner.
    extra = ["--IPKernelApp.log_level=ERROR"] if manager.ipykernel else []
    started = time.monotonic()
    handle: KernelHandle | None = None
    lock = _TCP_START_LOCK if transport == "tcp" else None
    try:
        if lock:
            lock.acquire()
        try:
            run_sync(manager.start_kernel)(env=dict(env), cwd=str(cwd), extra_arguments=extra)
            provisioner = manager.provisioner
            pgid = getattr(provisioner, "pgid", None) or getattr(provisioner, "pid", None)
            handle = KernelHandle(manager, pgid, started_at=started)
            client = manager.client()
            client.start_channels()
            handle.client = client
            run_sync(_handshake)(client, timeout, manager.is_alive)
        finally:
            if lock:
                lock.release()
        if preload or optional_preload:
            handle.run_silent(
                _PRELOAD.format(modules=list(preload), optional=list(optional_preload)), timeout
            )
    except Exception as exc:
        if handle is not None:
            handle.shutdown()
        else:
            try:
                run_sync(manager.cleanup_resources)()
            except Exception:
                log.debug("kernel '%s': cleanup after the failed start failed", kernel_name, exc_info=True)
        raise KernelStartError(f"kernel '{kernel_name}' failed to start: {exc}") from exc
    return handle


def start_kernel_with_retries(
    kernel_name: str,
    *,
    env: Mapping[str, str],
    cwd: Path,
    transport: str = "ipc",
    timeout: float = 60.0,
    preload: Sequence[str] = (),
    attempts: int = 3,
    on_failure: Any = None,
) -> KernelHandle:
    """`start_kernel` with exponential backoff between attempts (0.5 s, 1 s, ... at most 5 s)."""
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

    def failed(state: Any) -> None:
        log.warning("kernel start failed (attempt %d): %s", state.attempt_number, state.outcome.exception())
        if on_failure is not None:
            on_failure()

    for attempt in Retrying(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=0.5, max=5),
        retry=retry_if_exception_type(KernelStartError),
        after=failed,
        reraise=True,
    ):
        with attempt:
            return start_kernel(
                kernel_name, env=env, cwd=cwd, transport=transport, timeout=timeout, preload=preload
            )
    raise AssertionError("unreachable")  # pragma: no cover


class KernelSource(Protocol):
    """What `acquire_kernel` asks for a kernel when a pool is installed (execution.pool.KernelPool)."""

    kernel_name: str

    def take(self, *, env: Mapping[str, str], cwd: Path) -> KernelHandle: ...

    def retire(self, handle: KernelHandle) -> None: ...


def release_kernel(handle: KernelHandle) -> None:
    """The execution is over: its kernel goes, never to serve again.

    The process is killed at once either way. In a process with a pool (long-lived) the client and
    socket clean-up finishes in the background, off the job's clock; the pool waits for it on close.
    """
    pool = installed_pool(handle.manager.kernel_name)
    if pool is None:
        handle.shutdown()
        return
    handle.kill()
    pool.retire(handle)


_pools: dict[str, KernelSource] = {}
_pools_lock = threading.Lock()


def install_pool(pool: KernelSource) -> None:
    """Make `pool` the source of kernels named `pool.kernel_name` for every execution in this process."""
    with _pools_lock:
        _pools[pool.kernel_name] = pool


def uninstall_pool(pool: KernelSource) -> None:
    with _pools_lock:
        if _pools.get(pool.kernel_name) is pool:
            del _pools[pool.kernel_name]


def installed_pool(kernel_name: str) -> KernelSource | None:
    with _pools_lock:
        return _pools.get(kernel_name)


_pool_factory: Callable[[str], KernelSource | None] | None = None


def install_pool_factory(factory: Callable[[str], KernelSource | None] | None) -> None:
    """`factory(kernel_name)` is asked for a pool when a job wants a kernel name without one (a worker
    opens pools for the kernel names its jobs use, up to JOBRUNNER_KERNEL_POOL_MAX_NAMES; None: no pool,
    a fresh kernel). None uninstalls it."""
    global _pool_factory
    with _pools_lock:
        _pool_factory = factory


def acquire_kernel(
    kernel_name: str, *, env: Mapping[str, str], cwd: Path, transport: str = "ipc", timeout: float = 60.0
) -> KernelHandle:
    """A kernel for one execution, with `env` as its environment and `cwd` as its folder.

    From this process's warm pool when one is installed for `kernel_name` (its environment and folder
    applied inside it), else a fresh kernel started with them. The first job on a kernel name that a
    pool factory opens a pool for starts its kernel on the spot; the pool keeps one warm for the next.
    Raises KernelStartError.
    """
    pool = installed_pool(kernel_name)
    if pool is None and _pool_factory is not None:
        pool = _pool_factory(kernel_name)
    if pool is not None:
        return pool.take(env=env, cwd=cwd)
    return start_kernel_with_retries(kernel_name, env=env, cwd=cwd, transport=transport, timeout=timeout)


def installed_kernel_names() -> list[str]:
    """Names of the Jupyter kernelspecs installed here (JUPYTER_PATH / JUPYTER_DATA_DIR count)."""
    from jupyter_client.kernelspec import KernelSpecManager

    return sorted(KernelSpecManager().find_kernel_specs())


def check_kernel_name(name: str | None) -> str | None:
    """`name` if it is an installed kernelspec (None stays None: the workers' default); InvalidJobOption
    naming the installed ones otherwise. Workers run the same image as the submitters, so the kernels
    installed here are the ones installed on the workers."""
    from jobrunner.errors import InvalidJobOption

    if name is None:
        return None
    names = installed_kernel_names()
    if name not in names:
        raise InvalidJobOption(
            "kernel",
            f"kernel {name!r} is not installed; installed kernels: "
            f"{', '.join(names) or '(none)'} (see: jupyter kernelspec list)",
        )
    return name
