"""The RabbitMQ broker (JOBRUNNER_BROKER_URL=amqp://... or amqps://...), through pika.

A durable queue `<queue_name>` whose rejected messages go through the dead-letter exchange
`<queue_name>.dlx` to the durable queue `<queue_name>.dlq`; persistent messages published with confirms
(mandatory, so an unroutable message is an error). The queue is declared by whoever connects first
(relay, worker, dlq), with identical arguments.

`AmqpBroker` publishes, relays the outbox, holds workers' presence queues and handles dead letters;
`AmqpSource` is the worker's consuming side: prefetch 1, manual acks. The consumer thread owns the pika
connection and keeps pumping `process_data_events` (so AMQP heartbeats are answered during a 10-minute
cell) while a job thread drives the notebook. The job thread never touches pika: it puts its outcome in
a queue that the consumer loop reads on whatever connection is current, and applies only after the
job's state is committed (ack late). A delivery of a connection that has since closed cannot be acked;
the broker has redelivered its message, and since the job's state is committed that copy is acked
unrun. So a broker blip while a job runs never wedges the worker.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import BrokerUnavailable, InfrastructureError
from jobrunner.queue.base import ConsumingWorker, DeadLetter, OnRequeue, RequeueReport, Settlement
from jobrunner.store.db import session_scope
from jobrunner.store.messages import JobMessage, MessageError

# the log lines keep the loggers they had before this module took over the relay and the worker's source
relay_log = logging.getLogger("jobrunner.queue.relay")
log = logging.getLogger("jobrunner.worker.loop")


class AmqpBroker:
    """RabbitMQ via pika's BlockingConnection; one instance per thread (pika is not thread-safe)."""

    name = "amqp"

    def __init__(self, url: str, queue: str):
        self.url = url
        self.queue = queue
        self.dlx = f"{queue}.dlx"
        self.dlq = f"{queue}.dlq"

    def connect(self, *, attempts: int = 3, heartbeat: int = 30) -> Any:
        import pika

        params = pika.URLParameters(self.url)
        params.connection_attempts = attempts
        params.retry_delay = 1
        params.socket_timeout = 3
        params.blocked_connection_timeout = 30
        if "heartbeat=" not in self.url:  # an explicit ?heartbeat=N in the URL wins
            params.heartbeat = heartbeat
        try:
            return pika.BlockingConnection(params)
        except Exception as exc:  # pika raises a family of errors (AMQP, socket, DNS): all are 'unavailable'
            from jobrunner.store.db import masked_url

            raise BrokerUnavailable(
                f"cannot connect to the broker at {masked_url(self.url)}: {exc!r}"
            ) from exc

    def declare(self, channel: Any) -> None:
        channel.exchange_declare(self.dlx, exchange_type="direct", durable=True)
        channel.queue_declare(self.dlq, durable=True)
        channel.queue_bind(self.dlq, self.dlx, routing_key=self.queue)
        channel.queue_declare(
            self.queue,
            durable=True,
            arguments={"x-dead-letter-exchange": self.dlx, "x-dead-letter-routing-key": self.queue},
        )

    def source(self, worker: ConsumingWorker) -> AmqpSource:
        return AmqpSource(worker, self)

    # -- worker presence: the broker's view of which workers are connected -----------------------------
    def presence_queue(self, worker_id: str) -> str:
        """An exclusive queue a worker holds on its consumer connection; RabbitMQ deletes it when the
        connection closes (the worker was killed, its machine lost, or the network cut)."""
        name = f"{self.queue}.worker.{worker_id}"
        if len(name.encode()) > 255:  # AMQP's limit for queue names
            import hashlib

            name = f"{self.queue}.worker.{hashlib.sha256(worker_id.encode()).hexdigest()}"
        return name

    def declare_presence(self, connection: Any, worker_id: str) -> bool:
        """Hold the presence queue of `worker_id` on `connection`; False if another connection holds it
        (two workers with one JOBRUNNER_WORKER_ID: ids must be unique)."""
        import pika.exceptions

        channel = connection.channel()  # exclusive queues belong to the connection, not the channel
        try:
            channel.queue_declare(self.presence_queue(worker_id), exclusive=True, auto_delete=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 405:  # RESOURCE_LOCKED
                raise
            return False
        channel.close()
        return True

    def is_connected(self, connection: Any, worker_id: str) -> bool:
        """Whether worker `worker_id` holds its presence queue (is connected to this broker) right now."""
        import pika.exceptions

        channel = connection.channel()
        try:
            channel.queue_declare(self.presence_queue(worker_id), passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            # 404 NOT_FOUND: no connection holds it; 405 RESOURCE_LOCKED: another connection holds it
            return bool(exc.reply_code != 404)
        if channel.is_open:
            channel.close()
        return True  # our own connection holds it

    # -- publishing ------------------------------------------------------------------------------------
    def publisher(self, connection: Any) -> Any:
        channel = connection.channel()
        self.declare(channel)
        channel.confirm_delivery()
        return channel

    def publish(self, channel: Any, message: JobMessage | Mapping[str, Any]) -> None:
        """Publish persistently and wait for the broker's confirm (raises on nack or unroutable).

        `message` is a JobMessage, or an outbox row's payload (JobMessage.as_payload when it was stored),
        published as stored: the worker decodes it, and dead-letters it if it is not a job message.
        """
        import pika

        if isinstance(message, JobMessage):
            body, job_id = message.encode(), message.job_id
        else:
            body, job_id = json.dumps(dict(message)).encode(), str(message.get("job_id", ""))
        channel.basic_publish(
            exchange="",
            routing_key=self.queue,
            body=body,
            mandatory=True,
            properties=pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                content_type="application/json",
                message_id=_shortstr(job_id),
            ),
        )

    def relay(
        self, settings: Settings, *, channel: Any = None, connect_attempts: int = 3, batch: int = 200
    ) -> int:
        """Publish due outbox rows on `channel` (a confirm-mode publisher; one is opened if None), then
        mark them sent (jobrunner.queue.relay)."""
        from jobrunner.store import queries as store

        connection = None
        if channel is None:
            connection = self.connect(attempts=connect_attempts)
            channel = self.publisher(connection)
        published = 0
        error: Exception | None = None
        try:
            with session_scope(settings) as session:
                for row in store.pending_outbox(session=session, limit=batch):
                    try:
                        self.publish(channel, row.payload)
                    except Exception as exc:  # noqa: BLE001 - stop here, keep what was confirmed
                        error = exc
                        break
                    store.mark_sent(session=session, outbox_id=row.id)
                    published += 1
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):  # it is closed either way
                    connection.close()
        if published:
            relay_log.info("relay published %d job message(s)", published)
        if error is not None:
            raise BrokerUnavailable(f"publishing failed after {published} message(s): {error!r}") from error
        return published

    # -- dead letters --------------------------------------------------------------------------------
    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Peek at the dead-letter queue without removing anything."""
        connection = self.connect()
        try:
            channel = connection.channel()
            self.declare(channel)
            found = []
            for _ in range(limit):
                method, props, body = channel.basic_get(self.dlq, auto_ack=False)
                if method is None:
                    break
                found.append(_dead_letter(props, body))
            return found  # closing the channel returns the unacked messages to the queue, in order
        finally:
            connection.close()

    def requeue_dead(
        self, job_ids: set[str] | None, on_requeue: OnRequeue, *, discard: bool = False
    ) -> RequeueReport:
        """Move dead letters (all, or those of `job_ids`) back to the job queue.

        `on_requeue(job_id)` runs before a message is republished: it makes the job QUEUED again and
        returns None, or says why the job cannot be requeued (no such job, it already succeeded). Such
        letters, and letters that are not job messages, are reported and left in the dead-letter queue,
        or dropped with `discard`.
        """
        connection = self.connect()
        report = RequeueReport()
        try:
            channel = connection.channel()
            self.declare(channel)
            channel.confirm_delivery()
            seen = 0
            count = channel.queue_declare(self.dlq, durable=True, passive=True).method.message_count
            while seen < count:
                method, props, body = channel.basic_get(self.dlq, auto_ack=False)
                if method is None:
                    break
                seen += 1
                letter = _dead_letter(props, body)
                if job_ids is not None and letter.job_id not in job_ids:
                    continue  # left unacked: returns to the DLQ when the channel closes
                why = "not a job message" if letter.job_id is None else on_requeue(letter.job_id)
                if why is not None:
                    report.skip(letter.job_id, why, discarded=discard)
                    if discard:
                        channel.basic_ack(method.delivery_tag)
                    continue
                message = JobMessage.decode(body)  # it is a job message: its letter has a job id
                self.publish(channel, message)
                channel.basic_ack(method.delivery_tag)
                report.requeued.append(message.job_id)
            return report
        finally:
            connection.close()


def _shortstr(text: str) -> str:
    """`text` cut to AMQP's short-string limit (255 bytes), for message properties."""
    return text.encode()[:255].decode("utf-8", "ignore")


