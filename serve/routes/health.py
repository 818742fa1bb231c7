"""Liveness, readiness and Prometheus metrics (exact paths, no redirects)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from serve.deps import ServicesDep, require_read
from serve.errors import json_response
from serve.schemas import Health, ModelIdentity, Ready
from serve.store import db

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> dict[str, Any]:
    """Liveness: the process answers (public)."""
    return {"status": "ok"}


@router.get("/ready", response_model=Ready, responses={503: {"model": Ready, "description": "Not ready"}})
async def ready(services: ServicesDep) -> Response:
    """Readiness: a model is loaded and the database answers (public); 503 otherwise."""
    problems = []
    model = services.holder.current
    if model is None:
        problems.append(f"no model loaded: {services.holder.last_error or 'loading'}")
    try:
        await run_in_threadpool(db.ping, services.engine)
        db_ok = True
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        db_ok = False
        problems.append(f"database unreachable: {type(exc).__name__}")
    body = Ready(
        status="ready" if not problems else "not ready",
        model=ModelIdentity(**model.identity) if model else None,
        database=db_ok,
        problems=problems,
    )
    return json_response(body.model_dump(mode="json"), status_code=200 if not problems else 503)


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics; needs a read key when SERVE_METRICS_AUTH is true."""
    if services.settings.metrics_auth:
        require_read(services, request.headers.get("x-api-key"))
    services.metrics.log_pending.set(services.writer.pending)
    body, content_type = services.metrics.exposition()
    return Response(body, media_type=content_type)
