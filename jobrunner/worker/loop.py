"""`jobrunner worker`: consume job messages one at a time and run them through the executor.

Deliveries come from the source of the broker of JOBRUNNER_BROKER_URL (jobrunner.queue.broker.broker_for),
one processing path for all (attempt.JobRun):
- queue.amqp.AmqpSource (amqp://...): prefetch 1, manual acks, acked late, on the connection the delivery
  came on; the job thread never touches pika, so a broker blip while a job runs never wedges the worker.
- queue.embedded.EmbeddedSource (no broker): the `job_outbox` table is the queue, taken with SKIP LOCKED.

Busy or idle, each worker relays the outbox to the broker and runs the reaper (reaper.py) every
poll interval. SIGTERM/SIGINT stop consuming; a running job may finish within worker_grace_period, after
that it is stopped (the executor interrupts, then kills its kernel) and requeued - in every state,
connected to the broker or not.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import InfrastructureError, StoreUnavailable
from jobrunner.execution.kernels import install_pool_factory
from jobrunner.queue.broker import broker_for
from jobrunner.store.notify import Notifier
from jobrunner.worker.attempt import JobRun, Outcome
from jobrunner.worker.metrics import WorkerMetrics
from jobrunner.worker.reaper import Presence, Reaper

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None, burst: bool = False):
        self.settings = settings
        self.id = worker_id or settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.burst = burst
        self.metrics = WorkerMetrics()
        self.stopping = threading.Event()
        self.stop_requested_at: float | None = None
        self.current: JobRun | None = None
        self._thread: threading.Thread | None = None
        self._last_housekeeping = 0.0
        self.reaper = Reaper(settings, self.id)

    # -- lifecycle ------------------------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            log.warning(
                "worker %s: stop requested; finishing the current job (grace %.0fs)",
                self.id,
                self.settings.worker_grace_period,
            )
            self.stop_requested_at = time.monotonic()
            self.stopping.set()

    def run(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.request_stop)
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack
        self.metrics.serve(self.settings.worker_metrics_port)
        _install_tracer_provider()
        _warm_up()
        pool = self.metrics.start_pool(self.settings)  # warm single-use kernels (jobrunner.execution.pool)
        pools = KernelPools(self.settings, pool)
        install_pool_factory(pools.open_for)  # jobs on other kernel names (docs/jobs.md, "Kernels")
        broker = broker_for(self.settings)
        self.check_store()
        notifier = Notifier(
            self.settings, self.id
        ).start()  # webhooks, apart from the jobs (jobrunner.store.notify)
        log.warning("worker %s started (%s)", self.id, broker.name)
        try:
            broker.source(self).run()
        finally:
            notifier.close()
            install_pool_factory(None)
            pools.close()  # no kernel process outlives the worker
        log.warning("worker %s stopped", self.id)

    def check_store(self) -> None:
        """Refuse to start on a database without the jobrunner schema; an unreachable one is retried later."""
        from jobrunner.errors import StoreNotMigrated
        from jobrunner.store.db import session_scope

        try:
            with session_scope(self.settings):
                pass
        except StoreNotMigrated:
            raise
        except InfrastructureError as exc:
            log.warning("worker %s: %s; starting anyway, will retry", self.id, exc)

    # -- shared pieces ------------------------------------------------------------------------------
    def start_job(self, payload: dict[str, Any], done: Any) -> None:
        """Process `payload` in a JobRun thread; `done(outcome)` is called from that thread, always.

        `done` must not fail and must not touch the broker connection (pika is not thread-safe); the
        caller clears `current` with job_done() once it has the outcome.
        """
        run = JobRun(
            self.settings, self.id, payload, self.metrics, self.stopping, may_take_over=self.reaper.trusted
        )
        self.current = run

        def target() -> None:
            outcome = Outcome("retry_later", "processing ended without an outcome")
            try:
                # one span per delivery: every log line of the job carries its trace id (jobrunner.logs)
                with _tracer().start_as_current_span("job", attributes={"job.id": run.job_id}):
                    outcome = run.process()
            except BaseException as exc:
                log.exception("job %s: processing crashed", run.job_id)
                outcome = Outcome("retry_later", repr(exc))
            finally:
                done(outcome)

        self._thread = threading.Thread(target=target, name=f"job-{run.job_id[:8]}", daemon=True)
        self._thread.start()

    def job_done(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.current = None
        self._thread = None

    def enforce_grace(self) -> None:
        """After the grace period of a stop, stop the running job (it is then requeued)."""
        run = self.current
        if (
            run is not None
            and self.stop_requested_at is not None
            and not run.token.cancelled
            and time.monotonic() - self.stop_requested_at > self.settings.worker_grace_period
        ):
            log.warning("job %s: grace period over; stopping it and requeueing", run.job_id)
            run.token.cancel("shutdown")

    def housekeeping(
        self, channel: Any = None, *, presence: Presence | None = None, force: bool = False
    ) -> None:
        """Reap dead workers' jobs, relay the outbox (reaped jobs' messages too), refresh the gauge."""
        now = time.monotonic()
        if not force and now - self._last_housekeeping < self.settings.worker_poll_interval:
            return
        self._last_housekeeping = now
        from jobrunner.queue.relay import relay_once
        from jobrunner.store import queries as store
        from jobrunner.store.db import session_scope

        try:
            self.reaper.run_once(presence)
            if channel is not None:
                relay_once(self.settings, channel=channel)
            with session_scope(self.settings) as session:
                self.metrics.set_counts(store.count_by_state(session=session))
        except InfrastructureError as exc:
            if isinstance(exc, StoreUnavailable):
                self.reaper.store_failed()
            log.warning("worker %s: housekeeping failed (%s); will retry", self.id, exc)


class KernelPools:
    """The worker's warm pools: the default kernel's, plus one per further kernel name a job asked for,
    opened on first use (that job starts its kernel cold), up to JOBRUNNER_KERNEL_POOL_MAX_NAMES names in
    all; jobs on names beyond that start a fresh kernel each."""

    def __init__(self, settings: Settings, default: Any):
        self.settings = settings
        self.pools: dict[str, Any] = {default.kernel_name: default}
        self.lock = threading.Lock()

    def open_for(self, kernel_name: str) -> Any:
        from jobrunner.execution.pool import KernelPool

        with self.lock:
            if kernel_name in self.pools:
                return self.pools[kernel_name]
            if len(self.pools) >= self.settings.kernel_pool_max_names or self.settings.kernel_pool_size == 0:
                return None
            # no preloads: the modules of JOBRUNNER_KERNEL_PRELOAD may be missing in another environment
            pool = KernelPool(
                kernel_name,
                self.settings.kernel_pool_size,
                transport=self.settings.kernel_transport,
                start_timeout=self.settings.kernel_start_timeout,
                fork=self.settings.kernel_fork,
            ).open()
            self.pools[kernel_name] = pool
            log.info("kernel pool opened for kernel %s", kernel_name)
            return pool

    def close(self) -> None:
        with self.lock:
            pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            pool.close()


def _tracer() -> Any:
    from opentelemetry import trace

    return trace.get_tracer("jobrunner.worker")


def _install_tracer_provider() -> None:
    """An SDK tracer provider (ids for log lines; no exporter) unless the process already has one."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())


def _warm_up() -> None:
    """Import the execution stack once at start, not inside the first job (seconds on a busy machine)."""
    import nbconvert  # noqa: F401
    import papermill  # noqa: F401

    import jobrunner.execution.executor  # noqa: F401

    with contextlib.suppress(ImportError):  # recording reports the problem when a job runs
        import mlflow.tracking  # noqa: F401


def run_worker(settings: Settings, *, worker_id: str | None = None, burst: bool = False) -> None:
    Worker(settings, worker_id=worker_id, burst=burst).run()
