"""One delivery of a job message, processed by a worker: claim, execute, store the output, finish.

Runs in its own thread, never on the AMQP connection's thread: a notebook cell may block for minutes,
and pika's BlockingConnection only answers broker heartbeats while its owner thread pumps
`process_data_events`. (The notebook itself runs in a separate kernel process, as for every execution;
this thread only drives it.) The result is a verdict for the message - ack, dead-letter - that the
consumer applies on its own thread after the job's state is committed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from jobrunner.config import Settings
from jobrunner.errors import InfrastructureError, JobrunnerError, KernelStartError, StoreUnavailable
from jobrunner.kinds import FailureKind
from jobrunner.store.db import session_scope
from jobrunner.store.models import Job
from jobrunner.store.states import JobState, transition, utcnow
from jobrunner.tags import job_run_tags
from jobrunner.worker.metrics import WorkerMetrics
from jobrunner.worker.verify import VERIFY_KIND, execute_verification

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
Verdict = Literal["ack", "dead", "retry_later"]


@dataclass
class Outcome:
    verdict: Verdict
    reason: str = ""


class JobRun:
    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        payload: dict[str, Any],
        metrics: WorkerMetrics,
        stop_event: threading.Event,
        *,
        may_take_over: bool = True,
    ):
        from jobrunner.execution.executor import CancelToken

        self.settings = settings
        self.worker_id = worker_id
        self.job_id: str = payload["job_id"]
        self.metrics = metrics
        self.token = CancelToken()
        self.stop_event = stop_event  # the worker is shutting down: stop retrying store writes forever
        self.lost = False
        self._recorded = False  # this attempt's final state was committed
        # False right after the store came back: a stale heartbeat then proves nothing (reaper.py)
        self.may_take_over = may_take_over
        self._progress: dict[str, Any] = {}
        self._progress_dirty = False

    # -- entry point ------------------------------------------------------------------------------------
    def process(self) -> Outcome:
        try:
            claimed = self._claim()
        except StoreUnavailable as exc:
            log.warning(
                "job %s: store unavailable before start (%s); message goes back to the queue",
                self.job_id,
                exc,
            )
            time.sleep(min(5.0, self.settings.worker_poll_interval * 2))
            return Outcome("retry_later", str(exc))
        if isinstance(claimed, Outcome):
            return claimed
        job: Job = claimed
        if job.attempt > 1:
            self._close_lost_attempts(job)
        if job.attempt > self.settings.max_attempts:
            reason = (
                f"gave up after {job.attempt - 1} attempts (its workers died or infrastructure failed "
                f"each time); inspect with `jobrunner dlq list`, retry with `jobrunner dlq requeue`"
            )
            self._finish(
                JobState.FAILED,
                error_kind=FailureKind.DEAD_LETTERED,
                error_message=reason,
                error_ename="DeadLettered",
            )
            self.metrics.dead_letters.inc()
            return Outcome("dead", reason)
        return self._execute(job)

    def _close_lost_attempts(self, job: Job) -> None:
        """Earlier attempts that died with their worker left MLflow runs RUNNING: mark them KILLED."""
        from jobrunner.execution.recording import close_lost_attempts

        close_lost_attempts(
            self.settings.mlflow_tracking_uri or "",
            self.settings.mlflow_experiment,
            job.id,
            f"attempt lost: its worker stopped before finishing; attempt {job.attempt} "
            f"taken by {self.worker_id}",
        )

    def _claim(self) -> Job | Outcome:
        from jobrunner.store import queries as store

        stale_before = utcnow() - timedelta(seconds=self.settings.heartbeat_timeout)
        with session_scope(self.settings) as session:
            job = store.get_job(session=session, job_id=self.job_id)
            if job is None:
                return Outcome("dead", f"no job {self.job_id} in the store")
            if JobState(job.state).terminal:
                log.info("job %s is already %s; duplicate message acked", job.id, job.state)
                return Outcome("ack")
            if job.state == JobState.CANCELLING.value:
                transition(
                    session,
                    job.id,
                    [JobState.CANCELLING],
                    JobState.CANCELLED,
                    where=[Job.heartbeat_at < stale_before],
                    finished_at=utcnow(),
                    error_kind=FailureKind.CANCELLED,
                    error_message="cancelled",
                    actor=self.worker_id,
                    event="cancelled (its worker was gone)",
                )
                return Outcome("ack")
            if not store.claim(
                session=session,
                job_id=job.id,
                worker_id=self.worker_id,
                stale_before=stale_before if self.may_take_over else None,
            ):
                log.info("job %s is %s on a live worker; duplicate message acked", job.id, job.state)
                return Outcome("ack")
            return store.get_job(session=session, job_id=job.id)  # type: ignore[return-value]

    # -- execution ----------------------------------------------------------------------------------
    def _execute(self, job: Job) -> Outcome:
        self.metrics.busy.set(1)
        queued_at = job.queued_at if job.queued_at.tzinfo else job.queued_at.replace(tzinfo=utcnow().tzinfo)
        self.metrics.queue_wait.observe(max(0.0, (utcnow() - queued_at).total_seconds()))
        self._attempt = job.attempt
        self._started = time.monotonic()
        log.info(
            "job %s: taken, attempt %d of %s",
            job.id,
            job.attempt,
            job.notebook,
            extra=self._event("taken", notebook=job.notebook),
        )
        # The heartbeat goes on until the job's final state is written, also while the store is down after
        # the notebook ended: a reaper must not take a finished job for a dead worker's.
        beat = threading.Thread(target=self._heartbeat_loop, name=f"heartbeat-{job.id[:8]}", daemon=True)
        finished = threading.Event()
        self._finished_event = finished
        beat.start()
        try:
            return self._run_and_conclude(job)
        finally:
            self._release_key()  # a waiting identical job is now a hit, or (this one failed) takes over
            finished.set()
            beat.join(timeout=5)
            self.metrics.busy.set(0)

    def _run_and_conclude(self, job: Job) -> Outcome:
        from jobrunner.execution.executor import execute
        from jobrunner.execution.notebooks import resolve_notebook
        from jobrunner.store.live import OutputRecorder

        if job.kind == VERIFY_KIND:  # re-execute a recorded run and compare (jobrunner/worker/verify.py)
            return execute_verification(self, job) or Outcome("ack")
        out_dir = (self.settings.runs_dir or self.settings.project_dir) / "jobs" / job.id
        t0 = time.monotonic()
        try:
            path, _ = resolve_notebook(job.notebook, self.settings)
            if job.cache_key:  # the key of what runs now (the notebook or its data may have changed)
                self._cache_key = _current_key(path, job, self.settings)
                if self._cache_key and job.use_cache and not job.write_workspace:
                    coalesced = self._coalesce(job, self._cache_key)
                    if coalesced is not None:
                        return coalesced
            limit = self.settings.timeout
            if job.timeout_seconds is not None:
                limit = min(limit, job.timeout_seconds)  # the operator's limit caps the submitter's
            live = OutputRecorder(
                self.settings, job.id, job.attempt
            ).start()  # live output (jobrunner/store/live.py)
            try:
                result = execute(
                    path,
                    job.parameters,
                    output_path=out_dir / f"attempt-{job.attempt}.ipynb",
                    settings=self.settings,
                    on_progress=self._progress_hook(live),
                    cancel=self.token,
                    timeout=limit,
                    kernel_name=job.kernel_name,
                    on_output=live.add,
                    # the job owns its outputs: defaults point into this attempt's folder
                    outputs_dir=out_dir / f"attempt-{job.attempt}" / "outputs",
                    write_workspace=bool(job.write_workspace),
                    tags=job_run_tags(job.id, job.attempt, self.worker_id),
                )
            finally:
                live.close()
            # a run stopped for a requeue or taken over is done again: its partial output is not kept
            keep = not self.lost and not (result.status == "cancelled" and self.token.reason == "shutdown")
            uris = self._store_outputs(job.id, result) if keep else {}
        except InfrastructureError as exc:
            if isinstance(exc, KernelStartError):
                self.metrics.kernel_failures.inc()
            return self._retry_or_give_up(job, exc)
        except JobrunnerError as exc:  # the notebook or its parameters changed since submission
            self._finish(
                JobState.FAILED,
                error_kind=FailureKind.INVALID,
                error_ename=type(exc).__name__,
                error_evalue=str(exc),
                error_message=str(exc),
            )
            return Outcome("ack")
        except Exception as exc:
            log.exception("job %s: unexpected error", job.id)
            return self._retry_or_give_up(job, exc)
        self.metrics.duration.labels(result.status).observe(time.monotonic() - t0)
        outcome = self._conclude(job, result, uris)
        if self._recorded or result.status != "cancelled":  # a run stopped for a requeue is KILLED anyway
            self._settle_mlflow(result.run_id)
        return outcome

    # -- the run cache: identical jobs in flight execute once (docs/jobs.md, "Run cache") ---------------
    def _coalesce(self, job: Job, key: str) -> Outcome | None:
        """Reuse an identical execution that SUCCEEDED since the submission; else claim the key in the
        store (None: this job executes). While another live job holds the key, this one goes back to the
        queue to wait (its attempt not counted) and is a hit once that job succeeds; if that job ends
        otherwise, the first waiter to come back takes the key over - one, not all of them."""
        from jobrunner.execution import runcache
        from jobrunner.store import queries as store

        def reusable() -> Any:
            with session_scope(self.settings) as session:
                candidates = store.cached_executions(session=session, key=key)
                session.expunge_all()
            return next((c for c in candidates if runcache.reusable(c)), None)

        source = reusable()
        if source is None:
            with session_scope(self.settings) as session:
                holder = store.claim_cache_key(
                    session=session, key=key, job_id=job.id, worker_id=self.worker_id
                )
            if holder != job.id:
                self._wait_for_identical(job, holder)
                return Outcome("ack")
            # The holder may have SUCCEEDED between the look-up above and the claim (its claim then
            # looked ended and was taken over): look again before executing a second time.
            source = reusable()
            if source is None:
                self._claimed_key = key
                return None
            self._write_until_done(
                lambda session: store.release_cache_key(session=session, key=key, job_id=job.id)
            )
        if source is not None:
            self._finish(
                JobState.SUCCEEDED,
                cached_from=source.id,
                cache_key=key,
                output_uri=source.output_uri,
                html_uri=source.html_uri,
                mlflow_run_id=source.mlflow_run_id,
                outputs=source.outputs,
                cells_done=source.cells_done or 0,
                cells_total=source.cells_total,
                error_message=f"served from the run cache: the execution of job {source.id}",
            )
            if self._recorded:
                from jobrunner.execution.recording import tag_cache_hit

                tag_cache_hit(
                    self.settings.mlflow_tracking_uri or "", source.mlflow_run_id, job.id, source.id
                )
        return Outcome("ack")

    def _wait_for_identical(self, job: Job, holder: str) -> None:
        # not an attempt of its own: the attempt count goes back, and no error is recorded
        self._back_to_queue(
            event=f"waiting for the identical job {holder} (run cache)",
            attempt=job.attempt - 1,
            delay=self.settings.worker_poll_interval,
            error_message=None,
            attempt_column=Job.attempt - 1,
        )

    def _release_key(self) -> None:
        from jobrunner.store import queries as store

        key = getattr(self, "_claimed_key", None)
        if key is None or self.lost:  # lost: the attempt that took this job over holds the claim now
            return
        self._write_until_done(
            lambda session: store.release_cache_key(session=session, key=key, job_id=self.job_id)
        )

    def _settle_mlflow(self, run_id: str | None) -> None:
        """One job, one authoritative MLflow run: the attempt whose result the store took marks every other
        run of the job superseded; an attempt whose result was refused marks its own run."""
        from jobrunner.execution.recording import mark_superseded

        if not run_id:
            return
        uri = self.settings.mlflow_tracking_uri or ""
        if self._recorded:
            mark_superseded(uri, self.settings.mlflow_experiment, self.job_id, keep=run_id)
        else:
            mark_superseded(
                uri,
                self.settings.mlflow_experiment,
                self.job_id,
                only=run_id,
                reason="this attempt's result was not recorded: the job was taken over or changed meanwhile",
            )

    def _conclude(self, job: Job, result: Any, uris: dict[str, Any]) -> Outcome:
        self._recorded = False
        if self.lost:
            log.warning("job %s was taken over by another worker; dropping this run's result", job.id)
            return Outcome("ack")
        common = dict(mlflow_run_id=result.run_id, **uris)
        if hasattr(self, "_cache_key"):  # a key recomputed at execution (None: opted out since)
            common["cache_key"] = self._cache_key
        if result.status == "cancelled" and self.token.reason == "shutdown":
            self._requeue(job, "worker shut down before the job finished", delay=0.0, reason="shutdown")
            return Outcome("ack")
        if result.status == "cancelled":
            self._finish(
                JobState.CANCELLED,
                error_kind=FailureKind.CANCELLED,
                error_message=result.failure.message,
                error_cell_index=result.failure.cell_index,
                **common,
            )
            return Outcome("ack")
        if result.status == "failed":
            f = result.failure
            if f.kind == FailureKind.KERNEL_DIED:
                self.metrics.kernel_failures.inc()
            self._finish(
                JobState.FAILED,
                error_kind=f.kind,
                error_cell_index=f.cell_index,
                error_ename=f.ename,
                error_evalue=f.evalue,
                error_message=f.message,
                **common,
            )
            return Outcome("ack")
        self._finish(JobState.SUCCEEDED, **common)
        return Outcome("ack")

    def _store_outputs(self, job_id: str, result: Any) -> dict[str, Any]:
        from jobrunner.execution.artifacts import store_for
        from jobrunner.execution.outputs import store_outputs

        target = store_for(self.settings.artifact_uri or "")
        uris: dict[str, Any] = {"output_uri": target.put(result.output_path, f"{job_id}/output.ipynb")}
        if result.html_path:
            uris["html_uri"] = target.put(result.html_path, f"{job_id}/output.html")
        files = store_outputs(result.output_files, result.output_targets, target, f"{job_id}/outputs")
        uris["outputs"] = [f.as_dict() for f in files]
        if result.run_id and files:
            from jobrunner.execution.recording import tag_outputs

            tag_outputs(self.settings.mlflow_tracking_uri or "", result.run_id, files)
        return uris

    def _retry_or_give_up(self, job: Job, exc: BaseException) -> Outcome:
        if job.attempt < self.settings.max_attempts:
            delay = min(self.settings.retry_backoff * 2 ** (job.attempt - 1), self.settings.retry_backoff_max)
            log.warning(
                "job %s: infrastructure error (%s); retry in %.1fs",
                job.id,
                exc,
                delay,
                extra=self._event("retry", delay_s=delay, error=str(exc)[:500]),
            )
            self._requeue(job, f"infrastructure error: {exc}", delay=delay, reason="infrastructure")
            return Outcome("ack")
        message = f"infrastructure error on attempt {job.attempt} (giving up): {exc}"
        self._finish(
            JobState.FAILED,
            error_kind=FailureKind.INFRASTRUCTURE,
            error_ename=type(exc).__name__,
            error_evalue=str(exc),
            error_message=message + "; retry with `jobrunner dlq requeue`",
        )
        self.metrics.dead_letters.inc()
        log.error("job %s: %s", job.id, message, extra=self._event("dead_lettered", error=message[:500]))
        return Outcome("dead", message)

    # -- store writes that must happen (retried while the database is down) --------------------------
    def _finish(self, state: JobState, **fields: Any) -> None:
        fields.setdefault("finished_at", utcnow())
        fields.setdefault("heartbeat_at", utcnow())
        # the last progress goes with the final state: a run shorter than one heartbeat poll (a warm
        # kernel runs a small notebook in ~0.2 s) never had its progress written otherwise
        total = self._progress.get("cells_total")
        if total is not None:
            fields.setdefault("cells_total", total)
            if state is JobState.SUCCEEDED:
                fields.setdefault("cells_done", total)
                fields.setdefault("current_cell", None)
            else:
                fields.setdefault("cells_done", self._progress.get("cells_done"))

        def write(session: Any) -> bool:
            sources = (
                [JobState.CANCELLING]
                if state is JobState.CANCELLED
                else [JobState.RUNNING, JobState.CANCELLING]
            )
            return transition(
                session,
                self.job_id,
                sources,
                state,
                where=[Job.worker_id == self.worker_id],
                actor=self.worker_id,
                event=fields.get("error_message") or state.value.lower(),
                **fields,
            )

        if self._write_until_done(write):
            self._recorded = True
            self.metrics.finished.labels(state.value).inc()
            took = time.monotonic() - getattr(self, "_started", time.monotonic())
            log.info(
                "job %s: %s after %.1fs",
                self.job_id,
                state.value,
                took,
                extra=self._event(
                    "finished",
                    state=state.value,
                    duration_s=round(took, 3),
                    error_kind=fields.get("error_kind"),
                ),
            )

    def _requeue(self, job: Job, why: str, *, delay: float, reason: str) -> None:
        if self._back_to_queue(event=why, attempt=job.attempt, delay=delay, error_message=why):
            self.metrics.retries.labels(reason).inc()

    def _back_to_queue(
        self, *, event: str, attempt: int, delay: float, error_message: str | None, attempt_column: Any = None
    ) -> bool:
        """RUNNING -> QUEUED with a new outbox message for `attempt`, due after `delay` s; a job cancelled
        meanwhile is finished as CANCELLED instead. `attempt_column`: a new value of the attempt count."""
        from jobrunner.store import queries as store

        fields = {} if attempt_column is None else {"attempt": attempt_column}

        def write(session: Session) -> bool:
            if transition(
                session,
                self.job_id,
                [JobState.RUNNING],
                JobState.QUEUED,
                where=[Job.worker_id == self.worker_id],
                actor=self.worker_id,
                event=event,
                queued_at=utcnow(),
                error_message=error_message,
                **fields,
            ):
                store.add_outbox(session=session, job_id=self.job_id, attempt=attempt, delay=delay)
                return True
            return self._finish_cancel(session)

        return self._write_until_done(write)

    def _finish_cancel(self, session: Session) -> bool:
        """CANCELLING -> CANCELLED for this worker's attempt (cancelled while it ran or waited)."""
        return transition(
            session,
            self.job_id,
            [JobState.CANCELLING],
            JobState.CANCELLED,
            where=[Job.worker_id == self.worker_id],
            actor=self.worker_id,
            event="cancelled",
            finished_at=utcnow(),
            error_kind=FailureKind.CANCELLED,
            error_message="cancelled",
        )

    def _write_until_done(self, write: Any) -> bool:
        """Commit `write` with backoff while the store is down; the message stays unacked meanwhile."""
        delay = 0.5
        stop_seen: float | None = None
        while True:
            try:
                with session_scope(self.settings) as session:
                    done = bool(write(session))
                if not done:
                    log.warning("job %s changed under this worker; result not recorded", self.job_id)
                return done
            except StoreUnavailable as exc:
                if self.stop_event.is_set():  # shutting down: a few more seconds, then the message is
                    stop_seen = stop_seen or time.monotonic()  # redelivered and the reaper takes over
                    if time.monotonic() - stop_seen > 2.0:
                        log.error("job %s: giving up writing its result at shutdown: %s", self.job_id, exc)
                        return False
                    delay = 0.5
                log.warning("job %s: store unavailable (%s); retrying in %.1fs", self.job_id, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 4.0)  # write soon after the store is back

    # -- progress, heartbeat, cancellation ------------------------------------------------------------
    def _event(self, event: str, **fields: Any) -> dict[str, Any]:
        """Fields of a job event log line (JSON keys beside trace_id): event, job_id, attempt, ..."""
        return {"event": event, "job_id": self.job_id, "attempt": getattr(self, "_attempt", None), **fields}

    def _progress_hook(self, live: Any) -> Any:
        def on_progress(progress: Any) -> None:
            live.cell_started()  # the previous cell's output is written now
            self._on_progress(progress)

        return on_progress

    def _on_progress(self, progress: Any) -> None:
        log.debug(
            "job %s: cell %d of %d",
            self.job_id,
            progress.cells_done,
            progress.cells_total,
            extra=self._event("cell", cells_done=progress.cells_done, cells_total=progress.cells_total),
        )
        self._progress = {
            "cells_done": progress.cells_done,
            "cells_total": progress.cells_total,
            "current_cell": progress.cell_index,
        }
        self._progress_dirty = True

    def _heartbeat_loop(self) -> None:
        from jobrunner.store import queries as store

        poll = min(0.5, self.settings.heartbeat_interval)
        last_beat = 0.0
        while not self._finished_event.wait(poll):
            now = time.monotonic()
            due = self._progress_dirty or now - last_beat >= self.settings.heartbeat_interval
            try:
                with session_scope(self.settings) as session:
                    if due:  # the heartbeat, with progress; between beats only the state is read (cancel)
                        self._progress_dirty = False
                        state = store.heartbeat(
                            session=session,
                            job_id=self.job_id,
                            worker_id=self.worker_id,
                            progress=dict(self._progress),
                        )
                        last_beat = now
                    else:
                        state = store.job_state(session=session, job_id=self.job_id, worker_id=self.worker_id)
            except StoreUnavailable as exc:
                log.warning("job %s: heartbeat failed (%s); the job keeps running", self.job_id, exc)
                continue
            if state == JobState.CANCELLING.value and not self.token.cancelled:
                log.info("job %s: cancel requested; stopping the kernel", self.job_id)
                self.token.cancel("cancel requested")
            elif state is None or state not in (JobState.RUNNING.value, JobState.CANCELLING.value):
                self.lost = True
                self.token.cancel("lost")


def _current_key(path: Any, job: Job, settings: Settings) -> str | None:
    """The run-cache key of the notebook and data as they are now (jobrunner/execution/runcache.py); None if
    the notebook opted out since the submission."""
    from jobrunner.execution import runcache
    from jobrunner.execution.params import read_notebook, schema_from_notebook

    nb = read_notebook(path, job.notebook)
    if runcache.opted_out(nb):
        return None
    schema = schema_from_notebook(nb, job.notebook)
    return runcache.cache_key(
        nb, schema, schema.validate(dict(job.parameters or {})), settings.project_dir
    ).key
