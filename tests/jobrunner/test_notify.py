"""Webhook notifications against real PostgreSQL, RabbitMQ and workers, to HTTP receivers the tests run:
exactly one signed POST for a failed job naming the failing cell, none for an outcome not asked for, a
receiver that is down at first gets it once it is back, and the job's state never waits on it."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import free_port
from tests.jobrunner.support import wait_for, wait_state

pytestmark = pytest.mark.services
SECRET = "webhook-secret-for-tests"


class Receiver:
    """A webhook receiver on 127.0.0.1:`port` that records each POST (path, headers, body, arrival time)."""

    def __init__(self, port: int):
        self.port = port
        self.posts: list[dict] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "raw": body,
                        "body": json.loads(body),
                        "at": time.time(),
                    }
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/jobs"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _notify_events(job_id: str) -> list[str]:
    from jobrunner.jobs import job_events

    return [e.message or "" for e in job_events(job_id) if e.kind == "notify"]


def test_a_failed_job_gets_exactly_one_signed_post_naming_the_failing_cell(job_env, workers):
    from jobrunner.jobs import submit

    receiver = Receiver(free_port())
    try:
        workers.start(JOBRUNNER_NOTIFY_SECRET=SECRET, JOBRUNNER_PUBLIC_API_URL="https://jobs.example.org/api")
        failing = submit("notebooks/raises.ipynb", {"message": "bad input"}, notify=receiver.url)
        fine = submit("notebooks/ok.ipynb", {"x": 1}, notify=receiver.url)  # on failure only: no POST
        both = submit("notebooks/ok.ipynb", {"x": 2}, notify=receiver.url, notify_on="both")
        for queued in (failing, fine, both):
            wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 120)
        wait_for(
            lambda: len(receiver.posts) >= 2 and _notify_events(failing.id) and _notify_events(both.id),
            60,
            "two deliveries",
        )
        time.sleep(1.5)  # a duplicate would come within a notifier poll or two
    finally:
        receiver.close()
    by_job = {p["body"]["job"]: p for p in receiver.posts}
    assert len(receiver.posts) == 2 and set(by_job) == {failing.id, both.id}, receiver.posts
    post = by_job[failing.id]
    body = post["body"]
    assert post["path"] == "/hooks/jobs"
    assert body["state"] == "FAILED" and body["notebook"] == "notebooks/raises.ipynb"
    assert body["parameters"] == {"message": "bad input"}
    assert body["error"]["cell_index"] == 2 and body["error"]["ename"] == "ValueError"
    assert body["error"]["evalue"] == "bad input" and "cell 2" in body["error"]["message"]
    assert body["links"]["job"] == f"https://jobs.example.org/api/v1/jobs/{failing.id}"
    assert body["links"]["executed_notebook"].startswith("s3://") and body["links"]["mlflow_run"]
    expected = "sha256=" + hmac.new(SECRET.encode(), post["raw"], hashlib.sha256).hexdigest()
    assert post["headers"]["X-Jobrunner-Signature"] == expected
    assert by_job[both.id]["body"]["state"] == "SUCCEEDED" and by_job[both.id]["body"]["error"] is None
    assert _notify_events(failing.id) == [f"webhook sent to 127.0.0.1:{receiver.port} (HTTP 204, try 1)"]
    assert _notify_events(fine.id) == []


def test_a_receiver_that_is_down_at_first_gets_the_post_once_it_is_back(job_env, workers):
    from jobrunner.jobs import get_job, submit

    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks/jobs"
    workers.start(JOBRUNNER_NOTIFY_RETRY_BACKOFF="0.3", JOBRUNNER_NOTIFY_MAX_TRIES="200")
    queued = submit("notebooks/raises.ipynb", {"message": "down"}, notify=url)
    done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 120)
    assert done.state.value == "FAILED"  # the job's state did not wait for the receiver

    def tries() -> int:
        from sqlalchemy import select

        from jobrunner.config import get_settings
        from jobrunner.store.db import session_scope
        from jobrunner.store.models import JobNotification

        with session_scope(get_settings()) as session:
            return (
                session.scalar(select(JobNotification.tries).where(JobNotification.job_id == queued.id)) or 0
            )

    wait_for(lambda: tries() >= 4, 60, "failed tries while the receiver is down")
    assert _notify_events(queued.id) == []  # neither sent nor given up yet
    receiver = Receiver(port)
    try:
        wait_for(lambda: receiver.posts, 60, "the delivery after the receiver came back")
        wait_for(lambda: _notify_events(queued.id), 30, "the delivery's job event")
        time.sleep(1.0)
    finally:
        receiver.close()
    assert len(receiver.posts) == 1
    body = receiver.posts[0]["body"]
    assert body["job"] == queued.id and body["state"] == "FAILED" and body["error"]["cell_index"] == 2
    assert receiver.posts[0]["at"] > get_job(queued.id).finished_at.timestamp()
    (event,) = _notify_events(queued.id)
    assert event.startswith(f"webhook sent to 127.0.0.1:{port} (HTTP 204, try ") and "try 1)" not in event


def test_bad_notify_requests_are_refused_before_queueing(job_env):
    from jobrunner.errors import InvalidJobOption
    from jobrunner.jobs import list_jobs, submit

    for url, on, expected in (
        ("ftp://example.org/x", None, "must be an http:// or https:// URL"),
        ("https://user:pw@example.org/x", None, "must not carry credentials"),
        ("https://example.org/x", "sometimes", "notify_on must be one of"),
        (None, "both", "notify_on needs a notify URL"),
    ):
        with pytest.raises(InvalidJobOption, match=expected):
            submit("notebooks/ok.ipynb", {}, notify=url, notify_on=on)
    assert list_jobs().total == 0


def test_a_schedules_runs_carry_its_notify_settings_and_kernel(job_env):
    from jobrunner.jobs import get_job
    from jobrunner.scheduling.schedules import (
        InvalidSchedule,
        ScheduleCreate,
        create_schedule,
        get_schedule,
        run_now,
    )

    url = "https://hooks.example.org/nightly"
    spec = ScheduleCreate(
        name="nightly-notify",
        notebook="notebooks/ok.ipynb",
        cron="0 3 * * *",
        notify_url=url,
        notify_on="both",
    )
    created = create_schedule(spec)
    assert created.notify_url == url and get_schedule("nightly-notify").notify_on == "both"
    run = run_now("nightly-notify")
    job = get_job(run.job_id)
    assert (job.notify_url, job.notify_on, job.kernel_name) == (url, "both", "python3")
    with pytest.raises(InvalidSchedule, match="must not carry credentials") as bad:
        create_schedule(spec.model_copy(update={"name": "bad-notify", "notify_url": "https://u:p@x.org/"}))
    assert bad.value.field == "notify_url"
