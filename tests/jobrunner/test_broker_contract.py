"""One contract, two brokers: what a worker relies on from its message source, asserted the same way for
RabbitMQ (JOBRUNNER_BROKER_URL=amqp://..., jobrunner.queue.amqp: AmqpBroker + AmqpSource) and for the
embedded broker (no broker URL: the job_outbox table, jobrunner.queue.embedded: EmbeddedBroker +
EmbeddedSource); the source is the one broker_for(settings).source(worker) gives the worker.

Messages are published the public way (jobs.submit) and consumed by the worker's real source; only the
job itself is scripted: a `ScriptedWorker` records each delivery and settles it with the verdict the
test chooses (ack, dead, retry_later) or holds it unsettled, as a worker busy with a long cell does.
Dead letters are read with jobs.list_dead_letters, as `jobrunner dlq list` does.

Where the two brokers reach the same end by different means, the driver says how: a consumer that dies
holding a message gets it redelivered by RabbitMQ when its connection closes, and by the reaper in
embedded mode (the outbox row was taken; the QUEUED job has no deliverable message left).
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jobrunner.worker.attempt import Outcome
from jobrunner.worker.loop import Worker
from tests.jobrunner.support import FAST, TcpProxy, delete_queues

Script = Callable[[dict[str, Any]], Outcome | None]  # None: hold the delivery unsettled
ACK = Outcome("ack")
# How long "no further delivery" is watched: a wrong redelivery comes at once on AMQP and after the retry
# delay (2 s) plus a poll interval in embedded mode.
QUIET = 2.5


class ScriptedWorker(Worker):
    """A real Worker whose deliveries are not run: recorded, then settled as `script` says."""

    def __init__(self, settings: Any, script: Script):
        super().__init__(settings, worker_id=f"contract-{uuid.uuid4().hex[:8]}")
        self.script = script
        self.deliveries: queue.Queue[dict[str, Any]] = queue.Queue()
        self.held: list[Callable[[Outcome], None]] = []

    def start_job(self, payload: dict[str, Any], done: Any) -> None:
        self.current = payload  # type: ignore[assignment] - busy, as with a JobRun
        self.deliveries.put(dict(payload))
        outcome = self.script(payload)
        if outcome is None:
            self.held.append(done)
        else:
            done(outcome)

    def job_done(self) -> None:
        self.current = None

    def housekeeping(self, channel: Any = None, *, presence: Any = None, force: bool = False) -> None:
        """Only the relay (AMQP: publishes outbox rows, e.g. a retry's next message); no reaper, which
        would act on the scripted jobs (they are never claimed) - the tests that need it call it."""
        if channel is not None:
            from jobrunner.queue.relay import relay_once

            relay_once(self.settings, channel=channel)


class Consumer:
    """The worker's real source for these settings, consuming in a thread until stopped."""

    def __init__(self, settings: Any, script: Script):
        from jobrunner.queue.broker import broker_for

        self.worker = ScriptedWorker(settings, script)
        self.source = broker_for(settings).source(self.worker)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="contract-consumer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.source.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def next(self, timeout: float = 30) -> dict[str, Any]:
        try:
            return self.worker.deliveries.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no delivery within {timeout}s (consumer error: {self.error!r})") from None

    def nothing_within(self, seconds: float) -> None:
        try:
            extra = self.worker.deliveries.get(timeout=seconds)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected delivery {extra}")

    def wait_idle(self, timeout: float = 10) -> None:
        """Until the consumer has settled its delivery (the worker's source cleared `current`)."""
        deadline = time.monotonic() + timeout
        while self.worker.current is not None:
            assert time.monotonic() < deadline, "the consumer did not settle its delivery"
            time.sleep(0.05)

    def release(self, outcome: Outcome) -> None:
        while self.worker.held:
            self.worker.held.pop(0)(outcome)

    def stop(self) -> None:
        self.worker.stopping.set()
        self.release(Outcome("retry_later", "test over"))
        self.thread.join(30)
        assert not self.thread.is_alive(), "the consumer did not stop"


class Contract:
    """A broker under test: publish, consume, dead letters, and how to cut its consumers' connection."""

    def __init__(self, kind: str, settings: Any):
        self.kind = kind
        self.settings = settings
        self.consumers: list[Consumer] = []
        self.proxies: list[TcpProxy] = []

    def submit(self) -> str:
        from jobrunner.jobs import submit

        return submit("notebooks/ok.ipynb").id

    def consumer(self, script: Script = lambda _: ACK, *, cuttable: bool = False) -> Consumer:
        settings = self.settings
        if cuttable:  # the consumer's transport (RabbitMQ, or the database that is the queue) via a proxy
            target = 5672 if self.kind == "amqp" else 5432
            proxy = TcpProxy(("127.0.0.1", target)).start()
            self.proxies.append(proxy)
            field = "broker_url" if self.kind == "amqp" else "database_url"
            url = getattr(settings, field).replace(f"127.0.0.1:{target}", f"127.0.0.1:{proxy.port}")
            settings = settings.model_copy(update={field: url})
            self.proxy = proxy
        consumer = Consumer(settings, script)
        self.consumers.append(consumer)
        return consumer

    def publish_poison(self, payload: dict[str, Any], job_id: str) -> None:
        """A message that is not a job message of a schema this version knows, published by hand."""
        import json

        from jobrunner.queue.broker import broker_for
        from jobrunner.store.db import session_scope
        from jobrunner.store.models import Outbox
        from jobrunner.store.states import utcnow

        if self.kind == "embedded":
            with session_scope(self.settings) as session:
                session.add(
                    Outbox(job_id=job_id, payload=payload, created_at=utcnow(), available_at=utcnow())
                )
            return
        import pika

        broker = broker_for(self.settings)
        connection = broker.connect()
        try:
            channel = broker.publisher(connection)
            channel.basic_publish(
                "",
                broker.queue,
                json.dumps(payload).encode(),
                mandatory=True,
                properties=pika.BasicProperties(delivery_mode=2),
            )
        finally:
            connection.close()

    def dead_letters(self) -> list[Any]:
        from jobrunner.jobs import list_dead_letters

        return list_dead_letters(self.settings)

    def after_consumer_death(self) -> None:
        """What makes a message held by a dead consumer deliverable again. RabbitMQ: nothing, closing the
        connection returns its unacked messages. Embedded: the reaper, once the taken row is older than
        heartbeat_timeout, offers the QUEUED job again (the worker's housekeeping does this)."""
        if self.kind == "embedded":
            from jobrunner.worker.reaper import reap_once

            time.sleep(self.settings.heartbeat_timeout + 0.5)
            reap_once(self.settings)

    def close(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
        for proxy in self.proxies:
            proxy.cut()


@pytest.fixture(params=["amqp", "embedded"])
def broker(
    request: pytest.FixtureRequest,
    project,
    make_postgres_db,
    queue_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Contract]:
    from jobrunner.config import get_settings
    from jobrunner.store.db import dispose_engines

    env = {
        **FAST,
        "JOBRUNNER_HEARTBEAT_TIMEOUT": "1",
        "JOBRUNNER_TAKEOVER_TIMEOUT": "1",
        "JOBRUNNER_DATABASE_URL": make_postgres_db("jrbroker", migrated=True),
    }
    amqp_url = request.getfixturevalue("amqp_url") if request.param == "amqp" else None
    if amqp_url:
        env |= {"JOBRUNNER_BROKER_URL": amqp_url, "JOBRUNNER_QUEUE_NAME": queue_prefix}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    contract = Contract(request.param, get_settings())
    yield contract
    contract.close()
    if amqp_url:
        delete_queues(amqp_url, queue_prefix)
    get_settings.cache_clear()
    dispose_engines()


def test_a_published_job_is_delivered_once_and_an_ack_removes_it(broker: Contract) -> None:
    job_id = broker.submit()
    consumer = broker.consumer()
    assert consumer.next()["job_id"] == job_id
    consumer.nothing_within(QUIET)
    consumer.stop()
    again = broker.consumer()  # a fresh consumer finds nothing left either
    again.nothing_within(1)
    assert broker.dead_letters() == []


def test_jobs_submitted_while_consuming_are_delivered_in_submission_order(broker: Contract) -> None:
    consumer = broker.consumer()
    ids = [broker.submit() for _ in range(4)]
    assert [consumer.next()["job_id"] for _ in ids] == ids


def test_retry_later_delivers_the_message_again(broker: Contract) -> None:
    seen: list[str] = []

    def retry_once(payload: dict[str, Any]) -> Outcome:
        seen.append(payload["job_id"])
        return Outcome("retry_later", "not now") if len(seen) == 1 else ACK

    job_id = broker.submit()
    consumer = broker.consumer(retry_once)
    assert consumer.next()["job_id"] == job_id
    assert consumer.next(timeout=30)["job_id"] == job_id
    consumer.nothing_within(QUIET)
    assert broker.dead_letters() == []


def test_a_dead_verdict_dead_letters_the_message_and_it_is_not_redelivered(broker: Contract) -> None:
    job_id = broker.submit()
    consumer = broker.consumer(lambda p: Outcome("dead", "poisoned job") if p["job_id"] == job_id else ACK)
    assert consumer.next()["job_id"] == job_id
    consumer.nothing_within(QUIET)
    assert [letter.job_id for letter in broker.dead_letters()] == [job_id]
    after = broker.submit()  # the consumer carries on
    assert consumer.next()["job_id"] == after


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param({"hello": "world"}, id="no-job-id"),
        pytest.param({"job_id": "CARRIER", "schema_version": 99, "attempt": 0}, id="unknown-schema-version"),
    ],
)
def test_a_poison_message_is_dead_lettered_unprocessed_and_consuming_goes_on(
    broker: Contract, poison: dict[str, Any]
) -> None:
    carrier = broker.submit()  # a real job the poison names (an outbox row must belong to a job)
    payload = {**poison, "job_id": carrier} if "job_id" in poison else poison
    broker.publish_poison(payload, carrier)
    good = broker.submit()
    consumer = broker.consumer()
    got = [consumer.next(), consumer.next()]
    consumer.nothing_within(1)
    assert [p.get("job_id") for p in got] == [carrier, good], got  # the poison never reached a job
    assert consumer.error is None
    assert [letter.job_id for letter in broker.dead_letters()] in ([None], [carrier])


