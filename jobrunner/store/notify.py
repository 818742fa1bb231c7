"""Webhook notifications of finished jobs: an outbox written with the terminal state, sent apart from it.

A job (or a schedule, for each of its runs) may carry `notify_url` and `notify_on` (failure, success or
both). The one `transition()` (jobrunner/store/states.py) that moves a job to SUCCEEDED, FAILED or CANCELLED
calls `enqueue()` in the same transaction: a `job_notifications` row keyed by (job, state, attempt), so a
terminal state owes exactly one delivery, however often the transition's caller retries. Nobody waits on
it: every worker runs a `Notifier` thread that claims due rows (FOR UPDATE SKIP LOCKED, with a lease so a
worker killed mid-send leaves the row to another), POSTs the JSON body with a few quick tries (tenacity),
and on failure puts the row back with exponential backoff (JOBRUNNER_NOTIFY_RETRY_BACKOFF) until
JOBRUNNER_NOTIFY_MAX_TRIES. A delivery is recorded in the job's events (kind "notify": sent / failed).

The body: job id, state, notebook, parameters, attempt, error (cell, exception, message), links (the
executed notebook, HTML, MLflow run, and API URLs when JOBRUNNER_PUBLIC_API_URL is set). Secrets stay in
settings: with JOBRUNNER_NOTIFY_SECRET the body is signed (`X-Jobrunner-Signature: sha256=<hmac hex>`),
and a notify URL carrying credentials (user:password@) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobrunner.config import Settings
from jobrunner.errors import InfrastructureError, InvalidJobOption
from jobrunner.store.db import session_scope
from jobrunner.store.models import Job, JobEvent, JobNotification
from jobrunner.store.states import JobState, utcnow

log = logging.getLogger(__name__)

NOTIFY_ON = ("failure", "success", "both")
LEASE_S = 60.0  # a claimed delivery not settled by then (its worker died) is due again
_STATES_FOR = {
    "failure": {JobState.FAILED.value, JobState.CANCELLED.value},
    "success": {JobState.SUCCEEDED.value},
    "both": {JobState.FAILED.value, JobState.CANCELLED.value, JobState.SUCCEEDED.value},
}


def check_notify(url: str | None, on: str | None) -> tuple[str | None, str | None]:
    """(url, on) of a valid notify request; `on` defaults to "failure". InvalidJobOption otherwise."""
    if url is None:
        if on is not None:
            raise InvalidJobOption("notify_on", "notify_on needs a notify URL")
        return None, None
    on = on or "failure"
    if on not in NOTIFY_ON:
        raise InvalidJobOption("notify_on", f"notify_on must be one of {', '.join(NOTIFY_ON)}, not {on!r}")
    if len(url) > 2048:
        raise InvalidJobOption("notify", "the notify URL is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a bad port
    except ValueError as exc:
        raise InvalidJobOption("notify", f"notify URL {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidJobOption("notify", f"notify URL {url!r} must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise InvalidJobOption(
            "notify",
            "the notify URL must not carry credentials (user:password@): sign "
            "webhooks with JOBRUNNER_NOTIFY_SECRET instead",
        )
    del port
    return url, on


def enqueue(session: Session, job_id: str, state: str) -> None:
    """Owe a delivery for `job_id` reaching terminal `state`, if its notify settings ask for it (called by
    `transition()` in its transaction; a second call for the same state and attempt adds nothing)."""
    job = session.execute(select(Job.notify_url, Job.notify_on, Job.attempt).where(Job.id == job_id)).first()
    if job is None or not job.notify_url or state not in _STATES_FOR.get(job.notify_on or "failure", set()):
        return
    exists = session.scalar(
        select(JobNotification.id).where(
            JobNotification.job_id == job_id,
            JobNotification.state == state,
            JobNotification.attempt == job.attempt,
        )
    )
    if exists is None:
        now = utcnow()
        session.add(
            JobNotification(
                job_id=job_id,
                state=state,
                attempt=job.attempt,
                url=job.notify_url,
                created_at=now,
                available_at=now,
                tries=0,
            )
        )


def body_for(job: Job, settings: Settings) -> dict[str, Any]:
    """The JSON body of the webhook for `job` in its current (terminal) state."""
    links: dict[str, str | None] = {"executed_notebook": job.output_uri, "html": job.html_uri}
    if job.mlflow_run_id:
        tracking = settings.mlflow_tracking_uri or ""
        links["mlflow_run"] = (
            f"{tracking.rstrip('/')}/#/runs/{job.mlflow_run_id}"
            if tracking.startswith(("http://", "https://"))
            else f"runs:/{job.mlflow_run_id}"
        )
    if settings.public_api_url:
        base = settings.public_api_url.rstrip("/")
        links["job"] = f"{base}/v1/jobs/{job.id}"
        links["notebook_page"] = f"{base}/v1/jobs/{job.id}/notebook"
    error = None
    if job.error_kind or job.error_message:
        error = {
            "kind": job.error_kind,
            "cell_index": job.error_cell_index,
            "ename": job.error_ename,
            "evalue": job.error_evalue,
            "message": job.error_message,
        }
    return {
        "job": job.id,
        "state": job.state,
        "notebook": job.notebook,
        "parameters": job.parameters or {},
        "attempt": job.attempt,
        "submitter": job.submitter,
        "kernel": job.kernel_name,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "error": error,
        "links": {k: v for k, v in links.items() if v},
    }


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Sends owed deliveries in a background thread of a worker (see the module docstring)."""

    def __init__(self, settings: Settings, worker_id: str, *, poll: float | None = None):
        self.settings = settings
        self.worker_id = worker_id
        self.poll = poll if poll is not None else max(0.2, min(settings.worker_poll_interval, 2.0))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Notifier:
        self._thread = threading.Thread(target=self._loop, name="notifier", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_once()
            except InfrastructureError as exc:
                log.warning("notifier: store unavailable (%s); will retry", exc)
                sent = 0
            except Exception:
                log.exception("notifier: unexpected error")
                sent = 0
            if not sent:
                self._stop.wait(self.poll)

    def run_once(self, limit: int = 10) -> int:
        """Claim due deliveries and try each; returns how many were tried."""
        now = utcnow()
        with session_scope(self.settings) as session:
            rows = list(
                session.scalars(
                    select(JobNotification)
                    .where(
                        JobNotification.sent_at.is_(None),
                        JobNotification.failed_at.is_(None),
                        JobNotification.available_at <= now,
                    )
                    .order_by(JobNotification.available_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            )
            claimed = []
            for row in rows:
                row.available_at = now + timedelta(seconds=LEASE_S)
                job = session.get(Job, row.job_id)
                if job is not None:
                    claimed.append((row.id, row.job_id, row.url, row.tries, body_for(job, self.settings)))
        for row_id, job_id, url, tries, body in claimed:
            if self._stop.is_set():
                break
            self._deliver(row_id, job_id, url, tries, body)
        return len(claimed)

    def _deliver(self, row_id: int, job_id: str, url: str, tries: int, body: dict[str, Any]) -> None:
        import httpx
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

        data = json.dumps(body, default=str).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "jobrunner-notify",
            "X-Jobrunner-Delivery": f"{job_id}:{body['state']}:{body['attempt']}",
        }
        if self.settings.notify_secret:
            headers["X-Jobrunner-Signature"] = sign(data, self.settings.notify_secret)
        quick = max(1, min(3, self.settings.notify_max_tries - tries))
        error = ""
        status = 0
        done = 0
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(quick),
                reraise=True,
                wait=wait_exponential(multiplier=0.25, max=2),
                retry=retry_if_exception_type((httpx.HTTPError, _Retryable)),
            ):
                with attempt:
                    done += 1
                    response = httpx.post(
                        url, content=data, headers=headers, timeout=self.settings.notify_timeout
                    )
                    status = response.status_code
                    if status >= 500 or status == 429:
                        raise _Retryable(f"HTTP {status}")
                    if status >= 400:  # the receiver refuses it: trying again will not change that
                        error = f"HTTP {status}"
        except (httpx.HTTPError, _Retryable) as exc:
            error = str(exc) or type(exc).__name__
            status = 0
        self._settle(row_id, job_id, url, tries + done, status, error, body["state"])

    def _settle(
        self, row_id: int, job_id: str, url: str, tries: int, status: int, error: str, state: str
    ) -> None:
        host = urlsplit(url).netloc
        now = utcnow()
        with session_scope(self.settings) as session:
            row = session.get(JobNotification, row_id)
            if row is None:
                return
            row.tries = tries
            if status and not error:
                row.sent_at, message = now, f"webhook sent to {host} (HTTP {status}, try {tries})"
            elif error.startswith("HTTP 4") or tries >= self.settings.notify_max_tries:
                row.failed_at, row.last_error = now, error
                message = f"webhook to {host} failed after {tries} tries: {error}"
            else:
                row.last_error = error
                # rounds of up to 3 quick tries, then backoff * 2**round: 2, 4, 8 ... 300 s (~13 min in all
                # with the defaults) before the delivery is given up
                delay = min(300.0, self.settings.notify_retry_backoff * 2 ** max(0, tries // 3 - 1))
                row.available_at = now + timedelta(seconds=delay)
                log.info(
                    "job %s: webhook to %s not delivered (%s); next try in %.1fs", job_id, host, error, delay
                )
                return
            session.add(
                JobEvent(
                    job_id=job_id,
                    at=now,
                    from_state=state,
                    to_state=state,
                    kind="notify",
                    worker_id=self.worker_id,
                    message=message,
                )
            )
        log.info("job %s: %s", job_id, message)


class _Retryable(Exception):
    """A receiver's answer worth trying again (5xx, 429)."""
