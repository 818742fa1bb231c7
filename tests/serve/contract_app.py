"""The app the contract target serves (tests/serve/contract_support.py): serve.app's app, with one change.

GET /v1/jobs/{job_id}/events holds a stream with nothing new open for `serve.routes.events.IDLE_S` (15 s)
before closing it without `end`. The target has no worker, so every job schemathesis follows stays QUEUED
and every such case waited those 15 s: about 12 cases and 3 of the run's 4 minutes, with both schemathesis
and uvicorn idle. Here an idle stream closes after CONTRACT_EVENTS_IDLE_S seconds (default 1): the same
code path (the stream, its first events, the idle close), the same cases and checks, without the wait.
"""

from __future__ import annotations

import os

import serve.routes.events

serve.routes.events.IDLE_S = float(os.environ.get("CONTRACT_EVENTS_IDLE_S", "1"))

from serve.app import app  # noqa: E402 - after the change, so the app is built with it in place

__all__ = ["app"]
