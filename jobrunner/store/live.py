"""Live output of running jobs: what a worker writes while a notebook runs, and how readers follow it.

Writing (`OutputRecorder`, one per attempt, in the worker): the executor hands every cell output to
`add()` as the kernel produces it (papermill engine hook, jobrunner/execution/engine.py). Outputs are kept as
text - stream text as printed, an error as `ename: evalue`, a text-only result as its text, and for rich
output (images, HTML, widgets) a one-line note naming its types. They are buffered in memory and written in
batches by a background thread: every JOBRUNNER_LIVE_OUTPUT_FLUSH_INTERVAL seconds, at each cell start and
at the end, consecutive stream text of one cell coalesced into one row. So the hot path (the thread that
drives the kernel) never waits on the database, a SIGKILLed worker loses at most the last interval, and
everything of earlier cells is already stored. A job keeps at most JOBRUNNER_LIVE_OUTPUT_MAX_BYTES characters
of text (all attempts together); past it a note says the output was cut - the executed notebook stays the full
record. A store that is down keeps the batch in memory for the next flush (bounded the same way).

Reading (`read_output`, `follow`): rows in `job_output` ordered by id, so a reader resumes after the last
id it saw. `follow` yields the job's state, progress, events (state changes, webhook deliveries) and
output until the job ends; `jobrunner logs --follow` and GET /v1/jobs/{id}/events are thin shells over it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from jobrunner.config import Settings, get_settings
from jobrunner.errors import InfrastructureError, JobNotFound
from jobrunner.store.db import session_scope
from jobrunner.store.models import Job, JobEvent, JobOutput
from jobrunner.store.schemas import _aware
from jobrunner.store.states import JobState, utcnow

log = logging.getLogger(__name__)

CUT_NOTE = (
    "[live output cut after {limit} characters (JOBRUNNER_LIVE_OUTPUT_MAX_BYTES); the executed "
    "notebook has all of it]\n"
)


@dataclass(frozen=True)
class OutputChunk:
    """One stored piece of a job's output."""

    id: int
    attempt: int
    cell_index: int | None
    kind: str  # stream | error | result | rich | note
    name: str | None  # stdout | stderr for streams
    text: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "cell_index": self.cell_index,
            "kind": self.kind,
            "name": self.name,
            "text": self.text,
            "at": self.at.isoformat(),
        }


def text_of(output: Mapping[str, Any]) -> tuple[str, str | None, str] | None:
    """(kind, stream name, text) of one nbformat output; None for outputs with nothing to show."""
    kind = output.get("output_type")
    if kind == "stream":
        text = output.get("text", "")
        text = "".join(text) if isinstance(text, list) else str(text)
        return ("stream", str(output.get("name") or "stdout"), text) if text else None
    if kind == "error":
        return "error", None, f"{output.get('ename')}: {output.get('evalue')}\n"
    if kind in ("execute_result", "display_data"):
        data = output.get("data") or {}
        rich = sorted(k for k in data if k != "text/plain")
        if rich:
            return "rich", None, f"[{', '.join(rich)} output: see the executed notebook]\n"
        plain = data.get("text/plain", "")
        plain = "".join(plain) if isinstance(plain, list) else str(plain)
        return ("result", None, plain + "\n") if plain else None
    return None


