"""The embedded broker (JOBRUNNER_BROKER_URL unset): the job store's `job_outbox` table is the queue.

Submissions write outbox rows (as with RabbitMQ, where the relay publishes them); `EmbeddedSource`, the
worker's consuming side, takes due rows straight from the database (SKIP LOCKED), one at a time, and parks
undeliverable messages on their row (`dead_at`), which `jobrunner dlq` lists and requeues as it does
RabbitMQ's dead-letter queue. There is nothing to relay.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import InfrastructureError
from jobrunner.queue.base import ConsumingWorker, DeadLetter, OnRequeue, RequeueReport, Settlement
from jobrunner.store.db import session_scope
from jobrunner.store.messages import JobMessage, MessageError

log = logging.getLogger("jobrunner.worker.loop")  # the source's log lines keep the worker's logger


class EmbeddedBroker:
    """The outbox table of the job store of `settings` as the queue, and its parked rows as dead letters."""

    name = "embedded"

    def __init__(self, settings: Settings):
        self.settings = settings

    def source(self, worker: ConsumingWorker) -> EmbeddedSource:
        return EmbeddedSource(worker)

    def relay(
        self, settings: Settings, *, channel: Any = None, connect_attempts: int = 3, batch: int = 200
    ) -> int:
        return 0  # embedded: workers consume the outbox directly

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Parked outbox rows, oldest first."""
        from jobrunner.store import queries as store

        with session_scope(self.settings) as session:
            rows = store.dead_outbox(session=session, limit=limit)
            return [
                DeadLetter(
                    (r.payload or {}).get("job_id"), r.dead_reason or "rejected", json.dumps(r.payload), r.id
                )
                for r in rows
            ]

    def requeue_dead(
        self, job_ids: set[str] | None, on_requeue: OnRequeue, *, discard: bool = False
    ) -> RequeueReport:
        """Replace parked rows (all, or those of `job_ids`) with fresh outbox rows (attempt 0).

        `on_requeue(job_id)` as in base.Broker.requeue_dead; letters it refuses, and letters that are not
        job messages, are reported and stay parked, or their rows are deleted with `discard`.
        """
        from sqlalchemy import delete

        from jobrunner.store import queries as store
        from jobrunner.store.models import Outbox

        report = RequeueReport()
        for letter in self.dead_letters(limit=1000):
            if job_ids is not None and letter.job_id not in job_ids:
                continue
            job_id = letter.job_id
            why = "not a job message" if job_id is None else on_requeue(job_id)
            if job_id is not None and why is None:
                with session_scope(self.settings) as session:
                    session.execute(delete(Outbox).where(Outbox.id == letter.ref))
                    store.add_outbox(session=session, job_id=job_id, attempt=0)
                report.requeued.append(job_id)
                continue
            report.skip(job_id, why or "", discarded=discard)  # why is set: job_id is None or refused
            if discard:
                with session_scope(self.settings) as session:
                    session.execute(delete(Outbox).where(Outbox.id == letter.ref))
        return report


class EmbeddedSource:
    """No broker: take due outbox rows straight from the database (SKIP LOCKED), one at a time."""

    def __init__(self, worker: ConsumingWorker):
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
                self.settle(row_id, payload, "dead", str(exc))
                continue
            result: list[Settlement] = []
            w.start_job(payload, result.append)
            while not result:
                time.sleep(0.1)
                w.enforce_grace()
            w.job_done()
            self.settle(row_id, payload, result[0].verdict, result[0].reason)

    def take(self) -> tuple[int, dict[str, Any]] | None:
        from jobrunner.store import queries as store

        with session_scope(self.worker.settings) as session:
            rows = store.pending_outbox(session=session, limit=1)
            if not rows:
                return None
            store.mark_sent(session=session, outbox_id=rows[0].id)
            return rows[0].id, dict(rows[0].payload)

    def settle(self, row_id: int, payload: dict[str, Any], verdict: str, reason: str) -> None:
        from jobrunner.store import queries as store

        try:
            with session_scope(self.worker.settings) as session:
                if verdict == "dead":
                    store.mark_dead(session=session, outbox_id=row_id, reason=reason)
                elif verdict == "retry_later":
                    message = JobMessage.from_payload(payload)
                    store.add_outbox(
                        session=session, job_id=message.job_id, attempt=message.attempt, delay=2.0
                    )
        except InfrastructureError as exc:  # the reaper re-offers orphaned QUEUED jobs later
            log.warning("worker %s: could not settle message %s: %s", self.worker.id, row_id, exc)
