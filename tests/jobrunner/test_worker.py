"""Workers against real PostgreSQL, RabbitMQ and S3 (moto server): the happy path and failures."""

from __future__ import annotations

import json
import time

import boto3
import nbformat
import pytest

from jobrunner.tags import JOB_ID_TAG
from tests.jobrunner.support import (
    infrastructure_retries,
    job,
    wait_consumers,
    wait_for,
    wait_state,
)

pytestmark = pytest.mark.services


def _s3_notebook(uri: str) -> nbformat.NotebookNode:
    bucket, key = uri[len("s3://") :].split("/", 1)
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return nbformat.reads(body.decode(), as_version=4)


def test_submitted_job_succeeds_with_output_in_s3_and_an_mlflow_run(job_env, workers, mlflow_store):
    from mlflow.tracking import MlflowClient

    from jobrunner.jobs import job_output_html, submit
    from tests.conftest import free_port

    metrics_port = free_port()
    workers.start(JOBRUNNER_WORKER_METRICS_PORT=str(metrics_port))
    queued = submit("notebooks/ok.ipynb", {"x": 40, "label": "answer"}, submitter="test")
    assert queued.state.value == "QUEUED" and queued.attempt == 0
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 90)
    assert done.state.value == "SUCCEEDED", done.error
    assert done.attempt == 1 and done.error is None
    assert done.progress.cells_done == done.progress.cells_total == 5  # 4 + the injected parameters cell
    assert done.output_uri.startswith(f"s3://{job_env['JOBRUNNER_ARTIFACT_URI'][5:]}/{done.id}/")
    nb = _s3_notebook(done.output_uri)
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "answer 42.5" in printed  # the parameters reached the notebook
    assert "answer 42.5" in job_output_html(done.id)
    run = MlflowClient(mlflow_store).get_run(done.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["total"] == 42.5
    assert run.data.tags[JOB_ID_TAG] == done.id

    def scrape() -> str:
        import urllib.request

        return urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()

    wait_for(lambda: 'jobrunner_jobs{state="SUCCEEDED"} 1.0' in scrape(), 10, "the jobs gauge")
    text = scrape()
    assert 'jobrunner_worker_jobs_finished_total{state="SUCCEEDED"} 1.0' in text
    assert 'jobrunner_job_duration_seconds_count{state="succeeded"} 1.0' in text
    assert "jobrunner_job_queue_wait_seconds_count 1.0" in text


def test_raising_notebook_fails_with_cell_and_exception_and_is_not_retried(job_env, workers):
    from jobrunner.jobs import job_events, submit

    workers.start()
    queued = submit("notebooks/raises.ipynb", {"message": "bad input"})
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 90)
    assert done.state.value == "FAILED"
    assert done.attempt == 1  # a notebook that raises is a result: no retry
    assert done.error.kind == "error"
    assert done.error.cell_index == 2  # as written in the submitted notebook (the 3rd cell)
    assert done.error.ename == "ValueError" and done.error.evalue == "bad input"
    nb = _s3_notebook(done.output_uri)  # the executed notebook with the error cell is kept
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert [(e["ename"], e["evalue"]) for e in errors] == [("ValueError", "bad input")]
    time.sleep(2)  # nothing runs it again
    again = job(queued.id)
    assert again.state.value == "FAILED" and again.attempt == 1
    assert [e.to_state for e in job_events(queued.id)] == ["QUEUED", "RUNNING", "FAILED"]


def test_notebook_over_its_time_limit_fails_with_timeout(job_env, workers):
    from jobrunner.jobs import submit

    workers.start(JOBRUNNER_TIMEOUT="3")
    queued = submit("notebooks/sleeps.ipynb", {"seconds": 60.0})
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED", "CANCELLED"}, 90)
    assert done.state.value == "FAILED"
    assert done.error.kind == "timeout" and done.error.ename == "TimeoutError"
    assert "3s" in done.error.message
    assert (done.finished_at - done.started_at).total_seconds() < 30


