"""The reaper: finds jobs whose worker is gone and makes them runnable again.

Every worker runs one in its consumer loop, busy or idle (it needs only the database, and the broker for
the fast path). A RUNNING job goes back to QUEUED with a new outbox message, a CANCELLING one becomes
CANCELLED, when
- its heartbeat is older than heartbeat_timeout (the worker stopped heartbeating), or
- its heartbeat is older than takeover_timeout AND its worker is gone from the broker (the presence queue
  it holds on its AMQP connection is gone: killed, machine lost). This takes a SIGKILLed worker's job over
  in seconds; a broker blip does not trigger it, since the worker's heartbeats in the database go on.
Both are conditional updates on the stale heartbeat, so two reapers, or a reaper and a worker that comes
back to life, cannot both act on the same job.

A stale heartbeat only means "dead" if the store was reachable all along: after a store outage every
heartbeat is stale, while their workers are alive and waiting to write. So a reaper acts only once its
own store connection has worked without a failure for heartbeat_timeout (also after the worker starts):
by then every live worker has heartbeated again. The broker path needs less: a worker that is connected
to the broker keeps its presence queue through a store outage, and once the store is back every live
worker heartbeats within heartbeat_interval, so after takeover_after() seconds of a working store a stale
heartbeat of a worker the broker no longer sees is a dead worker's. A freshly started worker can take a
SIGKILLed worker's job over within seconds, not after heartbeat_timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import text

from jobrunner.config import Settings
from jobrunner.errors import StoreUnavailable
from jobrunner.kinds import FailureKind
from jobrunner.store.db import session_scope
from jobrunner.store.models import Job
from jobrunner.store.states import JobState, transition, utcnow

log = logging.getLogger(__name__)

# worker id -> connected to the broker? (None: cannot tell)
Presence = Callable[[str], bool | None]


def takeover_after(settings: Settings) -> float:
    """Heartbeat age after which the job of a worker gone from the broker is taken over."""
    return max(settings.takeover_timeout, 2 * settings.heartbeat_interval)


class Reaper:
    """One worker's reaper; remembers when its store connection last failed (see the module doc)."""

    def __init__(self, settings: Settings, worker_id: str):
        self.settings = settings
        self.worker_id = worker_id
        self.store_ok_since = time.monotonic()

    def store_failed(self) -> None:
        self.store_ok_since = time.monotonic()

    @property
    def trusted(self) -> bool:
        """True when the store has been reachable long enough for stale heartbeats to mean dead workers."""
        return time.monotonic() - self.store_ok_since >= self.settings.heartbeat_timeout

    @property
    def trusted_with_broker(self) -> bool:
        """True when a stale heartbeat of a worker gone from the broker means a dead worker (module doc)."""
        return time.monotonic() - self.store_ok_since >= takeover_after(self.settings)

    def run_once(self, presence: Presence | None = None) -> list[str]:
        try:
            if not self.trusted_with_broker:
                with session_scope(self.settings) as session:  # only notice whether the store works
                    session.execute(text("SELECT 1"))
                return []
            return reap_once(
                self.settings, worker_id=self.worker_id, presence=presence, broker_path_only=not self.trusted
            )
        except StoreUnavailable:
            self.store_failed()
            raise


def reap_once(
    settings: Settings,
    *,
    worker_id: str = "reaper",
    presence: Presence | None = None,
    broker_path_only: bool = False,
) -> list[str]:
    """Requeue (or finish cancelling) jobs of dead workers; returns the ids it changed.

    Callers outside a worker (tests, scripts) must know the store was not down for heartbeat_timeout.
    `broker_path_only`: only jobs of workers gone from the broker (the store has been back for less than
    heartbeat_timeout, so a merely stale heartbeat proves nothing yet).
    """
    from jobrunner.store import queries as store

    now = utcnow()
    cutoff = now - timedelta(seconds=settings.heartbeat_timeout)
    short = now - timedelta(seconds=min(takeover_after(settings), settings.heartbeat_timeout))
    changed: list[str] = []
    with session_scope(settings) as session:
        for job in store.stale_jobs(session=session, stale_before=short):
            if job.worker_id == worker_id:
                continue  # our own job: our heartbeat thread is alive, we are here
            beat = job.heartbeat_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=now.tzinfo)
            if (beat is None or beat < cutoff) and not broker_path_only:
                why, stale = "stopped heartbeating", [Job.heartbeat_at < cutoff]
            elif presence is not None and job.worker_id and presence(job.worker_id) is False:
                why = "is gone from the broker"
                stale = [Job.heartbeat_at < short, Job.worker_id == job.worker_id]
            else:
                continue
            if job.state == JobState.CANCELLING.value:
                if transition(
                    session,
                    job.id,
                    [JobState.CANCELLING],
                    JobState.CANCELLED,
                    where=stale,
                    actor=worker_id,
                    event=f"worker {job.worker_id} {why} while cancelling",
                    finished_at=utcnow(),
                    error_kind=FailureKind.CANCELLED,
                    error_message="cancelled",
                ):
                    changed.append(job.id)
            elif transition(
                session,
                job.id,
                [JobState.RUNNING],
                JobState.QUEUED,
                where=stale,
                actor=worker_id,
                queued_at=utcnow(),
                event=f"worker {job.worker_id} {why}; requeued",
            ):
                store.add_outbox(session=session, job_id=job.id, attempt=job.attempt)
                changed.append(job.id)
                log.warning("reaper: job %s: worker %s %s; made runnable again", job.id, job.worker_id, why)
        if settings.embedded and not broker_path_only:
            # the outbox is the queue: a worker that died between taking a message and claiming the job
            # leaves a QUEUED job without a deliverable message
            for job_id in store.orphaned_queued(session=session, older_than=cutoff):
                store.add_outbox(session=session, job_id=job_id, attempt=0)
                changed.append(job_id)
                log.warning("reaper: queued job %s had no deliverable message; offered again", job_id)
    return changed
