"""`jobrunner worker`: consume job messages one at a time and run them through the executor.

Two sources, one processing path (jobrun.JobRun):
- AmqpSource (JOBRUNNER_BROKER_URL=amqp://...): prefetch 1, manual acks. The consumer thread owns the
  pika connection and keeps pumping `process_data_events` (so AMQP heartbeats are answered during a
  10-minute cell) while a JobRun thread drives the notebook. The job thread never touches pika: it puts
  its outcome in a queue that the consumer loop reads on whatever connection is current, and applies
  only after the job's state is committed (ack late). A delivery of a connection that has since closed
  cannot be acked; the broker has redelivered its message, and since the job's state is committed that
  copy is acked unrun. So a broker blip while a job runs never wedges the worker.
- EmbeddedSource (no broker): the `job_outbox` table is the queue, taken with SKIP LOCKED.

Busy or idle, each worker relays the outbox to the broker and runs the reaper (reaper.py) every
poll interval. SIGTERM/SIGINT stop consuming; a running job may finish within worker_grace_period, after
that it is stopped (the executor interrupts, then kills its kernel) and requeued - in every state,
connected to the broker or not.
"""

from __future__ import annotations

import faulthandler
import functools
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import InfrastructureError, StoreUnavailable
from jobrunner.execution.kernels import install_pool_factory
from jobrunner.store.messages import JobMessage, MessageError
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
        from jobrunner.queue.broker import broker_for

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
        log.warning("worker %s started (%s)", self.id, "amqp" if broker else "embedded")
        try:
            if broker is None:
                EmbeddedSource(self).run()
            else:
                AmqpSource(self, broker).run()
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


@dataclass
class Delivery:
    """A message being processed, and the connection it came on (only that one can ack it)."""

    connection: Any
    channel: Any
    tag: int


