"""GET /v1/jobs/{job_id}/events: a job's progress, events and live cell output as server-sent events.

A thin shell over `jobrunner.live.follow` (the same stream as `jobrunner logs --follow`), run in the
thread pool because it polls the job store; the stream ends with an `end` event once the job is
SUCCEEDED, FAILED or CANCELLED. Output events carry their output id as the SSE `id`, so a client that
reconnects with `Last-Event-ID` (browsers' EventSource do) or `?after=` gets only what it missed. An
unknown job is a 404 before the stream starts. Idle streams get a comment line every 15 s (proxies).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from serve.contract import SchemaPart
from serve.deps import READ
from serve.schemas import JOB_ID_PATTERN

router = APIRouter(prefix="/v1", tags=["jobs"])
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A job id, as POST /v1/jobs returns it")]
POLL_S = 0.5


class JobStreamEvent(BaseModel):
    """One server-sent event of GET /v1/jobs/{job_id}/events: `event:` is the type, `data:` this JSON."""

    type: Literal["state", "progress", "event", "output", "end"] = Field(
        description="state: the job's state changed; progress: cells done of total; event: a job event (a "
        "state change, a retry, a webhook delivery: kind notify); output: cell output (stream text, an "
        "error as `ename: evalue`, a note for rich output or for output cut at JOBRUNNER_LIVE_OUTPUT_MAX_"
        "BYTES); end: the job finished (state, error), the last event of the stream")
    state: str | None = None
    attempt: int | None = None
    cells_done: int | None = None
    cells_total: int | None = None
    current_cell: int | None = None
    id: int | None = Field(default=None, description="output: its id (also the SSE id)")
    cell_index: int | None = Field(default=None, description="output: the cell, as in the notebook as written")
    kind: str | None = Field(default=None, description="output: stream | error | result | rich | note; "
                                                       "event: null (state change) | notify | output")
    name: str | None = Field(default=None, description="output: stdout | stderr for stream text")
    text: str | None = None
    message: str | None = None
    error: dict[str, Any] | None = None


STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A text/event-stream of JobStreamEvent objects, ending with an `end` event",
        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/JobStreamEvent"}}},
    },
    404: {"description": "No job has this id"},
}


@router.get("/jobs/{job_id}/events", response_class=EventSourceResponse, dependencies=READ,
            responses=STREAM_DOC, openapi_extra={"x-stream-item": "JobStreamEvent"})
async def job_events(
    job_id: JobId,
    request: Request,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only output after this output id")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=32,
                                                description="Set by EventSource on reconnect")] = None,
) -> EventSourceResponse:
    """Follow a job: state, progress, events and live cell output as server-sent events until it ends."""
    from jobrunner import jobs
    from jobrunner.live import follow

    await run_in_threadpool(jobs.get_job, job_id)  # JobNotFound: a 404 before any byte is streamed
    if last_event_id and last_event_id.isdigit():
        after = max(after, int(last_event_id))
    disconnected = {"yes": False}

    async def stream() -> Any:
        try:
            items = follow(job_id, after=after, poll=POLL_S, should_stop=lambda: disconnected["yes"])
            async for item in iterate_in_threadpool(items):
                yield ServerSentEvent(data=json.dumps({"type": item.type, **item.data}, default=str),
                                      event=item.type, id=item.id)
                if await request.is_disconnected():
                    return
        finally:
            disconnected["yes"] = True

    return EventSourceResponse(stream(), ping=15)


def _add_stream_event(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["JobStreamEvent"] = JobStreamEvent.model_json_schema(ref_template="#/components/schemas/{model}")


def stream_schema_part() -> SchemaPart:
    """JobStreamEvent in the OpenAPI components (it is no response_model, so FastAPI leaves it out)."""
    return SchemaPart(apply=_add_stream_event, version=lambda: 1)
