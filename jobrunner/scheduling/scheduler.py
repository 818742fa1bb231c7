"""`jobrunner scheduler`: the tick loop that turns due cron slots of schedules into jobs, exactly once.

Any number of schedulers may run against one job store. Each tick, for every schedule whose next slot is
due, one transaction

1. locks the schedule row (`FOR UPDATE SKIP LOCKED`: a schedule another scheduler is ticking is left to
   it),
2. decides each due slot (run, or skipped with a reason: missed during downtime under the catch-up policy,
   or max_concurrent_runs reached) and inserts its `schedule_runs` row with INSERT ... ON CONFLICT DO
   NOTHING on the key (schedule_id, slot) - so a slot is claimed by exactly one scheduler even if the
   locks were ever bypassed,
3. moves the schedule's cursor (next_slot_at) past now.

The claim, the decisions and the cursor commit together, so a scheduler killed at any point loses no
slot and repeats none. The job of each claimed slot is then submitted through `jobrunner.jobs.submit`
with the idempotency key schedule:<id>:<slot> (`schedules.submit_claimed`); a claim left by a scheduler
that died before submitting is submitted by the next tick of any scheduler, and the key turns a repeat
into the job that exists.

Health: after each tick that reached the job store the heartbeat file is rewritten; `jobrunner scheduler
--check` (the compose healthcheck) fails when it is older than a few intervals. SIGTERM ends the loop
after the tick in progress.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import select

from jobrunner.config import Settings
from jobrunner.errors import InfrastructureError
from jobrunner.scheduling.cron import iter_slots, latest_slot, next_slot
from jobrunner.scheduling.schedules import active_runs, busy_reason, claimed_runs, insert_run, submit_claimed
from jobrunner.store.db import session_scope
from jobrunner.store.models import Schedule
from jobrunner.store.states import utcnow

log = logging.getLogger(__name__)
MAX_RECORDED_MISSED = 100  # missed slots recorded one by one per tick; older ones are only counted
Clock = Callable[[], datetime]


class SchedulerSettings(BaseSettings):
    """Settings of `jobrunner scheduler` (JOBRUNNER_SCHEDULER_<FIELD>); the job store is jobrunner's."""

    model_config = SettingsConfigDict(env_prefix="JOBRUNNER_SCHEDULER_", env_file=".env", extra="ignore")

    # Seconds between ticks.
    interval: float = Field(default=5.0, gt=0, le=60)
    # A slot found due more than this many seconds after its time counts as missed (downtime): the
    # catch-up policy decides whether it runs.
    misfire_grace: float = Field(default=60.0, ge=0)
    # Rewritten after every tick that reached the job store; the healthcheck reads its age.
    # (a timestamp, nothing read back as trusted: the path the compose healthcheck looks at)
    heartbeat_file: Path = Path("/tmp/jobrunner-scheduler.heartbeat")  # noqa: S108
    # Tests only: a file holding an ISO-8601 time that the scheduler uses as "now" (a clock to advance).
    now_file: Path | None = None


@dataclass
class TickReport:
    submitted: list[str] = field(default_factory=list)  # job ids
    skipped: int = 0
    failed: int = 0


def file_clock(path: Path) -> Clock:
    """A clock that reads "now" from `path` (ISO 8601, UTC if no offset) at every call."""

    def now() -> datetime:
        value = datetime.fromisoformat(path.read_text().strip())
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    return now


# -- one tick ------------------------------------------------------------------------------------------------
def decide(
    due: list[datetime], now: datetime, catchup: str, grace: float
) -> list[tuple[datetime, str | None]]:
    """(slot, None to run it | why it is skipped) for the due slots, oldest first, under the policy."""

    def late(slot: datetime) -> bool:
        return (now - slot).total_seconds() > grace

    if catchup == "once":
        latest = due[-1]
        return [
            (
                s,
                f"missed (no scheduler ran at its time); catch-up policy 'once': only the newest "
                f"due slot ({latest.isoformat()}) runs",
            )
            for s in due[:-1]
        ] + [(latest, None)]
    return [
        (
            s,
            f"missed: found {(now - s).total_seconds():.0f}s after its time (misfire grace {grace:g}s); "
            "catch-up policy 'skip'"
            if late(s)
            else None,
        )
        for s in due
    ]


