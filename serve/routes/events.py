"""GET /v1/jobs/{job_id}/events: a job's progress, events and live cell output as server-sent events.

A thin shell over `jobrunner.store.live.follow` (the same stream as `jobrunner logs --follow`), run in the
thread pool because it polls the job store; the stream ends with an `end` event once the job is
SUCCEEDED, FAILED or CANCELLED. Output and event events carry a cursor as the SSE `id`, so a client that
reconnects with `Last-Event-ID` (browsers' EventSource do) gets only what it missed (`?after=` an
output id does the same by hand). A stream with nothing new for SERVE_EVENTS_IDLE_S seconds (15; a
queued job, a long silent cell) is closed without `end`, with `retry:` telling EventSource to reconnect
after a second: no connection is held open indefinitely, and proxies that cut long requests lose
nothing. An unknown job is a 404 before the stream starts.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from serve.contract import SchemaPart
from serve.deps import READ, SettingsDep
from serve.schemas import JOB_ID_PATTERN

router = APIRouter(prefix="/v1", tags=["jobs"])
JobId = Annotated[str, Path(pattern=JOB_ID_PATTERN, description="A job id, as POST /v1/jobs returns it")]
POLL_S = 0.5
RETRY_MS = 1000


class JobStreamEvent(BaseModel):
    """One server-sent event of GET /v1/jobs/{job_id}/events: `event:` is the type, `data:` this JSON."""

    type: Literal["state", "progress", "event", "output", "end"] = Field(
        description="state: the job's state changed; progress: cells done of total; event: a job event (a "
        "state change, a retry, a webhook delivery: kind notify); output: cell output (stream text, an "
        "error as `ename: evalue`, a note for rich output or for output cut at JOBRUNNER_LIVE_OUTPUT_MAX_"
        "BYTES); end: the job finished (state, error), the last event of the stream"
    )
    state: str | None = None
    attempt: int | None = None
    cells_done: int | None = None
    cells_total: int | None = None
    current_cell: int | None = None
    id: int | None = Field(default=None, description="output: its id (also the SSE id)")
    cell_index: int | None = Field(
        default=None, description="output: the cell, as in the notebook as written"
    )
    kind: str | None = Field(
        default=None,
        description="output: stream | error | result | rich | note; "
        "event: null (state change) | notify | output",
    )
    name: str | None = Field(default=None, description="output: stdout | stderr for stream text")
    text: str | None = None
    message: str | None = None
    error: dict[str, Any] | None = None
    at: str | None = Field(default=None, description="output, event: when (ISO 8601, UTC)")
    from_state: str | None = None
    to_state: str | None = None
    worker_id: str | None = None


EVENT_TYPES = ["state", "progress", "event", "output", "end"]
# One server-sent event (OpenAPI 3.1: the `schema` of text/event-stream describes each event): its
# `event:` type, `data:` a JobStreamEvent as JSON text, `id:` the output id of output events.
SERVER_SENT_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": EVENT_TYPES},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/JobStreamEvent"},
        },
        "id": {
            "type": "string",
            "description": "output and event events: the cursor to resume from (Last-Event-ID)",
        },
        "retry": {"type": "integer", "description": "milliseconds before a client reconnects"},
    },
}


STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A text/event-stream of JobStreamEvent objects, ending with an `end` event",
        "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/JobServerSentEvent"}}},
    },
    404: {"description": "No job has this id"},
}


@router.get(
    "/jobs/{job_id}/events",
    response_class=EventSourceResponse,
    dependencies=READ,
    responses=STREAM_DOC,
    openapi_extra={"x-stream-item": "JobStreamEvent"},
)
async def job_events(
    job_id: JobId,
    request: Request,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Only output after this output id")] = 0,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=40, description="Set by EventSource on reconnect"),
    ] = None,
) -> EventSourceResponse:
    """Follow a job: state, progress, events and live cell output as server-sent events until it ends
    (a stream idle for SERVE_EVENTS_IDLE_S, 15 s, closes; Last-Event-ID resumes)."""
    from jobrunner import jobs
    from jobrunner.store.live import follow, parse_cursor

    await run_in_threadpool(jobs.get_job, job_id)  # JobNotFound: a 404 before any byte is streamed
    output_id, event_id = parse_cursor(last_event_id)
    after = max(after, output_id)
    disconnected = {"yes": False}

    async def stream() -> Any:
        try:
            items = follow(
                job_id,
                after=after,
                after_event=event_id,
                poll=POLL_S,
                idle=settings.events_idle_s,
                should_stop=lambda: disconnected["yes"],
            )
            first = True
            async for item in iterate_in_threadpool(items):
                yield ServerSentEvent(
                    data=json.dumps({"type": item.type, **item.data}, default=str),
                    event=item.type,
                    id=item.id,
                    retry=RETRY_MS if first else None,
                )
                first = False
                if await request.is_disconnected():
                    return
        finally:
            disconnected["yes"] = True

    return EventSourceResponse(stream(), ping=15)


def _add_stream_event(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["JobStreamEvent"] = JobStreamEvent.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components["JobServerSentEvent"] = SERVER_SENT_EVENT
    # POST /v1/jobs: kernel_name is one of the installed kernels (as for schedules), in every variant of
    # the per-notebook body that serve/routes/jobs.py builds before this part runs
    from jobrunner.execution.kernels import installed_kernel_names

    kernels = {
        "anyOf": [{"type": "string", "enum": installed_kernel_names()}, {"type": "null"}],
        "default": None,
        "description": "An installed kernel (default: the workers' kernel)",
    }
    body = components.get("JobCreateIn", {})
    for variant in body.get("oneOf", [body]):
        if "kernel_name" in variant.get("properties", {}):
            variant["properties"]["kernel_name"] = kernels


def _version() -> Any:
    from jobrunner.execution.kernels import installed_kernel_names

    return tuple(installed_kernel_names())


def stream_schema_part() -> SchemaPart:
    """The stream's event schemas in the OpenAPI components (no response_model, so FastAPI leaves them
    out), and the installed kernels as the enum of POST /v1/jobs' kernel_name."""
    return SchemaPart(apply=_add_stream_event, version=_version)
