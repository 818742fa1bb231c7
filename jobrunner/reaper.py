"""The reaper: finds jobs whose worker stopped heartbeating and makes them runnable again.

Every worker runs `reap_once` in its loop. A RUNNING job with a stale heartbeat (older than
heartbeat_timeout) goes back to QUEUED with a new outbox message; a CANCELLING one becomes CANCELLED.
Both are conditional updates on the stale heartbeat, so two reapers, or a reaper and a worker that comes
back to life, cannot both act on the same job.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from jobrunner.config import Settings
from jobrunner.db import session_scope
from jobrunner.models import Job
from jobrunner.states import JobState, transition, utcnow

log = logging.getLogger(__name__)


def reap_once(settings: Settings, *, worker_id: str = "reaper") -> list[str]:
    """Requeue (or finish cancelling) jobs with stale heartbeats; returns the ids it changed."""
    from jobrunner import store

    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout)
    changed: list[str] = []
    with session_scope(settings) as session:
        for job in store.stale_jobs(session=session, stale_before=cutoff):
            stale = [Job.heartbeat_at < cutoff]
            if job.state == JobState.CANCELLING.value:
                if transition(session, job.id, [JobState.CANCELLING], JobState.CANCELLED, where=stale,
                              actor=worker_id, event=f"worker {job.worker_id} died while cancelling",
                              finished_at=utcnow(), error_kind="cancelled", error_message="cancelled"):
                    changed.append(job.id)
            elif transition(session, job.id, [JobState.RUNNING], JobState.QUEUED, where=stale,
                            actor=worker_id, queued_at=utcnow(),
                            event=f"worker {job.worker_id} stopped heartbeating; requeued"):
                store.add_outbox(session=session, job_id=job.id, attempt=job.attempt)
                changed.append(job.id)
        if settings.embedded:
            # the outbox is the queue: a worker that died between taking a message and claiming the job
            # leaves a QUEUED job without a deliverable message
            for job_id in store.orphaned_queued(session=session, older_than=cutoff):
                store.add_outbox(session=session, job_id=job_id, attempt=0)
                changed.append(job_id)
    for job_id in changed:
        log.warning("reaper: job %s had a dead worker; made runnable again", job_id)
    return changed
