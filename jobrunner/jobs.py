"""The Python API of jobs: submit, inspect, cancel. The CLI, notebooks and the REST API call these.

from jobrunner.jobs import submit, get_job
job = submit("notebooks/ok.ipynb", {"x": 3})
get_job(job.id).state
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobrunner.config import Settings, get_settings
from jobrunner.errors import InvalidTimeout, InvalidTransition, JobNotFound
from jobrunner.execution.notebooks import resolve_notebook
from jobrunner.execution.progress import ProgressBar
from jobrunner.kinds import FailureKind
from jobrunner.queue.base import DeadLetter, RequeueReport
from jobrunner.store.db import session_scope
from jobrunner.store.schemas import MAX_TIMEOUT, JobCreate, JobEventRead, JobList, JobRead
from jobrunner.store.states import JobState, transition, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "cancel_job",
    "get_job",
    "job_events",
    "job_output_html",
    "job_output_notebook",
    "list_jobs",
    "resolve_notebook",
    "submit",
]


def submit(
    notebook: str,
    parameters: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    submitter: str | None = None,
    timeout: float | None = None,
    kernel: str | None = None,
    notify: str | None = None,
    notify_on: str | None = None,
    write_workspace: bool = False,
    cache: bool = True,
    settings: Settings | None = None,
) -> JobRead:
    """Validate and queue a notebook job; returns it in state QUEUED (or the existing job for the key).

    `timeout` (seconds) limits each attempt of this job; the worker's own limit (JOBRUNNER_TIMEOUT) still
    applies when it is lower. `kernel` names an installed kernelspec (default: the workers' kernel);
    `notify` is a webhook URL told of the job's end on `notify_on` ("failure" by default, "success",
    "both"; jobrunner/store/notify.py). Either wrong is an InvalidJobOption (a ParameterError), nothing
    queued.

    The job owns its outputs (docs/jobs.md, "Outputs"): output parameters (`# output:` in the parameters
    cell) left at their defaults are written into the job's own folder and stored with the job. A value
    naming a path inside the project is refused (ParameterError) unless `write_workspace`, which makes the
    job write where its output parameters say, defaults included, as `jobrunner run` does.

    Run cache (docs/jobs.md, "Run cache"): unless `cache` is False, the job writes the workspace or the
    notebook opts out, an earlier SUCCEEDED execution with the same code, parameters, input data and
    environment whose outputs are still stored is reused: the job is returned SUCCEEDED at once with
    `cached_from` naming that execution, and nothing runs.

    Raises NotebookNotFound (path outside the roots / missing), ParameterError (values do not fit the
    notebook's parameters cell, or exceed JOBRUNNER_MAX_PARAMETER_BYTES / JOBRUNNER_MAX_PARAMETERS_BYTES),
    StoreUnavailable. A broker that is down does not fail the submission:
    the message stays in the outbox until a relay (every worker runs one) publishes it.
    """
    from jobrunner.execution.outputs import check_outputs
    from jobrunner.execution.params import check_sizes, read_schema
    from jobrunner.store.queries import create_job_idempotent

    settings = settings or get_settings()
    full, label = resolve_notebook(notebook, settings)
    schema = read_schema(full, label)
    values = schema.validate(dict(parameters or {}))
    check_outputs(schema, values, settings.project_dir, write_workspace=write_workspace)
    check_sizes(
        values,
        notebook=label,
        max_value_bytes=settings.max_parameter_bytes,
        max_total_bytes=settings.max_parameters_bytes,
    )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT
    ):
        raise InvalidTimeout(timeout)
    from jobrunner.execution.kernels import check_kernel_name
    from jobrunner.store.notify import check_notify

    kernel = check_kernel_name(kernel)
    notify, notify_on = check_notify(notify, notify_on)
    job_in = JobCreate(
        notebook=label,
        parameters=values,
        idempotency_key=idempotency_key,
        submitter=submitter,
        timeout_seconds=timeout,
        kernel_name=kernel,
        notify_url=notify,
        notify_on=notify_on,
        write_workspace=write_workspace,
    )
    job_in.use_cache = cache
    source = _cache_lookup(job_in, full, schema, values, settings) if cache and not write_workspace else None
    with session_scope(settings) as session:
        job, created = create_job_idempotent(session=session, job_in=job_in, cached_from=source)
        result = JobRead.from_row(job)
    if created and result.cached_from:
        log.info("job %s: run cache hit, reusing job %s: %s", result.id, result.cached_from, label)
        import threading

        from jobrunner.execution.recording import tag_cache_hit

        # the hit is in the job store now; tagging the reused MLflow run (importing MLflow in a fresh
        # process takes a second) happens beside the caller, in a thread the interpreter waits for at exit
        threading.Thread(
            target=tag_cache_hit,
            name=f"cache-hit-{result.id[:8]}",
            args=(settings.mlflow_tracking_uri or "", result.mlflow_run_id, result.id, result.cached_from),
        ).start()
    elif created:
        log.info("job %s queued: %s", result.id, label)
        _publish_now(settings)
    return result


def _cache_lookup(
    job_in: JobCreate, path: Path, schema: Any, values: dict[str, Any], settings: Settings
) -> Any:
    """Set `job_in.cache_key`; return a reusable earlier execution (a Job row), or None: a miss."""
    from jobrunner.execution import runcache
    from jobrunner.execution.params import read_notebook
    from jobrunner.store import queries as store

    nb = read_notebook(path, job_in.notebook)
    if runcache.opted_out(nb):
        return None
    job_in.cache_key = runcache.cache_key(nb, schema, values, settings.project_dir).key
    with session_scope(settings) as session:
        candidates = store.cached_executions(session=session, key=job_in.cache_key)
        session.expunge_all()
    for candidate in candidates:
        if runcache.reusable(candidate):
            return candidate
        log.info(
            "run cache: job %s has the key but its stored outputs changed or are gone; a miss", candidate.id
        )
    return None


def _publish_now(settings: Settings) -> None:
    """Try to publish fresh outbox rows at once; leave them for the workers' relays if the broker is down."""
    if settings.embedded:
        return
    from jobrunner.queue.relay import relay_once

    try:
        relay_once(settings, connect_attempts=1)
    except Exception as exc:  # noqa: BLE001 - the outbox keeps the job; a worker's relay retries
        log.warning(
            "broker unavailable, job stays in the outbox until a worker's relay publishes it: %s", exc
        )


def get_job(job_id: str, *, settings: Settings | None = None) -> JobRead:
    from jobrunner.store import queries as store

    with session_scope(settings or get_settings()) as session:
        job = store.get_job(session=session, job_id=job_id)
        if job is None:
            raise JobNotFound(job_id)
        return JobRead.from_row(job)


def wait_for_job(
    job_id: str,
    *,
    timeout: float | None = None,
    poll: float = 0.5,
    on_update: Callable[[JobRead], None] | None = None,
    settings: Settings | None = None,
) -> JobRead:
    """Poll until the job is SUCCEEDED, FAILED or CANCELLED and return it.

    `on_update` sees every polled state (progress bars). A store that is briefly down is waited out
    (logged); `timeout` (seconds) raises WaitTimeout, and the job keeps running.
    """
    from jobrunner.errors import StoreUnavailable, WaitTimeout

    settings = settings or get_settings()
    started = time.monotonic()
    job: JobRead | None = None
    while True:
        try:
            job = get_job(job_id, settings=settings)
        except StoreUnavailable as exc:
            if job is None and timeout is not None and time.monotonic() - started > timeout:
                raise
            log.warning("job store unavailable while waiting for job %s (%s); still waiting", job_id, exc)
        else:
            if on_update is not None:
                on_update(job)
            if job.terminal:
                return job
        if job is not None and timeout is not None and time.monotonic() - started >= timeout:
            raise WaitTimeout(job, timeout)
        time.sleep(poll)


class JobHandle:
    """A submitted job, as `jobrunner.notebook.submit` returns it: `wait()`, `cancel()`, `refresh()`.

    >>> job = submit("notebooks/03_train.ipynb", {"n_estimators": 200})
    >>> job.wait()          # progress bar in JupyterLab; JobFailed if the notebook failed
    """

    def __init__(self, job: JobRead, settings: Settings | None = None):
        self.job = job
        self._settings = settings

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def state(self) -> str:
        return self.job.state.value

    def refresh(self) -> JobRead:
        self.job = get_job(self.id, settings=self._settings)
        return self.job

    def cancel(self) -> JobRead:
        self.job = cancel_job(self.id, settings=self._settings)
        return self.job

    def wait(
        self, timeout: float | None = None, *, progress: bool = True, check: bool = True, poll: float = 0.5
    ) -> JobRead:
        """Block until the job ends; returns it. With `check`, FAILED or CANCELLED raise JobFailed
        (its message names the cell and the error; `.job` has the details)."""
        from jobrunner.errors import JobFailed

        bar, on_update = job_progress_bar(widget=True)
        try:
            self.job = wait_for_job(
                self.id,
                timeout=timeout,
                poll=poll,
                settings=self._settings,
                on_update=on_update if progress else None,
            )
        finally:
            bar.close()
        if check and self.job.state is not JobState.SUCCEEDED:
            raise JobFailed(self.job)
        return self.job

    def __repr__(self) -> str:
        p = self.job.progress
        cells = f", {p.cells_done}/{p.cells_total} cells" if p.cells_total else ""
        return f"<Job {self.id} {self.job.notebook} {self.state}{cells}>"


def job_progress_bar(*, widget: bool) -> tuple[ProgressBar, Callable[[JobRead], None]]:
    """The progress bar of a job being waited for, and the `on_update` callback of wait_for_job that feeds
    it (cells done, the job's state, its notebook as the label)."""
    bar = ProgressBar(widget=widget)

    def on_update(job: JobRead) -> None:
        bar.show(job.progress.cells_done, job.progress.cells_total, job.state.value, label=job.notebook)

    return bar, on_update


def list_jobs(
    *,
    state: str | None = None,
    notebook: str | None = None,
    limit: int = 50,
    offset: int = 0,
    settings: Settings | None = None,
) -> JobList:
    from jobrunner.store import queries as store

    if state is not None:
        state = JobState(state.upper()).value  # ValueError names the bad state
    limit = max(1, min(limit, 1000))
    offset = max(0, offset)
    with session_scope(settings or get_settings()) as session:
        rows, total = store.list_jobs(
            session=session, state=state, notebook=notebook, limit=limit, offset=offset
        )
        return JobList(items=[JobRead.from_row(r) for r in rows], total=total, limit=limit, offset=offset)


def job_events(job_id: str, *, settings: Settings | None = None) -> list[JobEventRead]:
    from jobrunner.store import queries as store

    with session_scope(settings or get_settings()) as session:
        if store.get_job(session=session, job_id=job_id) is None:
            raise JobNotFound(job_id)
        return [JobEventRead.model_validate(e) for e in store.job_events(session=session, job_id=job_id)]


def cancel_job(job_id: str, *, settings: Settings | None = None) -> JobRead:
    """QUEUED -> CANCELLED at once (it never starts); RUNNING -> CANCELLING, and the worker stops the
    kernel within seconds and sets CANCELLED. Raises JobNotFound, InvalidTransition (already finished)."""
    from jobrunner.store import queries as store

    settings = settings or get_settings()
    with session_scope(settings) as session:
        changed = transition(
            session,
            job_id,
            [JobState.QUEUED],
            JobState.CANCELLED,
            event="cancelled while queued",
            finished_at=utcnow(),
            error_kind=FailureKind.CANCELLED,
            error_message="cancelled before it started",
        ) or transition(session, job_id, [JobState.RUNNING], JobState.CANCELLING, event="cancel requested")
        job = store.get_job(session=session, job_id=job_id)
        if job is None:
            raise JobNotFound(job_id)
        if not changed and job.state != JobState.CANCELLING.value:
            raise InvalidTransition(job_id, job.state, JobState.CANCELLED.value)
        return JobRead.from_row(job)


def cache_stats(*, settings: Settings | None = None) -> dict[str, int]:
    """The run cache: `entries` (reusable executions), `hits` (jobs that reused one), `misses` (cacheable
    jobs that executed)."""
    from jobrunner.store import queries as store

    with session_scope(settings or get_settings()) as session:
        return store.cache_stats(session=session)


def clear_cache(*, settings: Settings | None = None) -> int:
    """Forget every run-cache entry; returns how many. Jobs keep their results; hits keep `cached_from`."""
    from jobrunner.store import queries as store

    with session_scope(settings or get_settings()) as session:
        return store.cache_clear(session=session)


def job_output_notebook(job_id: str, *, settings: Settings | None = None) -> bytes:
    """The executed notebook (.ipynb bytes) of a job; JobNotFound / FileNotFoundError if none yet."""
    from jobrunner.execution.artifacts import read_uri

    job = get_job(job_id, settings=settings)
    if not job.output_uri:
        raise FileNotFoundError(f"job {job_id} has no executed notebook yet (state {job.state.value})")
    return read_uri(job.output_uri)


def job_output_html(job_id: str, *, settings: Settings | None = None) -> str:
    """The executed notebook of a job rendered as HTML (str); FileNotFoundError if it has none yet."""
    from jobrunner.execution.artifacts import read_uri

    job = get_job(job_id, settings=settings)
    if job.html_uri:
        return read_uri(job.html_uri).decode("utf-8")
    from jobrunner.execution import notebooks

    nb = notebooks.reads(job_output_notebook(job_id, settings=settings).decode("utf-8"), as_version=4)
    body, _ = notebooks.html_exporter(template_name="lab").from_notebook_node(nb)
    return body


# -- dead letters ---------------------------------------------------------------------------------------
def list_dead_letters(settings: Settings | None = None, limit: int = 100) -> list[DeadLetter]:
    """Dead-lettered messages (RabbitMQ's `<queue>.dlq`, or parked outbox rows without a broker)."""
    from jobrunner.queue.broker import broker_for

    return broker_for(settings or get_settings()).dead_letters(limit)


def requeue_dead_letters(
    settings: Settings | None, job_ids: set[str] | None, *, discard: bool = False
) -> RequeueReport:
    """Make dead-lettered jobs (all if `job_ids` is None) QUEUED with fresh attempts and resend them.

    Letters that cannot be requeued (not a job message, no such job, the job is not failed) are reported
    in `.skipped` and stay dead-lettered, or are dropped with `discard`.
    """
    from jobrunner.queue.broker import broker_for

    current = settings or get_settings()
    return broker_for(current).requeue_dead(job_ids, lambda job_id: _reopen(current, job_id), discard=discard)


def _reopen(settings: Settings, job_id: str) -> str | None:
    """FAILED (given up by the worker) -> QUEUED with the attempt counter reset; None when the job is
    QUEUED now, else why it cannot be requeued."""
    from jobrunner.store import queries as store
    from jobrunner.store.models import Job

    with session_scope(settings) as session:
        if transition(
            session,
            job_id,
            [JobState.FAILED],
            JobState.QUEUED,
            where=[Job.error_kind.in_([FailureKind.DEAD_LETTERED, FailureKind.INFRASTRUCTURE])],
            event="requeued from the dead-letter queue",
            attempt=0,
            queued_at=utcnow(),
            finished_at=None,
            error_kind=None,
            error_cell_index=None,
            error_ename=None,
            error_evalue=None,
            error_message=None,
        ):
            return None
        job = store.get_job(session=session, job_id=job_id) if len(job_id) <= 36 else None
        if job is None:
            return "no job with this id in the store"
        if job.state == JobState.QUEUED.value:
            return None  # requeued already (an earlier requeue, a retry): one more message is harmless
        kind = f" ({job.error_kind})" if job.error_kind else ""
        return (
            f"the job is {job.state}{kind}; only jobs given up after infrastructure errors or "
            "dead-lettered are requeued"
        )
