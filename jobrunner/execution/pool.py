"""A warm pool of notebook kernels for long-lived processes (workers, the local execution service).

`KernelPool.start(settings)` keeps `kernel_pool_size` kernels of one kernel name started ahead of demand,
each with a connected client that has already answered, and installs itself behind
`jobrunner.execution.kernels.acquire_kernel`, so `execute()` takes from it without knowing. Rules:

- a kernel serves ONE job and is never returned: the executor shuts it down after the job, and a
  replacement starts in the background. A job therefore never sees another job's variables;
- a pooled kernel starts in an empty scratch folder with the pool's environment; the job's environment
  (replaced whole) and working directory are applied inside it before the first cell
  (`KernelHandle.prepare`);
- an idle kernel that died is dropped by the filler thread (checked every second) and again at take
  time; one that hangs fails `prepare` within `health_timeout` and is killed: neither is handed out;
- starts retry with exponential backoff (tenacity); after `size` consecutive failures the filler backs
  off up to 30 s and a take starts a fresh kernel itself (and reports that error if it also fails);
- `close()` kills every idle kernel and waits for a start in flight and for used kernels still being
  cleaned up, all within one deadline, after which it kills what is left: no kernel process remains;
- every pooled kernel pre-imports `jobrunner.notebook` (what project notebooks import first).

`preload` (JOBRUNNER_KERNEL_PRELOAD=numpy,pandas,sklearn) imports modules in each idle kernel: a job that
uses them skips those imports (about 1 s for pandas + scikit-learn), at the price of memory per idle
kernel (an idle ipykernel is ~55 MB RSS; with numpy, pandas and scikit-learn ~150 MB).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jobrunner.errors import KernelStartError
from jobrunner.execution.forkserver import ForkServer, ForkServerError
from jobrunner.execution.kernels import (
    BASE_PRELOAD,
    KernelHandle,
    fork_template_command,
    install_pool,
    kernelspec_env,
    start_kernel,
    uninstall_pool,
)

if TYPE_CHECKING:
    from jobrunner.config import Settings

log = logging.getLogger(__name__)

# Variables of the process that starts the pool that must not reach an idle kernel: they belong to
# one job and are set per job by `prepare`.
_JOB_ONLY_ENV = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "JOBRUNNER_METRICS_FILE")


@dataclass(frozen=True)
class PoolStats:
    kernel_name: str
    size: int
    idle: int
    starting: int
    taken: int  # handed out warm
    missed: int  # takes that found no idle kernel and started one on the spot
    replaced: int  # idle kernels found dead or hung and discarded
    start_failures: int
    forked: int = 0  # kernels forked from the pool's template process (jobrunner.execution.forkserver)
    template_starts: int = 0  # template processes started (more than 1: one died and was replaced)


class KernelPool:
    """N warm kernels of one kernel name; see the module docstring."""

    def __init__(
        self,
        kernel_name: str = "python3",
        size: int = 1,
        *,
        preload: Sequence[str] = (),
        transport: str = "ipc",
        start_timeout: float = 60.0,
        health_timeout: float = 10.0,
        env: Mapping[str, str] | None = None,
        on_take: Callable[[float], None] | None = None,
        fork: bool = True,
    ):
        if size < 0:
            raise ValueError(f"kernel pool size must be >= 0, got {size}")
        self.kernel_name = kernel_name
        self.size = size
        self.preload = tuple(m.strip() for m in preload if m.strip())
        self.transport = transport
        self.start_timeout = start_timeout
        self.health_timeout = health_timeout
        base = dict(os.environ if env is None else env)
        for key in _JOB_ONLY_ENV:
            base.pop(key, None)
        self._env = base
        self.on_take = on_take
        self._idle: deque[KernelHandle] = deque()
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        self._closing = threading.Event()  # set with _closed, for tenacity
        self._failures_in_a_row = 0
        self._taken = self._missed = self._replaced = self._start_failures = 0
        self._scratch = tempfile.mkdtemp(prefix="jobrunner-pool-")
        self.fork = fork and size > 0  # size 0: the fresh-kernel behaviour, no template either
        self._forkserver: ForkServer | None = None
        self._fork_lock = threading.Lock()
        self._fork_retry_at = 0.0  # after a template failed to start: not before this (monotonic)
        self._fork_command: list[str] | None = None
        self._forked = self._template_starts = 0
        self._fork_failures = 0  # template starts that failed in a row
        self._threads: list[threading.Thread] = []
        self._retiring: list[tuple[threading.Thread, KernelHandle]] = []

    # -- lifecycle -----------------------------------------------------------------------------------
    @classmethod
    def start(
        cls, settings: Settings, *, size: int | None = None, on_take: Callable[[float], None] | None = None
    ) -> KernelPool:
        """A pool configured by `settings`, filling in the background and installed for this process."""
        pool = cls(
            settings.kernel_name,
            settings.kernel_pool_size if size is None else size,
            preload=settings.kernel_preload_modules,
            transport=settings.kernel_transport,
            start_timeout=settings.kernel_start_timeout,
            on_take=on_take,
            fork=settings.kernel_fork,
        )
        pool.open()
        return pool

    def open(self) -> KernelPool:
        install_pool(self)
        if self.size > 0:
            # one start at a time per filler: a new process's start is CPU-bound (a loaded 2-core machine
            # starts two in sequence no slower than both at once); a forked kernel's start is mostly waiting
            # for it to answer, so two fillers keep a pool full while jobs take kernels back to back
            fillers = 2 if self.fork and self.size >= 2 else 1
            self._threads = [
                threading.Thread(
                    target=self._fill_loop, name=f"kernel-pool-{self.kernel_name}-{n}", daemon=True
                )
                for n in range(fillers)
            ]
            for thread in self._threads:
                thread.start()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop filling and leave no kernel process, within ONE deadline (`timeout`, default
        start_timeout + 5 s): idle kernels are killed at once; a start in flight and used kernels still
        being cleaned up get until the deadline, then whatever of this pool is left is killed."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._closing.set()
            self._cond.notify_all()
        uninstall_pool(self)
        wait = timeout if timeout is not None else self.start_timeout + 5
        deadline = time.monotonic() + wait

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        with self._cond:  # final: once closed, the filler shuts a kernel it just started down itself
            idle, self._idle = list(self._idle), deque()
        for handle in idle:
            handle.kill()  # an idle kernel has nothing to save: no graceful shutdown to wait for
            handle.shutdown()
        for thread in self._threads:
            thread.join(left())
        with self._cond:
            retiring, self._retiring = self._retiring, []
        for thread, _ in retiring:
            thread.join(left())
        late = [handle for thread, handle in retiring if thread.is_alive()]
        for handle in late:
            handle.kill()
        starting = any(thread.is_alive() for thread in self._threads)
        if starting or late:
            killed = self._kill_starting() if starting else 0
            log.warning(
                "kernel pool %s: not closed within %.0fs; killed %d kernel(s) still starting and %d "
                "still being cleaned up",
                self.kernel_name,
                wait,
                killed,
                len(late),
            )
            for thread in self._threads:
                thread.join(5.0)  # its start fails at once now, and a closed pool starts no other
        with self._fork_lock:
            if self._forkserver is not None:  # last: kernels of jobs still running end with their template
                self._forkserver.close()
                self._forkserver = None
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _kill_starting(self) -> int:
        """Kill this pool's kernels still starting: children of this process whose working folder is the
        pool's scratch folder (every pooled kernel starts there; a job's kernel works elsewhere)."""
        import psutil

        scratch = os.path.realpath(self._scratch)
        killed = 0
        for child in psutil.Process().children(recursive=True):
            try:
                if os.path.realpath(child.cwd()) != scratch:
                    continue
                if os.getpgid(child.pid) == child.pid:  # its own session, as kernels are started
                    os.killpg(child.pid, signal.SIGKILL)
                else:
                    child.kill()
                killed += 1
            except (psutil.Error, OSError):
                continue
        return killed

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float) -> bool:
        """Block until `size` kernels are idle (benchmarks, tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._idle) < self.size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
            return len(self._idle) >= self.size

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                self.kernel_name,
                self.size,
                len(self._idle),
                self._starting,
                self._taken,
                self._missed,
                self._replaced,
                self._start_failures,
                self._forked,
                self._template_starts,
            )

    def idle_pids(self) -> list[int]:
        with self._cond:
            return [h.pid for h in self._idle if h.pid is not None]

    # -- taking --------------------------------------------------------------------------------------
    def take(self, *, env: Mapping[str, str], cwd: Path) -> KernelHandle:
        """A ready kernel carrying `env` and `cwd`, never one that served another job. KernelStartError."""
        t0 = time.monotonic()
        while True:
            with self._cond:
                if self._closed:
                    raise KernelStartError("the kernel pool is closed")
                own_seed = env.get("PYTHONHASHSEED") != self._env.get("PYTHONHASHSEED")
                handle = self._idle.popleft() if self._idle and not own_seed else None
                self._cond.notify_all()  # the filler starts a replacement
            if handle is None:
                with self._cond:
                    self._missed += 1
                # no idle kernel (or the job sets its own str hash seed, which a kernel gets only at its
                # start, never from the pool's template): a kernel started for the job, as without a pool
                handle = self._start_one(env=env, cwd=cwd, fork=not own_seed)
                break
            if not handle.alive():
                self._discard(handle, "died while idle")
                continue
            try:
                handle.reconnect(self.health_timeout)  # sockets of this thread (see reconnect)
                handle.prepare(env, cwd, timeout=self.health_timeout)
            except KernelStartError as exc:
                self._discard(handle, f"did not take its job's set-up ({exc})")
                continue
            with self._cond:
                self._taken += 1
            break
        if self.on_take is not None:
            self.on_take(time.monotonic() - t0)
        return handle

    def retire(self, handle: KernelHandle) -> None:
        """Finish shutting down a used kernel in the background (see kernels.release_kernel)."""
        thread = threading.Thread(target=handle.shutdown, name="kernel-retire", daemon=True)
        with self._cond:
            self._retiring = [(t, h) for t, h in self._retiring if t.is_alive()] + [(thread, handle)]
        thread.start()

    def _discard(self, handle: KernelHandle, why: str) -> None:
        log.warning(
            "kernel pool %s: idle kernel (pid %s) %s; replacing it", self.kernel_name, handle.pid, why
        )
        with self._cond:
            self._replaced += 1
        handle.kill()
        handle.shutdown()

    # -- filling -------------------------------------------------------------------------------------
    def _template(self) -> ForkServer | None:
        """The pool's running template process (jobrunner.execution.forkserver), started on first use and
        again if it died; None when this kernel cannot be forked or the template failed to start within the
        last 30 s (kernels then start the usual way)."""
        if not self.fork:
            return None
        with self._fork_lock:
            server = self._forkserver
            if server is not None and server.alive():
                return server
            if server is not None:
                log.warning(
                    "kernel pool %s: the kernel template (pid %s) ended; starting another",
                    self.kernel_name,
                    server.pid,
                )
                server.close(0.5)
                self._forkserver = None
            if self._closing.is_set() or time.monotonic() < self._fork_retry_at:
                return None
            if self._fork_command is None:
                self._fork_command = fork_template_command(self.kernel_name) or []
                if not self._fork_command:
                    log.info(
                        "kernel pool %s: its kernelspec is not `python -m ipykernel_launcher`; kernels start "
                        "one by one",
                        self.kernel_name,
                    )
            if not self._fork_command:
                self.fork = False
                return None
            folder = os.path.join(self._scratch, ".template")  # not the kernels' folder: see _kill_starting
            os.makedirs(folder, exist_ok=True)
            env = {**self._env, **kernelspec_env(self.kernel_name), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
            server = ForkServer(
                self._fork_command,
                env=env,
                cwd=folder,
                modules=self.preload,
                optional=BASE_PRELOAD,
                timeout=self.start_timeout,
            )
            try:
                server.start()
            except (ForkServerError, OSError) as exc:
                self._fork_failures += 1
                self._fork_retry_at = time.monotonic() + 30.0
                if self._fork_failures >= 3:  # e.g. a kernelspec's Python without jobrunner: not transient
                    self.fork = False
                log.warning(
                    "kernel pool %s: the kernel template did not start (%s); kernels start the usual way%s",
                    self.kernel_name,
                    exc,
                    " from now on" if not self.fork else ", template again in 30 s",
                )
                return None
            self._fork_failures = 0
            self._forkserver = server
            self._template_starts += 1
            log.info("kernel pool %s: kernel template pid %s ready", self.kernel_name, server.pid)
            return server

    def _start_one(
        self, *, env: Mapping[str, str], cwd: Path, preload: Sequence[str] | None = None, fork: bool = True
    ) -> KernelHandle:
        """One kernel with retries; `preload` None: a kernel for a job right now (no preloading). Forked
        from the pool's template when there is one (the template has imported the preloads); an attempt
        after a failed one starts the usual way."""
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_any,
            stop_when_event_set,
            wait_exponential,
        )

        def failed(state: RetryCallState) -> None:
            with self._cond:
                self._start_failures += 1
            error = state.outcome.exception() if state.outcome is not None else None  # set after an attempt
            log.warning("kernel pool %s: kernel start failed: %s", self.kernel_name, error)

        stop = stop_any(stop_after_attempt(3), stop_when_event_set(self._closing))  # closing: no other try
        for attempt in Retrying(
            stop=stop,
            wait=wait_exponential(multiplier=0.5, max=5),
            retry=retry_if_exception_type(KernelStartError),
            after=failed,
            reraise=True,
        ):
            with attempt:
                template = self._template() if fork and attempt.retry_state.attempt_number == 1 else None
                if template is not None:
                    handle = start_kernel(
                        self.kernel_name,
                        env=env,
                        cwd=cwd,
                        transport=self.transport,
                        timeout=self.start_timeout,
                        forkserver=template,
                    )
                    with self._cond:
                        self._forked += 1
                    return handle
                return start_kernel(
                    self.kernel_name,
                    env=env,
                    cwd=cwd,
                    transport=self.transport,
                    timeout=self.start_timeout,
                    preload=preload or (),
                    optional_preload=BASE_PRELOAD if preload is not None else (),
                )
        raise AssertionError("unreachable")  # pragma: no cover

    def _prune_dead(self) -> None:
        with self._cond:
            dead = [h for h in self._idle if not h.alive()]
            for h in dead:
                self._idle.remove(h)
        for h in dead:
            self._discard(h, "died while idle")

    def _closed_now(self) -> bool:
        """`_closed` as it is now (read under `_cond`): close() may have set it while this thread started a
        kernel or waited. A call, so that mypy does not carry over the narrowing of an earlier check."""
        return self._closed

    def _fill_loop(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                if self._closed:
                    return
                need = len(self._idle) + self._starting < self.size
                if need:
                    self._starting += 1
                else:
                    self._cond.wait(1.0)  # woken by a take or close; the timeout paces the dead-kernel check
            self._prune_dead()
            if not need:
                continue
            try:
                # one start at a time per filler thread (see open)
                handle = self._start_one(env=self._env, cwd=Path(self._scratch), preload=self.preload)
            except KernelStartError as exc:
                with self._cond:
                    self._starting -= 1
                    self._failures_in_a_row += 1
                backoff = min(30.0, max(1.0, backoff * 2))
                log.error(
                    "kernel pool %s: could not start a kernel (%s); next try in %.0fs",
                    self.kernel_name,
                    exc,
                    backoff,
                )
                with self._cond:
                    if self._closed_now():
                        return
                    self._cond.wait(backoff)
                continue
            backoff = 0.0
            with self._cond:
                self._starting -= 1
                self._failures_in_a_row = 0
                if self._closed_now():
                    closed = True
                else:
                    closed = False
                    self._idle.append(handle)
                    self._cond.notify_all()
            if closed:
                handle.shutdown()
                return