class AmqpSource:
    def __init__(self, worker: Worker, broker: Any):
        self.worker = worker
        self.broker = broker
        self.idle_since = time.monotonic()
        self.connection: Any = None  # the current connection, None while disconnected
        # outcomes of finished jobs, put by their JobRun threads, applied by the consumer loop
        self.finished: queue.SimpleQueue[tuple[Delivery, Outcome]] = queue.SimpleQueue()

    def run(self) -> None:
        import pika.exceptions

        w = self.worker
        delay = 0.5
        while not (w.stopping.is_set() and w.current is None):
            self.settle_finished()
            if w.stopping.is_set():  # a job still runs: no need for the broker to let it finish or stop it
                w.enforce_grace()
                w.housekeeping()
                time.sleep(0.2)
                continue
            try:
                connection = self.broker.connect(attempts=1)
            except InfrastructureError as exc:
                log.warning("worker %s: %s; retrying in %.1fs", w.id, exc, delay)
                w.housekeeping()  # the reaper needs only the database
                self.wait_disconnected(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.5
            try:
                self.connection = connection
                if self.consume(connection):
                    return
            except (pika.exceptions.AMQPError, OSError) as exc:
                log.warning("worker %s: broker connection lost (%r); reconnecting", w.id, exc)
            finally:
                self.connection = None
                try:
                    if connection.is_open:
                        connection.close()
                except Exception:  # noqa: BLE001 - it is gone either way
                    pass
            self.wait_disconnected(0.5)  # no busy loop if a fresh connection fails at once again

    def wait_disconnected(self, seconds: float) -> None:
        """Sleep between connection attempts, still settling finished jobs and honouring a stop."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.worker.stopping.is_set():
            self.settle_finished()
            self.worker.stopping.wait(min(0.2, max(0.0, deadline - time.monotonic())))

    def consume(self, connection: Any) -> bool:
        """Consume until stopped (True) or the connection breaks (raises)."""
        w = self.worker
        channel = connection.channel()
        self.broker.declare(channel)
        channel.basic_qos(prefetch_count=1)
        if not self.broker.declare_presence(connection, w.id):
            log.error(
                "worker %s: another connected worker has the same id; give each worker its own "
                "JOBRUNNER_WORKER_ID (jobs of a killed worker with this id are taken over only after "
                "JOBRUNNER_HEARTBEAT_TIMEOUT)",
                w.id,
            )
        publisher = self.broker.publisher(connection)
        presence = functools.partial(self.broker.is_connected, connection)
        tag = None
        while True:
            connection.process_data_events(time_limit=0.2)
            self.settle_finished()
            if w.stopping.is_set():
                if tag is not None:
                    channel.basic_cancel(tag)  # unacked prefetched messages go back to the queue
                    tag = None
                w.enforce_grace()
                if w.current is None:
                    return True
                continue
            # A job still running from a previous connection keeps this worker busy: consuming now would
            # run two jobs at once, so consume once it is done (its message was redelivered meanwhile).
            if tag is None and w.current is None:
                tag = channel.basic_consume(
                    self.broker.queue, on_message_callback=functools.partial(self.on_message, connection)
                )
            w.housekeeping(publisher, presence=presence)
            if w.current is None and self.burst_done(channel):
                w.request_stop()

    def burst_done(self, channel: Any) -> bool:
        idle_for = time.monotonic() - self.idle_since
        if not self.worker.burst or idle_for < 2 * self.worker.settings.worker_poll_interval:
            return False
        from jobrunner.store import queries as store
        from jobrunner.store.db import session_scope

        queued = channel.queue_declare(self.broker.queue, durable=True, passive=True).method.message_count
        with session_scope(self.worker.settings) as session:
            pending = len(store.pending_outbox(session=session, limit=1))
        return queued == 0 and pending == 0

    def on_message(self, connection: Any, channel: Any, method: Any, props: Any, body: bytes) -> None:
        if self.worker.current is not None:  # never two jobs at once (cannot happen with prefetch 1)
            channel.basic_nack(method.delivery_tag, requeue=True)
            return
        try:
            payload = JobMessage.decode(body).as_payload()
        except Exception as exc:  # noqa: BLE001 - any undecodable payload is a poison message
            log.error("worker %s: undecodable message dead-lettered: %s", self.worker.id, exc)
            self.worker.metrics.dead_letters.inc()
            channel.basic_nack(method.delivery_tag, requeue=False)
            return
        delivery = Delivery(connection, channel, method.delivery_tag)
        self.worker.start_job(payload, lambda outcome: self.finished.put((delivery, outcome)))

    def settle_finished(self) -> None:
        """Apply the outcomes of finished jobs: ack on the connection they came on, if it still lives."""
        while True:
            try:
                delivery, outcome = self.finished.get_nowait()
            except queue.Empty:
                return
            self.worker.job_done()
            self.idle_since = time.monotonic()
            if delivery.connection is not self.connection or not delivery.channel.is_open:
                # the broker has redelivered the message; the job's state is committed, so that copy is
                # acked unrun (or, for a retry, the outbox already holds the next message)
                log.warning(
                    "worker %s: the connection of delivery %s closed before its ack; the broker "
                    "redelivers the message",
                    self.worker.id,
                    delivery.tag,
                )
                continue
            if outcome.verdict == "ack":
                delivery.channel.basic_ack(delivery.tag)
            elif outcome.verdict == "dead":
                delivery.channel.basic_nack(delivery.tag, requeue=False)
            else:
                delivery.channel.basic_nack(delivery.tag, requeue=True)


class EmbeddedSource:
    """No broker: take due outbox rows straight from the database (SKIP LOCKED), one at a time."""

    def __init__(self, worker: Worker):
        self.worker = worker

    def run(self) -> None:
        w = self.worker
        while not w.stopping.is_set():
            w.housekeeping()
            try:
                taken = self.take()
            except InfrastructureError as exc:
                log.warning("worker %s: %s", w.id, exc)
                taken = None
            if taken is None:
                if w.burst:
                    return
                w.stopping.wait(w.settings.worker_poll_interval)
                continue
            row_id, payload = taken
            try:
                payload = JobMessage.from_payload(payload).as_payload()
            except MessageError as exc:  # a poison message, parked unprocessed (as AMQP dead-letters it)
                log.error("worker %s: undecodable message dead-lettered: %s", w.id, exc)
                w.metrics.dead_letters.inc()
                self.settle(row_id, payload, Outcome("dead", str(exc)))
                continue
            result: list[Outcome] = []
            w.start_job(payload, result.append)
            while not result:
                time.sleep(0.1)
                w.enforce_grace()
            w.job_done()
            self.settle(row_id, payload, result[0])

    def take(self) -> tuple[int, dict[str, Any]] | None:
        from jobrunner.store import queries as store
        from jobrunner.store.db import session_scope

        with session_scope(self.worker.settings) as session:
            rows = store.pending_outbox(session=session, limit=1)
            if not rows:
                return None
            store.mark_sent(session=session, outbox_id=rows[0].id)
            return rows[0].id, dict(rows[0].payload)

    def settle(self, row_id: int, payload: dict[str, Any], outcome: Outcome) -> None:
        from jobrunner.store import queries as store
        from jobrunner.store.db import session_scope

        try:
            with session_scope(self.worker.settings) as session:
                if outcome.verdict == "dead":
                    store.mark_dead(session=session, outbox_id=row_id, reason=outcome.reason)
                elif outcome.verdict == "retry_later":
                    message = JobMessage.from_payload(payload)
                    store.add_outbox(
                        session=session, job_id=message.job_id, attempt=message.attempt, delay=2.0
                    )
        except InfrastructureError as exc:  # the reaper re-offers orphaned QUEUED jobs later
            log.warning("worker %s: could not settle message %s: %s", self.worker.id, row_id, exc)


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

    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:  # recording reports the problem when a job runs
        pass


def run_worker(settings: Settings, *, worker_id: str | None = None, burst: bool = False) -> None:
    Worker(settings, worker_id=worker_id, burst=burst).run()