def _dead_letter(props: Any, body: bytes) -> DeadLetter:
    try:
        job_id: str | None = JobMessage.decode(body).job_id
    except MessageError:
        job_id = None
    deaths = (props.headers or {}).get("x-death") or []
    reason = props.headers.get("x-jobrunner-reason") if props.headers else None
    if not reason and deaths:
        reason = f"{deaths[0].get('reason')} from {deaths[0].get('queue')} ({deaths[0].get('count')}x)"
    return DeadLetter(job_id, reason or "rejected", body.decode("utf-8", "replace")[:500])


# -- the consuming side ------------------------------------------------------------------------------------
@dataclass
class Delivery:
    """A message being processed, and the connection it came on (only that one can ack it)."""

    connection: Any
    channel: Any
    tag: int


class AmqpSource:
    def __init__(self, worker: ConsumingWorker, broker: AmqpBroker):
        self.worker = worker
        self.broker = broker
        self.idle_since = time.monotonic()
        self.connection: Any = None  # the current connection, None while disconnected
        # outcomes of finished jobs, put by their job threads, applied by the consumer loop
        self.finished: queue.SimpleQueue[tuple[Delivery, Settlement]] = queue.SimpleQueue()

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
                with contextlib.suppress(Exception):  # it is gone either way
                    if connection.is_open:
                        connection.close()
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

        queued = channel.queue_declare(self.broker.queue, durable=True, passive=True).method.message_count
        with session_scope(self.worker.settings) as session:
            pending = len(store.pending_outbox(session=session, limit=1))
        return bool(queued == 0 and pending == 0)

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