def test_cancel_running_job_stops_its_kernel_within_5_seconds(job_env, workers):
    from jobrunner.jobs import cancel_job, submit
    from tests.jobrunner.support import alive, job_kernels

    proc = workers.start()
    queued = submit("notebooks/sleeps.ipynb", {"seconds": 120.0})
    wait_for(lambda: job(queued.id).progress.current_cell == 3, 120, "the sleep cell to start")
    kernels = job_kernels(proc.pid)  # the pool's idle kernel stays: it is the next job's
    assert kernels, "the worker runs its notebook in a kernel process"
    t0 = time.monotonic()
    assert cancel_job(queued.id).state.value == "CANCELLING"
    wait_for(lambda: not alive(kernels), 10, "the kernel to stop")
    elapsed = time.monotonic() - t0
    assert elapsed < 5.0, f"the kernel was stopped {elapsed:.1f}s after the cancel"
    done = wait_state(queued.id, {"CANCELLED", "SUCCEEDED", "FAILED"}, 30)
    assert done.state.value == "CANCELLED"
    assert done.error.kind == "cancelled" and done.output_uri  # the partial output is kept


def test_cancelled_queued_job_never_starts(job_env, workers):
    from jobrunner.jobs import cancel_job, job_events, submit

    queued = submit("notebooks/ok.ipynb", {"x": 1})
    assert cancel_job(queued.id).state.value == "CANCELLED"
    follow = submit("notebooks/ok.ipynb", {"x": 2})  # FIFO: once this one is done, the first was seen
    workers.start()
    wait_state(follow.id, {"SUCCEEDED"}, 90)
    cancelled = job(queued.id)
    assert cancelled.state.value == "CANCELLED" and cancelled.attempt == 0 and cancelled.started_at is None
    assert [e.to_state for e in job_events(queued.id)] == ["QUEUED", "CANCELLED"]


def test_two_workers_share_the_queue_and_no_job_runs_twice(job_env, workers):
    from jobrunner.jobs import job_events, submit

    a, b = workers.start("a"), workers.start("b")
    wait_consumers(job_env, 2)
    # identical jobs: cache=False, or the run cache would execute one and reuse it (test_runcache.py)
    ids = [submit("notebooks/sleeps.ipynb", {"seconds": 1.0}, cache=False).id for _ in range(4)]
    done = [wait_state(i, {"SUCCEEDED", "FAILED"}, 120) for i in ids]
    assert {d.state.value for d in done} == {"SUCCEEDED"}
    assert {d.worker_id for d in done} == {a.worker_id, b.worker_id}  # both consumed
    for d in done:
        retried = infrastructure_retries(d.id)
        assert d.attempt == 1 + len(retried)
        assert [e.to_state for e in job_events(d.id)] == ["QUEUED", "RUNNING"] + ["QUEUED", "RUNNING"] * len(
            retried
        ) + ["SUCCEEDED"]


def test_idempotent_resubmission_returns_the_same_job_and_runs_once(job_env, workers):
    from jobrunner.jobs import list_jobs, submit

    first = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="nightly-2026-11-28")
    second = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="nightly-2026-11-28")
    assert second.id == first.id
    workers.start()
    wait_state(first.id, {"SUCCEEDED"}, 90)
    third = submit("notebooks/ok.ipynb", {"x": 1}, idempotency_key="nightly-2026-11-28")
    assert third.id == first.id and third.state.value == "SUCCEEDED" and third.attempt == 1
    assert list_jobs().total == 1


def test_undecodable_message_is_dead_lettered_and_listed(job_env, workers, amqp_url):
    import pika

    from jobrunner.jobs import list_dead_letters, submit

    workers.start()
    wait_consumers(job_env, 1)  # the worker has declared the queue
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.basic_publish("", job_env["JOBRUNNER_QUEUE_NAME"], b"\x00not json")
    conn.close()
    ok = submit("notebooks/ok.ipynb", {"x": 1})  # the worker goes on with the next message
    assert wait_state(ok.id, {"SUCCEEDED", "FAILED"}, 90).state.value == "SUCCEEDED"
    letters = wait_for(lambda: list_dead_letters(), 10, "a dead letter")
    assert len(letters) == 1 and letters[0].job_id is None and "not json" in letters[0].body
    assert "rejected" in letters[0].reason
    assert len(list_dead_letters()) == 1  # listing does not consume


