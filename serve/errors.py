"""The API's own errors and the ONE place where every error becomes an HTTP status.

Errors a user can cause answer 4xx with what was wrong and what to do; a missing dependency (model not
loaded, database down) answers 503; only a genuine bug answers 500, with the trace id to look it up.
Error bodies are `{"detail": <message>, "problems": [...]?, "trace_id": ...}`.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


def json_response(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson (datetimes, numpy values)."""
    return Response(
        orjson.dumps(body, default=str, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


class ServeError(Exception):
    """Root of the errors the API raises on purpose."""

    status = 400

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems


class NotFound(ServeError):
    status = 404


class Conflict(ServeError):
    status = 409


class Unprocessable(ServeError):
    status = 422


class Unavailable(ServeError):
    status = 503


class ModelNotReady(Unavailable):
    """No model is loaded (yet); /ready says so too."""


class PredictionNotFound(NotFound):
    pass


class FeatureError(Unprocessable):
    """Rows do not match the model's signature; `problems` names each row and feature."""

    def __init__(self, problems: list[dict[str, Any]], features: tuple[str, ...]):
        named = sorted({p["feature"] for p in problems if p.get("feature")})
        message = (
            "rows do not match the model's input signature"
            + (f" (features: {', '.join(named)})" if named else "")
            + "; see GET /v1/model for the expected features"
        )
        super().__init__(message, problems)
        self.features = features


class Unauthorized(ServeError):
    status = 401


class Forbidden(ServeError):
    status = 403


def _jobrunner_statuses() -> dict[type[BaseException], int]:
    """jobrunner's exception classes by status; the jobs module's classes only where it exists."""
    from jobrunner import errors as jr

    table: dict[type[BaseException], int] = {
        jr.NotebookNotFound: 404,
        jr.ParameterError: 422,
        jr.InvalidNotebook: 422,
        jr.InvalidTimeout: 422,
        jr.ConfigurationError: 503,
        jr.InfrastructureError: 503,
    }
    for module_name in ("jobrunner.errors", "jobrunner.jobs", "jobrunner.store", "jobrunner.states"):
        try:
            module = __import__(module_name, fromlist=["_"])
        except ImportError:
            continue
        for attr, status in (
            ("JobNotFound", 404),
            ("InvalidTransition", 409),
            ("IdempotencyConflict", 409),
            ("BrokerUnavailable", 503),
            ("StoreUnavailable", 503),
        ):
            cls = getattr(module, attr, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                table.setdefault(cls, status)
    return table


def status_for(exc: BaseException, table: dict[type[BaseException], int]) -> int:
    if isinstance(exc, ServeError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    try:
        from sqlalchemy.exc import DBAPIError, OperationalError

        if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
            return 503
    except ImportError:  # pragma: no cover
        pass
    from jobrunner.errors import JobrunnerError

    if isinstance(exc, JobrunnerError):
        return 400
    return 500


def _body(exc: BaseException, status: int, request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"detail": str(exc) if status < 500 or status == 503 else "internal error"}
    problems = getattr(exc, "problems", None)
    if problems:
        body["problems"] = [p.as_dict() if hasattr(p, "as_dict") else p for p in problems]
    trace_id = getattr(request.state, "trace_id", None)
    if trace_id:
        body["trace_id"] = trace_id
    return body


def install_error_handlers(app: FastAPI) -> None:
    table = _jobrunner_statuses()

    async def handle(request: Request, exc: Exception) -> Response:
        status = status_for(exc, table)
        if status >= 500 and status != 503:
            log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        elif status == 503:
            log.warning("unavailable: %s", exc)
        headers = {"WWW-Authenticate": "ApiKey"} if status == 401 else None
        return json_response(_body(exc, status, request), status_code=status, headers=headers)

    async def validation(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {
                "location": ".".join(str(p) for p in e.get("loc", ())),
                "problem": e.get("type"),
                "message": e.get("msg"),
            }
            for e in exc.errors()
        ]
        where = ", ".join(p["location"] for p in problems)
        body = {"detail": f"invalid request: {where}", "problems": problems}
        trace_id = getattr(request.state, "trace_id", None)
        if trace_id:
            body["trace_id"] = trace_id
        return json_response(body, status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers) if exc.headers else None
        return json_response({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    from sqlalchemy.exc import SQLAlchemyError

    from jobrunner.errors import JobrunnerError

    # Known error families go to the exception middleware (answered, not re-raised); a bare Exception
    # handler is Starlette's server-error hook: it answers 500 with the trace id and the bug is logged.
    for cls in (ServeError, JobrunnerError, SQLAlchemyError, *table):
        app.add_exception_handler(cls, handle)
    app.add_exception_handler(Exception, handle)
