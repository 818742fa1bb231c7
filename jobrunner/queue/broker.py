"""Brokers of job messages, picked by JOBRUNNER_BROKER_URL's scheme.

- `amqp://` / `amqps://`: RabbitMQ through pika. A durable queue `<queue_name>` whose rejected messages
  go through the dead-letter exchange `<queue_name>.dlx` to the durable queue `<queue_name>.dlq`;
  persistent messages published with confirms (mandatory, so an unroutable message is an error).
- unset: embedded. The `job_outbox` table is the queue; workers poll it (see worker.EmbeddedSource) and
  park undeliverable messages on it (`dead_at`), which `jobrunner dlq` lists and requeues the same way.

The queue is declared by whoever connects first (relay, worker, dlq), with identical arguments.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import BrokerUnavailable, ConfigurationError
from jobrunner.store.messages import JobMessage, MessageError

log = logging.getLogger(__name__)


@dataclass
class DeadLetter:
    job_id: str | None
    reason: str
    body: str
    ref: int | None = None  # embedded: outbox row id

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "reason": self.reason, "body": self.body}


class AmqpBroker:
    """RabbitMQ via pika's BlockingConnection; one instance per thread (pika is not thread-safe)."""

    def __init__(self, url: str, queue: str):
        self.url = url
        self.queue = queue
        self.dlx = f"{queue}.dlx"
        self.dlq = f"{queue}.dlq"

    def connect(self, *, attempts: int = 3, heartbeat: int = 30):
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
        except Exception as exc:
            from jobrunner.store.db import masked_url

            raise BrokerUnavailable(
                f"cannot connect to the broker at {masked_url(self.url)}: {exc!r}"
            ) from exc

    def declare(self, channel) -> None:
        channel.exchange_declare(self.dlx, exchange_type="direct", durable=True)
        channel.queue_declare(self.dlq, durable=True)
        channel.queue_bind(self.dlq, self.dlx, routing_key=self.queue)
        channel.queue_declare(
            self.queue,
            durable=True,
            arguments={"x-dead-letter-exchange": self.dlx, "x-dead-letter-routing-key": self.queue},
        )

    # -- worker presence: the broker's view of which workers are connected -----------------------------
    def presence_queue(self, worker_id: str) -> str:
        """An exclusive queue a worker holds on its consumer connection; RabbitMQ deletes it when the
        connection closes (the worker was killed, its machine lost, or the network cut)."""
        name = f"{self.queue}.worker.{worker_id}"
        if len(name.encode()) > 255:  # AMQP's limit for queue names
            import hashlib

            name = f"{self.queue}.worker.{hashlib.sha256(worker_id.encode()).hexdigest()}"
        return name

    def declare_presence(self, connection, worker_id: str) -> bool:
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

    def is_connected(self, connection, worker_id: str) -> bool:
        """Whether worker `worker_id` holds its presence queue (is connected to this broker) right now."""
        import pika.exceptions

        channel = connection.channel()
        try:
            channel.queue_declare(self.presence_queue(worker_id), passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:  # NOT_FOUND: no connection holds it
                return False
            return True  # 405 RESOURCE_LOCKED: another connection holds it
        if channel.is_open:
            channel.close()
        return True  # our own connection holds it

    def publisher(self, connection):
        channel = connection.channel()
        self.declare(channel)
        channel.confirm_delivery()
        return channel

    def publish(self, channel, message: JobMessage | Mapping[str, Any]) -> None:
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

    def requeue_dead(self, job_ids: set[str] | None, on_requeue, *, discard: bool = False) -> RequeueReport:
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
                assert letter.job_id is not None
                self.publish(channel, JobMessage.decode(body))
                channel.basic_ack(method.delivery_tag)
                report.requeued.append(letter.job_id)
            return report
        finally:
            connection.close()


@dataclass
class RequeueReport:
    """What `dlq requeue` did: the job ids requeued, and the letters it could not requeue, with why."""

    requeued: list[str] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def skip(self, job_id: str | None, why: str, *, discarded: bool) -> None:
        self.skipped.append(
            {
                "job_id": short_label(job_id) if job_id is not None else None,
                "reason": why,
                "discarded": discarded,
            }
        )


def short_label(text: str, limit: int = 60) -> str:
    """`text` for a message: cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"


def _shortstr(text: str) -> str:
    """`text` cut to AMQP's short-string limit (255 bytes), for message properties."""
    return text.encode()[:255].decode("utf-8", "ignore")


def _dead_letter(props, body: bytes) -> DeadLetter:
    try:
        job_id: str | None = JobMessage.decode(body).job_id
    except MessageError:
        job_id = None
    deaths = (props.headers or {}).get("x-death") or []
    reason = props.headers.get("x-jobrunner-reason") if props.headers else None
    if not reason and deaths:
        reason = f"{deaths[0].get('reason')} from {deaths[0].get('queue')} ({deaths[0].get('count')}x)"
    return DeadLetter(job_id, reason or "rejected", body.decode("utf-8", "replace")[:500])


BROKERS = {"amqp": AmqpBroker, "amqps": AmqpBroker}


def broker_for(settings: Settings) -> AmqpBroker | None:
    """The broker of these settings, or None in embedded mode."""
    if settings.embedded:
        return None
    scheme = (settings.broker_url or "").split("://", 1)[0]
    try:
        return BROKERS[scheme](settings.broker_url or "", settings.queue_name)
    except KeyError:
        raise ConfigurationError(
            f"unsupported JOBRUNNER_BROKER_URL scheme {scheme!r}: use amqp://... or "
            "unset "
            "it for embedded mode"
        ) from None
