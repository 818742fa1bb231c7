"""Job states (jobrunner.kinds.JobState) and the one function that changes them.

Every state change of a job - by submitters, workers, the reaper, `cancel` and `dlq requeue` - goes
through `transition()`, a conditional `UPDATE jobs SET state = :to WHERE id = :id AND state IN (:from)`.
Two processes racing for the same job (a redelivered message, a reaper and a late worker) therefore
cannot both win: exactly one UPDATE matches a row, the other sees rowcount 0 and backs off. This is
what makes redelivery safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from jobrunner.errors import InvalidTransition
from jobrunner.kinds import TERMINAL, JobState
from jobrunner.store.models import Job, JobEvent, utcnow

__all__ = ["ALLOWED", "TERMINAL", "JobState", "check_allowed", "transition", "utcnow"]

# from -> allowed targets. RUNNING -> RUNNING is a takeover of a job whose worker's heartbeat is stale;
# RUNNING -> QUEUED is a retry (infrastructure error, SIGTERM, reaper); FAILED -> QUEUED only for
# `jobrunner dlq requeue`; CANCELLING -> SUCCEEDED/FAILED when the notebook ended before it saw the cancel.
ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING, JobState.QUEUED}
    ),
    JobState.CANCELLING: frozenset({JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def check_allowed(job_id: str, from_states: Iterable[JobState], to_state: JobState) -> None:
    for state in from_states:
        if to_state not in ALLOWED[state]:
            raise InvalidTransition(job_id, state.value, to_state.value)


def transition(
    session: Session,
    job_id: str,
    from_states: Iterable[JobState],
    to_state: JobState,
    *,
    where: Iterable[ColumnElement[bool]] = (),
    event: str | None = None,
    actor: str | None = None,
    **fields: Any,
) -> bool:
    """Move job `job_id` to `to_state` if it is in one of `from_states` (and matches `where`).

    Returns True when this call made the change, False when the job was not in a matching state (someone
    else changed it first). Records a job event (by `actor`) in the same transaction; the caller commits.
    """
    sources = tuple(from_states)
    check_allowed(job_id, sources, to_state)
    now = utcnow()
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.state.in_([s.value for s in sources]), *where)
        .values(state=to_state.value, updated_at=now, **fields)
        .execution_options(synchronize_session=False)
    )
    result = session.execute(stmt)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    session.add(
        JobEvent(
            job_id=job_id,
            at=now,
            from_state="|".join(s.value for s in sources),
            to_state=to_state.value,
            worker_id=actor,
            message=event,
        )
    )
    if (
        to_state.terminal
    ):  # a webhook owed for this state, in the same transaction (jobrunner/store/notify.py)
        from jobrunner.store.notify import enqueue

        enqueue(session, job_id, to_state.value)
    return True
