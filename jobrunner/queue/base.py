"""The `Broker` protocol: what the worker, the job API, the outbox relay and `jobrunner dlq` need from the
transport of job messages, whichever broker JOBRUNNER_BROKER_URL picks (queue.broker.broker_for).

Also the values they exchange (`DeadLetter`, `RequeueReport`) and the worker as a message source sees it
(`ConsumingWorker`): queue stands below the worker, so the sources know it only by this protocol.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from jobrunner.config import Settings

# who is connected: a worker id -> True/False, or None if the broker cannot say (jobrunner.worker.reaper)
PresenceCheck = Callable[[str], bool | None]


@dataclass
class DeadLetter:
    job_id: str | None
    reason: str
    body: str
    ref: int | None = None  # embedded: outbox row id

    def as_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "reason": self.reason, "body": self.body}


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


# `on_requeue(job_id)` of requeue_dead: makes the job QUEUED again (None), or says why it cannot be
OnRequeue = Callable[[str], str | None]


class Settlement(Protocol):
    """How a delivery ends (jobrunner.worker.attempt.Outcome): verdict "ack", "dead" or "retry_later"."""

    @property
    def verdict(self) -> str: ...

    @property
    def reason(self) -> str: ...


class DeadLetterCounter(Protocol):
    def inc(self) -> None: ...


class SourceMetrics(Protocol):
    @property
    def dead_letters(self) -> DeadLetterCounter: ...


class ConsumingWorker(Protocol):
    """The worker (jobrunner.worker.loop.Worker) as a message source drives it."""

    @property
    def id(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def burst(self) -> bool: ...

    @property
    def stopping(self) -> threading.Event: ...

    @property
    def current(self) -> object | None: ...

    @property
    def metrics(self) -> SourceMetrics: ...

    def start_job(self, payload: dict[str, Any], done: Callable[[Settlement], None]) -> None:
        """Process `payload` in a job thread; `done(outcome)` is called from that thread, always."""

    def job_done(self) -> None:
        """Clear `current` once the outcome of its job is in."""

    def enforce_grace(self) -> None: ...

    def housekeeping(
        self, channel: Any = None, *, presence: PresenceCheck | None = None, force: bool = False
    ) -> None: ...

    def request_stop(self, *_: Any) -> None: ...


class Source(Protocol):
    def run(self) -> None:
        """Deliver messages to the worker one at a time until it stops (or, in burst mode, runs dry)."""


class Broker(Protocol):
    """A transport of job messages, with its dead letters."""

    name: str  # for log lines: "amqp", "embedded"

    def source(self, worker: ConsumingWorker) -> Source:
        """The consuming side: delivers this broker's messages to `worker`."""
        ...

    def relay(
        self, settings: Settings, *, channel: Any = None, connect_attempts: int = 3, batch: int = 200
    ) -> int:
        """Publish due outbox rows (on `channel`, a publisher of this broker's, if given); how many."""
        ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The dead-lettered messages, oldest first, without removing any."""
        ...

    def requeue_dead(
        self, job_ids: set[str] | None, on_requeue: OnRequeue, *, discard: bool = False
    ) -> RequeueReport:
        """Move dead letters (all, or those of `job_ids`) back to the job queue.

        `on_requeue(job_id)` runs before a message is sent again: it makes the job QUEUED again and
        returns None, or says why the job cannot be requeued (no such job, it already succeeded). Such
        letters, and letters that are not job messages, are reported and stay dead-lettered, or are
        dropped with `discard`.
        """
        ...
