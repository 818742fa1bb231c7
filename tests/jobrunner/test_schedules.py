"""Schedules in-process on a real PostgreSQL: cron slots across DST, validation naming the field, the tick's
decisions (catch-up policies, max_concurrent_runs), claims completed after a crash without a second job,
and concurrent ticks claiming each slot once. Scheduler processes: test_schedules_scheduler.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from itertools import islice

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from jobrunner.cli import main
from jobrunner.scheduling.cron import CronError, iter_slots, latest_slot, parse_cron, parse_timezone

T0 = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def store(project, make_postgres_db, monkeypatch):
    """Settings on a fresh PostgreSQL database, migrated; no broker (jobs stay QUEUED in the outbox)."""
    from jobrunner.config import get_settings
    from jobrunner.store.db import dispose_engines, migrate

    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", make_postgres_db("jrsched", migrated=True))
    get_settings.cache_clear()
    settings = get_settings()
    migrate(settings)
    yield settings
    get_settings.cache_clear()
    dispose_engines()


def make(store, name="s", cron="* * * * *", now=T0, **kw):
    from jobrunner.scheduling.schedules import ScheduleCreate, create_schedule

    spec = ScheduleCreate(name=name, notebook=kw.pop("notebook", "notebooks/ok.ipynb"), cron=cron, **kw)
    return create_schedule(spec, settings=store, now=now)


def runs(store, name="s"):
    from jobrunner.scheduling.schedules import get_schedule

    return sorted(get_schedule(name, runs=1000, settings=store).runs, key=lambda r: r.slot)


def job_count(store) -> int:
    from jobrunner.store.db import session_scope
    from jobrunner.store.models import Job

    with session_scope(store) as session:
        return session.scalar(select(func.count()).select_from(Job))


# -- cron slots ------------------------------------------------------------------------------------------
def test_berlin_0230_runs_once_on_both_dst_transition_days():
    spring = list(islice(iter_slots("30 2 * * *", "Europe/Berlin", utc(2026, 3, 27)), 4))
    # 29 March: 02:30 does not exist (02:00 -> 03:00); it runs once, at 03:30 CEST = 01:30 UTC
    assert spring == [
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 30),
        utc(2026, 3, 30, 0, 30),
    ]
    autumn = list(islice(iter_slots("30 2 * * *", "Europe/Berlin", utc(2026, 10, 23)), 4))
    # 25 October: 02:30 happens twice (CEST, then CET); it runs once, at the first (00:30 UTC)
    assert autumn == [
        utc(2026, 10, 23, 0, 30),
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]


def test_every_minute_across_the_gap_and_the_repeated_hour_yields_each_instant_once():
    spring = list(islice(iter_slots("*/15 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 50)), 6))
    assert spring == [utc(2026, 3, 29, 1, m) for m in (0, 15, 30, 45)] + [
        utc(2026, 3, 29, 2, 0),
        utc(2026, 3, 29, 2, 15),
    ]
    autumn = list(islice(iter_slots("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 30)), 4))
    # local 02:00 CEST (first pass; the repeated 02:00 CET does not run again), 03:00, 04:00, 05:00 CET
    assert autumn == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3), utc(2026, 10, 25, 4)]
    assert latest_slot("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize(
    "expression",
    [
        "61 * * * *",
        "* * *",
        "0 0 * * * *",
        "H * * * *",
        "*/0 * * * *",
        "0 25 * * *",
        "",
        "every day",
        "0 0 ? * *",
        "0 0 * * MON#2",
        "0 0 15W * *",
        "0 0 * * mon",
    ],
)
def test_invalid_cron_expressions_are_refused_naming_the_field(expression):
    with pytest.raises(CronError) as err:
        parse_cron(expression)
    assert err.value.field == "cron" and repr(expression) in str(err.value)
    assert "minute (0-59)" in str(err.value)


def test_valid_cron_and_timezones():
    assert parse_cron("30  2 * * MON-FRI") == "30 2 * * MON-FRI"
    assert parse_cron("@daily") == "@daily"
    for bad in ("Mars/Olympus", "../../etc/passwd", "", "Europe/berlin"):
        with pytest.raises(CronError) as err:
            parse_timezone(bad)
        assert err.value.field == "timezone"
    assert str(parse_timezone("Europe/Berlin")) == "Europe/Berlin"


# -- DST end to end through the tick (PostgreSQL) --------------------------------------------------------
@pytest.mark.parametrize(
    "start,expected",
    [
        (utc(2026, 3, 27, 12), [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30)]),
        (
            utc(2026, 10, 23, 12),
            [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)],
        ),
    ],
)
def test_ticks_across_a_dst_transition_submit_each_day_once(store, start, expected):
    from jobrunner.scheduling.scheduler import tick

    make(store, cron="30 2 * * *", timezone="Europe/Berlin", max_concurrent_runs=100, now=start)
    now = start
    while now < start + timedelta(days=3, hours=6):
        now += timedelta(minutes=10)
        tick(store, now, grace=900)
    got = runs(store)
    assert [r.slot for r in got] == expected
    assert all(r.status == "submitted" and r.job_id for r in got)
    assert job_count(store) == 3


# -- validation at creation ------------------------------------------------------------------------------
def test_create_validates_every_field(store):
    from jobrunner.errors import NotebookNotFound, ParameterError
    from jobrunner.scheduling.schedules import InvalidSchedule, ScheduleConflict

    with pytest.raises(InvalidSchedule) as err:
        make(store, cron="5 4 * * FUNDAY")
    assert err.value.field == "cron"
    with pytest.raises(InvalidSchedule) as err:
        make(store, timezone="Europe/Atlantis")
    assert err.value.field == "timezone" and "Europe/Atlantis" in str(err.value)
    with pytest.raises(InvalidSchedule) as err:
        make(store, kernel_name="julia-1.9")
    assert err.value.field == "kernel_name" and "python3" in str(err.value)  # the installed ones are listed
    with pytest.raises(ParameterError) as perr:
        make(store, parameters={"x": "three"})
    assert "parameter 'x' must be int" in str(perr.value)
    with pytest.raises(NotebookNotFound):
        make(store, notebook="notebooks/missing.ipynb")
    never = make(store, name="never", cron="0 0 31 2 *")  # valid cron (as crontab accepts it), never fires
    assert never.next_run_at is None
    created = make(store, parameters={"x": 3}, timezone="Europe/Berlin", timeout_seconds=60)
    assert created.parameters == {"x": 3} and created.kernel_name == "python3"
    assert created.next_run_at == utc(2026, 12, 1, 12, 1)
    with pytest.raises(ScheduleConflict):
        make(store)


# -- the tick's decisions -----------------------------------------------------------------------------------
def test_max_concurrent_runs_skips_and_records_while_a_run_is_unfinished(store):
    from jobrunner.jobs import cancel_job
    from jobrunner.scheduling.scheduler import tick

    make(store, max_concurrent_runs=1)
    first = tick(store, utc(2026, 12, 1, 12, 1, 2))
    assert len(first.submitted) == 1
    tick(store, utc(2026, 12, 1, 12, 2, 2))  # the first job is still QUEUED
    r = runs(store)
    assert [x.status for x in r] == ["submitted", "skipped"]
    assert "max_concurrent_runs=1 reached" in r[1].reason and first.submitted[0] in r[1].reason
    cancel_job(first.submitted[0], settings=store)
    assert len(tick(store, utc(2026, 12, 1, 12, 3, 2)).submitted) == 1
    assert job_count(store) == 2


@pytest.mark.parametrize(
    "catchup,expected",
    [
        ("once", ["submitted", "skipped", "skipped", "submitted"]),
        ("skip", ["submitted", "skipped", "skipped", "skipped"]),
    ],
)
def test_catchup_after_downtime(store, catchup, expected):
    from jobrunner.scheduling.scheduler import tick

    make(store, catchup=catchup, max_concurrent_runs=10)
    tick(store, utc(2026, 12, 1, 12, 1, 1), grace=10)
    tick(store, utc(2026, 12, 1, 12, 4, 30), grace=10)  # 12:02, 12:03, 12:04 missed
    got = runs(store)
    assert [r.slot.minute for r in got] == [1, 2, 3, 4]
    assert [r.status for r in got] == expected
    assert f"catch-up policy '{catchup}'" in got[1].reason
    tick(store, utc(2026, 12, 1, 12, 5, 3), grace=10)  # on time again
    assert runs(store)[-1].status == "submitted"


def test_paused_schedules_do_not_fire_and_resume_from_the_next_slot(store):
    from jobrunner.scheduling.scheduler import tick
    from jobrunner.scheduling.schedules import pause_schedule, resume_schedule

    make(store, max_concurrent_runs=10)
    pause_schedule("s", settings=store)
    for minute in range(1, 5):
        tick(store, utc(2026, 12, 1, 12, minute, 5))
    assert runs(store) == []
    resumed = resume_schedule("s", settings=store, now=utc(2026, 12, 1, 12, 4, 10))
    assert resumed.next_run_at == utc(2026, 12, 1, 12, 5)
    tick(store, utc(2026, 12, 1, 12, 5, 5))
    assert [r.slot for r in runs(store)] == [utc(2026, 12, 1, 12, 5)]


def test_a_claim_left_by_a_dead_scheduler_is_submitted_once(store):
    """Crash after the claim committed (no job yet), and crash after the job was created (run still
    claimed): the next tick completes both, and the idempotency key prevents a second job."""
    from jobrunner.jobs import submit
    from jobrunner.scheduling.scheduler import tick
    from jobrunner.scheduling.schedules import insert_run, run_key
    from jobrunner.store.db import session_scope

    sched = make(store, max_concurrent_runs=10)
    a, b = utc(2026, 12, 1, 11, 58), utc(2026, 12, 1, 11, 59)
    with session_scope(store) as session:
        for slot in (a, b):
            assert insert_run(
                session=session, schedule_id=sched.id, slot=slot, trigger="cron", status="claimed"
            )
        assert not insert_run(session=session, schedule_id=sched.id, slot=a, trigger="cron", status="skipped")
    existing = submit(
        "notebooks/ok.ipynb", {}, idempotency_key=run_key(sched.id, b), submitter="schedule:s", settings=store
    )
    report = tick(store, utc(2026, 12, 1, 12, 0, 40))
    assert len(report.submitted) == 2 and existing.id in report.submitted
    assert job_count(store) == 2
    assert {r.slot: r.job_id for r in runs(store)}[b] == existing.id


def test_a_run_whose_parameters_no_longer_fit_is_recorded_as_failed(store, project):
    import json

    from jobrunner.scheduling.scheduler import tick

    make(store, parameters={"x": 3}, max_concurrent_runs=10)
    path = project / "notebooks" / "ok.ipynb"
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = "y = 2.5\n"  # x is gone from the contract
    path.write_text(json.dumps(nb))
    report = tick(store, utc(2026, 12, 1, 12, 1, 1))
    assert report.failed == 1 and report.submitted == []
    run = runs(store)[0]
    assert run.status == "failed" and "unknown parameter 'x'" in run.reason
    assert job_count(store) == 0


def test_concurrent_ticks_claim_each_slot_once(store):
    from jobrunner.scheduling.scheduler import tick

    for i in range(6):
        make(store, name=f"s{i}", max_concurrent_runs=100)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def ticker() -> None:
        try:
            for minute in range(1, 6):
                barrier.wait(30)
                tick(store, utc(2026, 12, 1, 12, minute, 1))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ticker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert job_count(store) == 6 * 5
    for i in range(6):
        assert [r.slot.minute for r in runs(store, f"s{i}")] == [1, 2, 3, 4, 5]


# -- CLI -----------------------------------------------------------------------------------------------------
def test_cli_exit_codes_and_json(store):
    import json

    runner = CliRunner()

    def cli(*args: str):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    code, _, err = cli("schedule", "create", "n1", "notebooks/ok.ipynb", "--cron", "61 * * * *")
    assert code == 2 and "cron" in err and "'61 * * * *'" in err
    code, _, err = cli(
        "schedule", "create", "n1", "notebooks/ok.ipynb", "--cron", "* * * * *", "--timezone", "Moon/Base"
    )
    assert code == 2 and "timezone" in err and "Moon/Base" in err
    code, _, err = cli(
        "schedule", "create", "n1", "notebooks/ok.ipynb", "--cron", "* * * * *", "--kernel", "nope"
    )
    assert code == 2 and "kernel_name" in err and "python3" in err
    code, _, err = cli(
        "schedule", "create", "n1", "notebooks/ok.ipynb", "--cron", "* * * * *", "-p", "x", "abc"
    )
    assert code == 2 and "parameter 'x'" in err
    code, _, err = cli(
        "schedule", "create", "n1", "notebooks/ok.ipynb", "--cron", "* * * * *", "--max-concurrent-runs", "0"
    )
    assert code == 2 and "max_concurrent_runs" in err
    code, out, _ = cli(
        "schedule",
        "create",
        "n1",
        "notebooks/ok.ipynb",
        "--cron",
        "*/5 * * * *",
        "-p",
        "x",
        "4",
        "--timezone",
        "Europe/Berlin",
        "--catchup",
        "skip",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    assert created["parameters"] == {"x": 4} and created["catchup"] == "skip" and not created["paused"]
    code, _, err = cli("schedule", "create", "n1", "notebooks/ok.ipynb", "--cron", "* * * * *")
    assert code == 5 and "exists already" in err
    assert cli("schedule", "show", "nothing-here")[0] == 4
    code, out, _ = cli("schedule", "pause", "n1", "--json")
    assert code == 0 and json.loads(out)["paused"] is True and json.loads(out)["next_run_at"] is None
    code, out, _ = cli("schedule", "run-now", created["id"], "--json")  # also while paused
    run = json.loads(out)
    assert (
        code == 0
        and run["trigger"] == "manual"
        and run["status"] == "submitted"
        and run["job_state"] == "QUEUED"
    )
    code, _, err = cli("schedule", "run-now", "n1")  # max_concurrent_runs=1 and that job is queued
    assert code == 5 and "max_concurrent_runs=1 reached" in err
    code, out, _ = cli("schedule", "show", "n1", "--json")
    assert code == 0 and [r["job_id"] for r in json.loads(out)["runs"]] == [run["job_id"]]
    code, out, _ = cli("schedule", "show", "n1")
    assert code == 0 and run["job_id"] in out and "manual" in out
    code, out, err = cli("schedule", "list")
    assert code == 0 and "n1" in out and "1 of 1 schedule(s)" in err
    assert cli("schedule", "resume", "n1")[0] == 0
    assert cli("schedule", "delete", "n1")[0] == 0
    assert cli("schedule", "delete", "n1")[0] == 4