def test_infrastructure_failures_retry_then_dead_letter_then_requeue_succeeds(job_env, workers):
    from jobrunner.jobs import job_events, list_dead_letters, requeue_dead_letters, submit

    broken = workers.start("broken", JOBRUNNER_KERNEL_NAME="no-such-kernel", JOBRUNNER_MAX_ATTEMPTS="2")
    queued = submit("notebooks/ok.ipynb", {"x": 1})
    failed = wait_state(queued.id, {"FAILED", "SUCCEEDED"}, 90)
    assert failed.state.value == "FAILED" and failed.error.kind == "infrastructure"
    assert failed.attempt == 2  # retried once with backoff, then given up
    assert "no-such-kernel" in failed.error.message and "dlq requeue" in failed.error.message
    letters = wait_for(lambda: list_dead_letters(), 10, "the dead letter")
    assert [d.job_id for d in letters] == [queued.id]
    workers.stop(broken)

    workers.start("healthy")
    assert requeue_dead_letters(None, {queued.id}).requeued == [queued.id]
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 90)
    assert done.state.value == "SUCCEEDED" and done.attempt == 1
    assert list_dead_letters() == []
    states = [e.to_state for e in job_events(queued.id)]
    assert states == ["QUEUED", "RUNNING", "QUEUED", "RUNNING", "FAILED", "QUEUED", "RUNNING", "SUCCEEDED"]


def test_sigterm_lets_the_running_job_finish_and_stops(job_env, workers):
    from jobrunner.jobs import submit
    from tests.jobrunner.support import alive, kernel_children

    proc = workers.start()
    queued = submit("notebooks/sleeps.ipynb", {"seconds": 3.0})
    wait_for(lambda: job(queued.id).progress.current_cell == 3, 120, "the sleep cell to start")
    kernels = kernel_children(proc.pid)
    assert workers.stop(proc, timeout=60) == 0
    done = job(queued.id)
    assert done.state.value == "SUCCEEDED"  # finished within the grace period before exiting
    assert not alive(kernels)


def test_sigterm_after_grace_period_requeues_the_job_and_leaves_no_kernel(job_env, workers):
    from jobrunner.jobs import job_events, submit
    from tests.jobrunner.support import alive, kernel_children

    proc = workers.start("short-grace", JOBRUNNER_WORKER_GRACE_PERIOD="1")
    queued = submit("notebooks/sleeps.ipynb", {"seconds": 4.0})
    wait_for(lambda: job(queued.id).progress.current_cell == 3, 120, "the sleep cell to start")
    kernels = kernel_children(proc.pid)
    assert workers.stop(proc, timeout=30) == 0
    requeued = job(queued.id)
    assert requeued.state.value == "QUEUED"
    assert not alive(kernels), "no kernel process is left behind"
    assert "shut down" in job_events(queued.id)[-1].message
    workers.start("next")
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 90)
    assert done.state.value == "SUCCEEDED" and done.attempt == 2


def test_amqp_heartbeats_survive_a_cell_longer_than_the_heartbeat_timeout(job_env, workers):
    from jobrunner.jobs import job_events, submit

    # a 1-second AMQP heartbeat: a worker whose connection thread were blocked by the cell would be
    # dropped by RabbitMQ after ~2 s and its message redelivered (attempt 2)
    url = job_env["JOBRUNNER_BROKER_URL"] + "?heartbeat=1"
    proc = workers.start("hb", JOBRUNNER_BROKER_URL=url)
    queued = submit("notebooks/sleeps.ipynb", {"seconds": 8.0})
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 120)
    assert done.state.value == "SUCCEEDED" and done.attempt == 1
    assert [e.to_state for e in job_events(queued.id)] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert "connection lost" not in workers.log(proc)