class OutputRecorder:
    """Buffers one attempt's outputs and writes them in batches (see the module docstring)."""

    def __init__(self, settings: Settings, job_id: str, attempt: int):
        self.settings = settings
        self.job_id = job_id
        self.attempt = attempt
        self.limit = settings.live_output_max_bytes
        self.interval = settings.live_output_flush_interval
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._used = 0  # bytes of text of this job stored or pending
        self.cut = False
        self._thread: threading.Thread | None = None

    def start(self) -> OutputRecorder:
        try:
            with session_scope(self.settings) as session:
                self._used = int(
                    session.scalar(
                        select(func.coalesce(func.sum(func.length(JobOutput.text)), 0)).where(
                            JobOutput.job_id == self.job_id
                        )
                    )
                    or 0
                )
        except InfrastructureError as exc:  # the output of earlier attempts is not counted then
            log.warning("job %s: could not read its stored output size (%s)", self.job_id, exc)
        self.cut = self.limit == 0 or self._used >= self.limit
        self._thread = threading.Thread(target=self._loop, name=f"live-output-{self.job_id[:8]}", daemon=True)
        self._thread.start()
        return self

    # -- called on the thread that drives the kernel: never blocks on the store --------------------------
    def add(self, cell_index: int | None, output: Mapping[str, Any]) -> None:
        try:
            found = text_of(output)
        except Exception:
            log.debug("job %s: unreadable output skipped", self.job_id, exc_info=True)
            return
        if found is None:
            return
        kind, name, text = found
        with self._lock:
            if self.cut:
                return
            size = len(text)
            if self._used + size > self.limit:
                text = text[: max(0, self.limit - self._used)]
                self.cut = True
            self._used += len(text)
            if text:
                last = self._pending[-1] if self._pending else None
                if (
                    last is not None
                    and kind == "stream"
                    and last["kind"] == "stream"
                    and last["cell_index"] == cell_index
                    and last["name"] == name
                ):
                    last["text"] += text  # one row per run of stream text of a cell, per batch
                else:
                    self._pending.append(
                        {
                            "job_id": self.job_id,
                            "attempt": self.attempt,
                            "cell_index": cell_index,
                            "kind": kind,
                            "name": name,
                            "text": text,
                            "at": utcnow(),
                        }
                    )
            if self.cut:
                self._pending.append(
                    {
                        "job_id": self.job_id,
                        "attempt": self.attempt,
                        "cell_index": cell_index,
                        "kind": "note",
                        "name": None,
                        "text": CUT_NOTE.format(limit=self.limit),
                        "at": utcnow(),
                    }
                )

    def cell_started(self) -> None:
        """The previous cell is done: write its output now (not waiting for the interval)."""
        self._wake.set()

    def close(self) -> None:
        """Stop the writer and write what is left (the job's terminal state is committed after this)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()

    # -- the writer -----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._closed.is_set():
                return
            self.flush()

    def flush(self) -> int:
        """Write the pending outputs in one statement; on a store error keep them for the next flush."""
        with self._lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            with session_scope(self.settings) as session:
                session.execute(insert(JobOutput), batch)
                if any(row["kind"] == "note" for row in batch):
                    session.add(
                        JobEvent(
                            job_id=self.job_id,
                            at=utcnow(),
                            to_state=JobState.RUNNING.value,
                            kind="output",
                            message=f"live output cut after {self.limit} characters",
                        )
                    )
        except InfrastructureError as exc:
            log.warning("job %s: live output not written yet (%s); retrying", self.job_id, exc)
            with self._lock:
                self._pending = batch + self._pending
            return 0
        except Exception:
            log.exception("job %s: live output dropped", self.job_id)
            return 0
        return len(batch)


# -- readers ------------------------------------------------------------------------------------------------
def read_output(
    job_id: str, *, after: int = 0, limit: int = 1000, settings: Settings | None = None
) -> list[OutputChunk]:
    """Stored output of a job after output id `after`, oldest first; JobNotFound for an unknown job."""
    with session_scope(settings or get_settings()) as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(job_id)
        rows = session.scalars(
            select(JobOutput)
            .where(JobOutput.job_id == job_id, JobOutput.id > after)
            .order_by(JobOutput.id)
            .limit(max(1, min(limit, 10_000)))
        )
        return [_chunk(r) for r in rows]


def _chunk(row: JobOutput) -> OutputChunk:
    return OutputChunk(
        row.id, row.attempt, row.cell_index, row.kind, row.name, row.text, _aware(row.at) or row.at
    )


@dataclass(frozen=True)
class LiveEvent:
    """What `follow` yields: `type` is state | progress | event | output | end."""

    type: str
    data: dict[str, Any]
    id: str | None = None


def follow(
    job_id: str,
    *,
    after: int = 0,
    after_event: int = 0,
    poll: float = 0.5,
    settings: Settings | None = None,
    should_stop: Any = None,
    idle: float | None = None,
) -> Iterator[LiveEvent]:
    """Yield a job's state, progress, events and output as they happen, ending with `end` once the job is
    SUCCEEDED, FAILED or CANCELLED (its last output included). JobNotFound before anything is yielded for
    an unknown job. Output and events after ids `after` / `after_event` only; each output and event
    carries the cursor "<output id>.<event id>" to resume from (`parse_cursor`). `should_stop()` (a
    disconnected client) ends it early, and so do `idle` seconds without anything new (a stream's client
    reconnects with the cursor). A store that is briefly down is waited out."""
    settings = settings or get_settings()
    last_output, last_event = after, after_event
    quiet_since = time.monotonic()
    seen_state: str | None = None
    seen_progress: tuple[Any, ...] | None = None
    first = True
    while True:
        try:
            with session_scope(settings) as session:
                job = session.get(Job, job_id, populate_existing=True)
                if job is None:
                    raise JobNotFound(job_id)
                state = job.state
                progress = (job.cells_done or 0, job.cells_total, job.current_cell, job.attempt)
                events = list(
                    session.scalars(
                        select(JobEvent)
                        .where(JobEvent.job_id == job_id, JobEvent.id > last_event)
                        .order_by(JobEvent.id)
                    )
                )
                outputs = list(
                    session.scalars(
                        select(JobOutput)
                        .where(JobOutput.job_id == job_id, JobOutput.id > last_output)
                        .order_by(JobOutput.id)
                        .limit(1000)
                    )
                )
                error = (
                    {
                        "kind": job.error_kind,
                        "cell_index": job.error_cell_index,
                        "ename": job.error_ename,
                        "evalue": job.error_evalue,
                        "message": job.error_message,
                    }
                    if job.error_kind
                    else None
                )
                event_data = [
                    {
                        "at": (_aware(e.at) or e.at).isoformat(),
                        "from_state": e.from_state,
                        "to_state": e.to_state,
                        "kind": e.kind,
                        "message": e.message,
                        "worker_id": e.worker_id,
                    }
                    for e in events
                ]
                chunks = [_chunk(r) for r in outputs]
        except JobNotFound:
            if first:
                raise
            return  # deleted meanwhile
        except InfrastructureError as exc:
            log.warning("following job %s: store unavailable (%s); still following", job_id, exc)
            time.sleep(poll)
            continue
        first = False
        if events or chunks or state != seen_state or progress != seen_progress:
            quiet_since = time.monotonic()
        if state != seen_state:
            seen_state = state
            yield LiveEvent("state", {"state": state, "attempt": progress[3]})
        if progress != seen_progress:
            seen_progress = progress
            yield LiveEvent(
                "progress",
                {
                    "cells_done": progress[0],
                    "cells_total": progress[1],
                    "current_cell": progress[2],
                    "attempt": progress[3],
                },
            )
        for row, item in zip(events, event_data, strict=True):
            last_event = row.id
            yield LiveEvent("event", item, id=f"{last_output}.{last_event}")
        for chunk in chunks:
            last_output = chunk.id
            yield LiveEvent("output", chunk.as_dict(), id=f"{last_output}.{last_event}")
        if len(chunks) >= 1000:
            continue  # more to read at once
        if JobState(state).terminal:
            yield LiveEvent("end", {"state": state, "error": error})
            return
        if should_stop is not None and should_stop():
            return
        if idle is not None and time.monotonic() - quiet_since >= idle:
            return
        time.sleep(poll)


def parse_cursor(value: str | None) -> tuple[int, int]:
    """(output id, event id) of a cursor from `follow` ("12.7"; a bare "12" is an output id); (0, 0) when
    missing or malformed."""
    if not value:
        return 0, 0
    head, _, tail = value.partition(".")
    if not head.isdigit() or (tail and not tail.isdigit()) or len(value) > 40:
        return 0, 0
    return int(head), int(tail or 0)