def test_a_message_held_by_a_consumer_that_dies_is_delivered_again(broker: Contract) -> None:
    job_id = broker.submit()
    dying = broker.consumer(lambda _: None, cuttable=True)  # takes the message and never settles it
    assert dying.next()["job_id"] == job_id
    broker.proxy.cut()  # its connection is gone, as when its process is killed
    survivor = broker.consumer()
    broker.after_consumer_death()
    assert survivor.next(timeout=60)["job_id"] == job_id
    dying.release(ACK)  # a late ack on the dead connection changes nothing
    survivor.nothing_within(QUIET)


def test_a_consumer_whose_connection_is_cut_and_restored_goes_on_consuming(broker: Contract) -> None:
    consumer = broker.consumer(cuttable=True)
    first = broker.submit()
    assert consumer.next()["job_id"] == first
    consumer.wait_idle()  # its ack is on the wire
    broker.proxy.cut()
    during = broker.submit()  # published (or stored) while the consumer is cut off
    consumer.nothing_within(1)
    broker.proxy.restore()
    got = [consumer.next(timeout=60)["job_id"]]
    while got[-1] != during:  # at least once: an ack the cut swallowed brings `first` back, nothing else
        got.append(consumer.next(timeout=60)["job_id"])
    assert set(got) <= {first, during}, got
    assert consumer.error is None and consumer.thread.is_alive()