def plan_schedule(settings: Settings, schedule_id: str, now: datetime, grace: float) -> tuple[int, int]:
    """Claim or skip the due slots of one schedule and move its cursor; returns (claimed, skipped)."""
    claimed = skipped = 0
    with session_scope(settings) as session:
        row = session.scalars(
            select(Schedule)
            .where(Schedule.id == schedule_id, Schedule.paused.is_(False), Schedule.next_slot_at <= now)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).first()
        if row is None:  # another scheduler has it, or it was paused, deleted or handled meanwhile
            return 0, 0
        cursor = _aware(row.next_slot_at) - timedelta(microseconds=1)
        upcoming = takewhile(lambda s: s <= now, iter_slots(row.cron, row.timezone, cursor))
        due = list(islice(upcoming, MAX_RECORDED_MISSED + 1))
        if len(due) > MAX_RECORDED_MISSED:  # long downtime: record the first ones and the newest slot
            newest = latest_slot(row.cron, row.timezone, now)
            log.warning(
                "schedule %s: more than %d slots missed since %s",
                row.name,
                MAX_RECORDED_MISSED,
                due[0].isoformat(),
            )
            due = due[: MAX_RECORDED_MISSED - 1] + ([newest] if newest else [])
        active = active_runs(session=session, schedule_id=row.id)
        for slot, reason in decide(due, now, row.catchup, grace):
            if reason is None and len(active) + claimed >= row.max_concurrent_runs:
                reason = busy_reason(active, row.max_concurrent_runs, claimed)
            status = "skipped" if reason else "claimed"
            if insert_run(
                session=session, schedule_id=row.id, slot=slot, trigger="cron", status=status, reason=reason
            ):
                if reason:
                    skipped += 1
                    log.info("schedule %s slot %s skipped: %s", row.name, slot.isoformat(), reason)
                else:
                    claimed += 1
        row.next_slot_at = next_slot(row.cron, row.timezone, now)
    return claimed, skipped


def tick(settings: Settings, now: datetime, *, grace: float = 60.0) -> TickReport:
    """Handle every due schedule, then submit every claimed slot (this tick's and any left over)."""
    report = TickReport()
    with session_scope(settings) as session:
        due_ids = list(
            session.scalars(
                select(Schedule.id)
                .where(Schedule.paused.is_(False), Schedule.next_slot_at <= now)
                .order_by(Schedule.next_slot_at)
            )
        )
    for schedule_id in due_ids:
        _, skipped = plan_schedule(settings, schedule_id, now, grace)
        report.skipped += skipped
    with session_scope(settings) as session:
        pending = claimed_runs(session=session)
    for schedule_id, slot in pending:
        run = submit_claimed(schedule_id, slot, settings=settings)
        if run is not None and run.job_id:
            report.submitted.append(run.job_id)
        elif run is not None:
            report.failed += 1
    return report


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive UTC


# -- the loop ------------------------------------------------------------------------------------------------
def write_heartbeat(path: Path, now: datetime) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(now.isoformat() + "\n")
    tmp.replace(path)  # atomic: the healthcheck never reads half a file


def heartbeat_age(path: Path) -> float | None:
    """Seconds since the heartbeat file was written (wall clock), None when there is none."""
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def run_scheduler(
    settings: Settings, options: SchedulerSettings, *, once: bool = False, stop: threading.Event | None = None
) -> None:
    """Tick every `options.interval` seconds until SIGTERM/SIGINT (or `stop`); with `once`, one tick."""
    stop = stop or threading.Event()
    clock: Clock = file_clock(options.now_file) if options.now_file else utcnow

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping after the tick in progress", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    log.info(
        "scheduler started: tick every %gs, misfire grace %gs, heartbeat %s",
        options.interval,
        options.misfire_grace,
        options.heartbeat_file,
    )
    while not stop.is_set():
        started = time.monotonic()
        try:
            now = clock()
            report = tick(settings, now, grace=options.misfire_grace)
        except InfrastructureError as exc:
            log.warning("tick failed, retrying in %gs: %s", options.interval, exc)
        except Exception:
            log.exception("tick failed")
        else:
            write_heartbeat(options.heartbeat_file, now)
            if report.submitted or report.skipped or report.failed:
                log.info(
                    "tick at %s: %d submitted, %d skipped, %d failed",
                    now.isoformat(),
                    len(report.submitted),
                    report.skipped,
                    report.failed,
                )
        if once:
            return
        stop.wait(max(0.0, options.interval - (time.monotonic() - started)))
    log.info("scheduler stopped")
