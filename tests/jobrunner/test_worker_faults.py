"""Nothing is lost: workers killed mid-notebook, RabbitMQ unreachable during submissions, PostgreSQL
connections cut while a worker is idle and while it runs a job. Real services, workers as subprocesses."""

from __future__ import annotations

import time

import pytest

from jobrunner.tags import ATTEMPT_TAG, ERROR_MESSAGE_TAG, OUTCOME_TAG
from tests.conftest import free_port
from tests.jobrunner.faults_support import SLEEP_CELL, write_long_first_notebook
from tests.jobrunner.support import (
    TcpProxy,
    alive,
    infrastructure_retries,
    job,
    kernel_children,
    wait_consumers,
    wait_for,
    wait_state,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]


def test_kill_9_mid_notebook_five_times_another_worker_completes_each_job_once(job_env, workers, project):
    from jobrunner.jobs import job_events, list_jobs, submit

    # the first attempt sleeps 30 s in its cell (killed 1 s in: a wide margin), the rerun 0.5 s
    notebook = write_long_first_notebook(project)
    live = [workers.start("k"), workers.start("k")]
    for round_ in range(5):
        wait_consumers(job_env, 2)
        queued = submit(notebook, {"seconds": 30.0, "marker": str(project / f"first-{round_}")})
        running = wait_for(
            lambda: (j := job(queued.id)).progress.current_cell == SLEEP_CELL and j,
            120,
            "the 30-second cell to start",
        )
        victim = next(p for p in live if p.worker_id == running.worker_id)
        kernels = kernel_children(victim.pid)
        time.sleep(1.0)  # well inside the 30-second cell
        victim.kill()  # SIGKILL: no cleanup, no ack
        victim.wait(10)
        live.remove(victim)
        live.append(workers.start("k"))  # replacement starts while the survivor takes over
        done = wait_state(queued.id, {"SUCCEEDED", "FAILED", "CANCELLED"}, 120)
        assert done.state.value == "SUCCEEDED", (round_, done.error)
        assert done.worker_id != victim.worker_id and done.attempt == 2 + len(
            infrastructure_retries(queued.id)
        )
        states = [e.to_state for e in job_events(queued.id)]
        assert states.count("SUCCEEDED") == 1 and states[-1] == "SUCCEEDED"
        wait_for(lambda: not alive(kernels), 15, "the dead worker's kernel to exit")  # it polls its parent
        if round_ == 0:
            assert_lost_attempt_run_closed(job_env, queued.id)
    page = list_jobs(limit=10)
    assert page.total == 5 and {j.state.value for j in page.items} == {"SUCCEEDED"}


def assert_lost_attempt_run_closed(env: dict[str, str], job_id: str) -> None:
    """The killed attempt's MLflow run is KILLED (outcome worker_lost), not left RUNNING forever."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(env["JOBRUNNER_MLFLOW_EXPERIMENT"])
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`jobrunner.job_id` = '{job_id}'")
    by_attempt = {r.data.tags[ATTEMPT_TAG]: r for r in runs}
    assert sorted(by_attempt) == ["1", "2"], [r.data.tags for r in runs]
    lost, done = by_attempt["1"], by_attempt["2"]
    assert lost.info.status == "KILLED" and lost.data.tags[OUTCOME_TAG] == "worker_lost"
    assert "its worker stopped" in lost.data.tags[ERROR_MESSAGE_TAG]
    assert done.info.status == "FINISHED" and done.data.tags[OUTCOME_TAG] == "succeeded"


def test_broker_unreachable_during_50_submissions_all_accepted_and_all_complete(
    job_env, workers, monkeypatch
):
    from sqlalchemy import func, select

    from jobrunner.config import get_settings
    from jobrunner.jobs import job_events, list_jobs, submit
    from jobrunner.store.db import session_scope
    from jobrunner.store.models import Outbox

    # The shared RabbitMQ serves other test runs, so the outage is simulated: submissions see a broker
    # URL whose port is closed (connection refused, as with a stopped broker); workers use the real one.
    monkeypatch.setenv("JOBRUNNER_BROKER_URL", f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    get_settings.cache_clear()
    t0 = time.monotonic()
    ids = [submit("notebooks/no_parameters.ipynb", cache=False).id for _ in range(50)]  # 50 executions
    assert time.monotonic() - t0 < 60
    assert len(set(ids)) == 50 and {job(i).state.value for i in ids} == {"QUEUED"}
    with session_scope(get_settings()) as session:
        unsent = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None)))
    assert unsent == 50  # every message waits in the outbox

    monkeypatch.setenv("JOBRUNNER_BROKER_URL", job_env["JOBRUNNER_BROKER_URL"])  # the broker is back
    get_settings.cache_clear()
    workers.start("a"), workers.start("b")
    wait_for(
        lambda: list_jobs(state="SUCCEEDED", limit=1).total == 50, 400, "all 50 jobs to succeed", interval=1.0
    )
    assert list_jobs(state="FAILED", limit=1).total == 0
    for job_id in ids:  # each ran to success once; a second attempt only after an infrastructure error
        events = job_events(job_id)
        assert [e.to_state for e in events].count("SUCCEEDED") == 1
        requeues = [e for e in events if e.from_state == "RUNNING" and e.to_state == "QUEUED"]
        assert job(job_id).attempt == 1 + len(requeues) == 1 + len(infrastructure_retries(job_id))


def test_postgres_outage_while_idle_and_during_a_job_recovers_without_help(job_env, workers):
    from jobrunner.jobs import job_events, submit

    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    try:
        proc = workers.start(
            "pg",
            JOBRUNNER_DATABASE_URL=proxy.url_for(job_env["JOBRUNNER_DATABASE_URL"]),
            JOBRUNNER_HEARTBEAT_TIMEOUT="15",
        )
        wait_consumers(job_env, 1)
        first = submit("notebooks/ok.ipynb", {"x": 1})
        wait_state(first.id, {"SUCCEEDED"}, 90)  # the worker holds pooled connections now

        proxy.cut()  # outage while idle: pooled connections die, new ones are refused
        time.sleep(3)
        proxy.restore()
        idle = submit("notebooks/ok.ipynb", {"x": 2})
        assert wait_state(idle.id, {"SUCCEEDED", "FAILED"}, 90).state.value == "SUCCEEDED"

        during = submit("notebooks/sleeps.ipynb", {"seconds": 6.0})
        wait_for(lambda: job(during.id).progress.current_cell == 3, 90, "the sleep cell to start")
        proxy.cut()  # outage while the notebook runs: heartbeats fail, the notebook goes on
        time.sleep(3)
        proxy.restore()
        done = wait_state(during.id, {"SUCCEEDED", "FAILED"}, 90)
        assert done.state.value == "SUCCEEDED" and done.attempt == 1
        assert [e.to_state for e in job_events(during.id)] == ["QUEUED", "RUNNING", "SUCCEEDED"]
        assert proc.poll() is None  # the worker never died
        log = workers.log(proc)  # it did see both outages
        assert "housekeeping failed (job store unavailable" in log
        assert "heartbeat failed (job store unavailable" in log
    finally:
        proxy.cut()
