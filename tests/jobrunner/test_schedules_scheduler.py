"""Real `jobrunner scheduler` processes on a real PostgreSQL, with a test clock (--now-file) advanced by the
test: two schedulers submit each slot of a one-minute cron once; pause stops runs; max_concurrent_runs=1
skips while a job is RUNNING; a scheduler killed with SIGKILL and restarted catches up per policy; SIGTERM
stops it cleanly; the heartbeat health check; and a scheduled run that is an ordinary job and SUCCEEDS
on an embedded worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.jobrunner.support import PYTHON, stop_all, wait_for

T0 = datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)  # each slot is found 5 s late: within the 10 s grace


class Schedulers:
    """`jobrunner scheduler` subprocesses sharing one test clock file."""

    def __init__(self, env: dict[str, str], folder: Path):
        self.env = env
        self.folder = folder
        self.clock = folder / "now.txt"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.set(T0)

    def set(self, now: datetime) -> None:
        tmp = self.clock.with_suffix(".tmp")
        tmp.write_text(now.isoformat())
        tmp.replace(self.clock)
        self.now = now

    def advance(self, **delta: float) -> datetime:
        self.set(self.now + timedelta(**delta))
        return self.now

    def heartbeat(self, index: int) -> Path:
        return self.folder / f"heartbeat-{index}"

    def start(self) -> subprocess.Popen[bytes]:
        index = len(self.procs)
        log = open(self.folder / f"scheduler-{index}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "jobrunner.cli",
                "-v",
                "scheduler",
                "--interval",
                "0.2",
                "--misfire-grace",
                "10",
                "--now-file",
                str(self.clock),
                "--heartbeat-file",
                str(self.heartbeat(index)),
            ],
            env=self.env,
            cwd=self.env["JOBRUNNER_PROJECT_DIR"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.index = index  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def seen(self, proc: subprocess.Popen[bytes]) -> bool:
        """True once `proc` finished a tick at the current test time."""
        try:
            return self.heartbeat(proc.index).read_text().strip() == self.now.isoformat()  # type: ignore[attr-defined]
        except FileNotFoundError:
            return False

    def settle(self, *procs: subprocess.Popen[bytes], timeout: float = 60) -> None:
        """Wait until every given (default: every live) scheduler ticked at the current test time, twice."""
        live = procs or tuple(p for p in self.procs if p.poll() is None)
        for proc in live:
            wait_for(lambda p=proc: self.seen(p), timeout, f"scheduler {proc.index} to tick at {self.now}")  # type: ignore[attr-defined]
        for proc in live:  # one more tick each: a tick that began before the clock moved is not enough
            self.heartbeat(proc.index).unlink()  # type: ignore[attr-defined]
        for proc in live:
            wait_for(lambda p=proc: self.seen(p), timeout, f"scheduler {proc.index} to tick again")  # type: ignore[attr-defined]

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.folder / f"scheduler-{proc.index}.log").read_text(errors="replace")  # type: ignore[attr-defined]

    def close(self) -> None:
        stop_all(self.procs, 20)


@pytest.fixture
def schedulers(sched_env, tmp_path) -> Iterator[Schedulers]:
    pool = Schedulers(sched_env, tmp_path)
    yield pool
    pool.close()


def create(name: str, *args: str, notebook: str = "notebooks/ok.ipynb") -> dict:
    from jobrunner.scheduling.schedules import ScheduleCreate, create_schedule

    options = dict(zip(args[::2], args[1::2], strict=True))
    spec = ScheduleCreate(
        name=name,
        notebook=notebook,
        cron=options.pop("cron", "* * * * *"),
        **{k: json.loads(v) if k != "catchup" else v for k, v in options.items()},
    )
    return create_schedule(spec, now=T0).model_dump()


def runs(name: str) -> list:
    from jobrunner.scheduling.schedules import get_schedule

    return sorted(get_schedule(name, runs=1000).runs, key=lambda r: r.slot)


def jobs_of(name: str) -> list:
    from jobrunner.jobs import list_jobs

    return [j for j in list_jobs(limit=1000).items if j.submitter == f"schedule:{name}"]


def minute(m: int) -> datetime:
    return datetime(2026, 12, 1, 12, m, tzinfo=UTC)


def test_two_schedulers_submit_each_slot_of_a_one_minute_cron_exactly_once(schedulers):
    create("every-minute", "max_concurrent_runs", "100")
    a, b = schedulers.start(), schedulers.start()
    schedulers.settle()
    for _ in range(6):
        schedulers.advance(minutes=1)  # 12:01:05, 12:02:05, ...: each time one slot is due
        schedulers.settle()
    got = runs("every-minute")
    assert [r.slot for r in got] == [minute(m) for m in range(1, 7)]
    assert all(r.status == "submitted" for r in got)
    jobs = jobs_of("every-minute")
    assert len(jobs) == 6 and {j.id for j in jobs} == {r.job_id for r in got}
    assert len({j.idempotency_key for j in jobs}) == 6
    assert a.poll() is None and b.poll() is None
    # each slot was submitted by exactly one of the two processes (each logs the slots it submitted)
    logs = schedulers.log(a) + schedulers.log(b)
    for r in got:
        assert logs.count(f"slot {r.slot.isoformat()}: job {r.job_id}") == 1, logs[-3000:]


def test_pause_stops_runs_and_resume_starts_again(schedulers):
    from jobrunner.scheduling.schedules import pause_schedule, resume_schedule

    create("pausable", "max_concurrent_runs", "100")
    schedulers.start()
    schedulers.advance(minutes=1)
    schedulers.settle()
    assert len(runs("pausable")) == 1
    pause_schedule("pausable")
    for _ in range(3):
        schedulers.advance(minutes=1)
        schedulers.settle()
    assert len(runs("pausable")) == 1 and len(jobs_of("pausable")) == 1
    resume_schedule("pausable", now=schedulers.now)
    schedulers.advance(minutes=1)
    schedulers.settle()
    assert [r.slot for r in runs("pausable")] == [minute(1), minute(5)]


def test_max_concurrent_runs_skips_a_slot_while_its_job_is_running(schedulers, sched_env, tmp_path):
    from jobrunner.jobs import cancel_job, get_job

    create(
        "one-at-a-time",
        "max_concurrent_runs",
        "1",
        "parameters",
        '{"seconds": 120}',
        notebook="notebooks/sleeps.ipynb",
    )
    schedulers.start()
    schedulers.advance(minutes=1)
    schedulers.settle()
    [first] = runs("one-at-a-time")
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [PYTHON, "-m", "jobrunner.cli", "worker"],
        env=sched_env,
        cwd=sched_env["JOBRUNNER_PROJECT_DIR"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: get_job(first.job_id).state.value == "RUNNING", 120, "the first run to start")
        schedulers.advance(minutes=1)
        schedulers.settle()
        skipped = runs("one-at-a-time")[-1]
        assert skipped.slot == minute(2) and skipped.status == "skipped" and skipped.job_id is None
        assert (
            f"max_concurrent_runs=1 reached: 1 run(s) in progress (job {first.job_id} is RUNNING)"
            in skipped.reason
        )
        cancel_job(first.job_id)
        wait_for(lambda: get_job(first.job_id).state.value == "CANCELLED", 60, "the first run to stop")
        schedulers.advance(minutes=1)
        schedulers.settle()
        assert [r.status for r in runs("one-at-a-time")] == ["submitted", "skipped", "submitted"]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()


@pytest.mark.parametrize(
    "catchup,expected",
    [
        ("once", {2: "skipped", 3: "skipped", 4: "submitted"}),
        ("skip", {2: "skipped", 3: "skipped", 4: "skipped"}),
    ],
)
def test_a_scheduler_killed_and_restarted_after_missed_slots_catches_up_per_policy(
    schedulers, catchup, expected
):
    create("catch-up", "max_concurrent_runs", "100", "catchup", catchup)
    first = schedulers.start()
    schedulers.advance(minutes=1)
    schedulers.settle()
    assert [(r.slot, r.status) for r in runs("catch-up")] == [(minute(1), "submitted")], runs("catch-up")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    schedulers.set(datetime(2026, 12, 1, 12, 4, 40, tzinfo=UTC))  # 12:02, 12:03, 12:04 missed (> 10 s grace)
    schedulers.start()
    schedulers.settle()
    got = {r.slot.minute: r for r in runs("catch-up")}
    assert {m: r.status for m, r in got.items() if m > 1} == expected
    assert f"catch-up policy '{catchup}'" in got[2].reason
    assert len(jobs_of("catch-up")) == 1 + list(expected.values()).count("submitted")
    schedulers.advance(seconds=25)  # 12:05:05: on time again
    schedulers.settle()
    assert runs("catch-up")[-1].slot == minute(5) and runs("catch-up")[-1].status == "submitted"


def test_sigterm_stops_the_scheduler_cleanly_and_the_health_check_follows_the_heartbeat(
    schedulers, sched_env
):
    proc = schedulers.start()
    schedulers.settle()
    check = [
        PYTHON,
        "-m",
        "jobrunner.cli",
        "scheduler",
        "--check",
        "--heartbeat-file",
        str(schedulers.heartbeat(proc.index)),
    ]  # type: ignore[attr-defined]
    ok = subprocess.run(check, env=sched_env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "healthy" in ok.stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert "scheduler stopped" in schedulers.log(proc)
    missing = subprocess.run(
        check[:-1] + [str(schedulers.folder / "no-such-heartbeat")],
        env=sched_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "unhealthy" in missing.stderr


def test_a_scheduler_without_its_database_is_unhealthy_and_recovers(schedulers, sched_env, tmp_path):
    from tests.jobrunner.support import TcpProxy

    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    env = {**sched_env, "JOBRUNNER_DATABASE_URL": proxy.url_for(sched_env["JOBRUNNER_DATABASE_URL"])}
    schedulers.env = env
    create("outage", "max_concurrent_runs", "100")
    proc = schedulers.start()
    schedulers.settle()
    proxy.cut()
    schedulers.advance(minutes=1)
    heartbeat = schedulers.heartbeat(proc.index)  # type: ignore[attr-defined]
    heartbeat.unlink()
    wait_for(lambda: "tick failed" in schedulers.log(proc), 60, "a failed tick to be logged")
    assert not heartbeat.exists() and proc.poll() is None  # unhealthy, still running
    proxy.restore()
    schedulers.settle()
    assert [r.slot for r in runs("outage")] == [minute(1)]


def test_a_scheduled_run_is_an_ordinary_job_that_succeeds_on_an_embedded_worker(schedulers, sched_env):
    from jobrunner.jobs import get_job

    create("end-to-end", "parameters", '{"x": 41, "label": "scheduled"}', "timeout_seconds", "300")
    schedulers.start()
    schedulers.advance(minutes=1)
    schedulers.settle()
    [run] = runs("end-to-end")
    worker = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "worker", "--burst"],
        env=sched_env,
        cwd=sched_env["JOBRUNNER_PROJECT_DIR"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    job = get_job(run.job_id)
    assert job.state.value == "SUCCEEDED" and job.parameters == {"x": 41, "label": "scheduled"}
    assert job.timeout_seconds == 300 and job.mlflow_run_id and job.output_uri
    shown = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "schedule", "show", "end-to-end", "--json"],
        env=sched_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["runs"][0]["job_state"] == "SUCCEEDED"
