"""The API's own errors and the ONE place where every error becomes an HTTP status.

Errors a user can cause answer 4xx with what was wrong and what to do; a missing dependency (model not
loaded, database down) answers 503; only a genuine bug answers 500, with the trace id to look it up.
Every error body, whatever raised it (our errors, jobrunner's, request validation, Starlette's 404/405),
is an `ErrorBody`: `{"detail": <message>, "problems": [...]?, "trace_id": ...}`, the schema the OpenAPI
document names for every error status (serve/contract.py). Messages never echo long input whole and show
paths relative to the project, not the server's folders.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)
MAX_ECHO = 80  # the longest run of non-blank characters an error message repeats from the input
MAX_DETAIL = 2000  # characters of one message
_LONG_RUN = re.compile(r"\S{" + str(MAX_ECHO + 1) + ",}")


class ErrorProblem(BaseModel):
    """One thing wrong with a request; which of the optional fields are set depends on what was checked."""

    model_config = ConfigDict(extra="allow")

    problem: str = Field(description="Kind: missing, type, unknown, duplicate, or a request-validation type")
    message: str
    location: str | None = Field(default=None, description="Request validation: e.g. body.notebook")
    name: str | None = Field(default=None, description="Job parameters: the parameter")
    row: int | None = Field(default=None, description="Predictions: the row")
    feature: str | None = Field(default=None, description="Predictions: the feature")


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str = Field(description="What was wrong and what to do")
    problems: list[ErrorProblem] | None = Field(
        default=None, description="Each problem, when there are several"
    )
    trace_id: str | None = Field(default=None, description="Find the request's log lines and spans by it")


def clip(text: str) -> str:
    """`text` with every run of more than MAX_ECHO non-blank characters (echoed input) shortened."""

    def shorten(m: re.Match[str]) -> str:
        run = m.group(0)
        return f"{run[:60]}...[{len(run) - 70} characters cut]...{run[-10:]}"

    text = _LONG_RUN.sub(shorten, text)
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 30] + f"... [{len(text)} characters]"


def _server_roots() -> list[tuple[str, str]]:
    """(server folder, what to show instead), longest first: the project becomes relative paths."""
    from jobrunner.config import get_settings

    roots: list[tuple[str, str]] = []
    try:
        project = str(get_settings().project_dir.resolve())
        roots += [(project + "/", ""), (project, "the project folder")]
    except Exception:  # settings that cannot be read must not break an error response
        log.debug("settings unreadable: paths in error messages keep the project folder", exc_info=True)
    for folder in {sys.prefix, sys.base_prefix, str(Path.home())}:
        if len(folder) > 1:
            roots.append((folder.rstrip("/") + "/", "<server>/"))
    return sorted(roots, key=lambda r: len(r[0]), reverse=True)


def public_message(text: str) -> str:
    """An error message fit for a client: project-relative paths, no server folders, input clipped."""
    for folder, shown in _server_roots():
        text = text.replace(folder, shown)
    return clip(text)


def invalid_json_message(exc: json.JSONDecodeError, body: bytes | str) -> str:
    """Why `body` is not JSON, naming a bare NaN/Infinity literal (valid in Python and JavaScript only)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    start = max(exc.pos - 1, 0)
    for literal in ("-Infinity", "Infinity", "NaN"):
        at = text.find(literal, start, exc.pos + len(literal))
        if at != -1:
            column = at - text.rfind("\n", 0, at)
            return (
                f"the body is not valid JSON: {literal} at line {exc.lineno} column {column} is not a JSON "
                "number (JSON has no NaN or Infinity); send a finite number, or null where a value may be "
                "missing"
            )
    return f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"


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
    """The status of each jobrunner (and SQLAlchemy) exception class an endpoint can raise."""
    from sqlalchemy.exc import DataError, IntegrityError

    from jobrunner import errors as jr
    from jobrunner.provenance.diff import RunNotFound
    from jobrunner.provenance.verify import CannotVerify

    return {
        jr.NotebookNotFound: 404,
        jr.ParameterError: 422,
        jr.InvalidNotebook: 422,
        jr.InvalidTimeout: 422,
        jr.ConfigurationError: 503,
        jr.InfrastructureError: 503,
        jr.JobNotFound: 404,
        jr.InvalidTransition: 409,
        jr.IdempotencyConflict: 409,
        jr.BrokerUnavailable: 503,
        jr.StoreUnavailable: 503,
        RunNotFound: 404,
        CannotVerify: 409,  # a run jobrunner did not record: nothing to re-execute
        # A unique key taken by a concurrent request (two submissions with one idempotency key): retry.
        IntegrityError: 409,
        # A value the database column cannot hold (too long, out of range): the input, not the server.
        DataError: 422,
    }


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


def _message(exc: BaseException, status: int) -> str:
    from sqlalchemy.exc import DataError, IntegrityError

    if status >= 500 and status != 503:
        return "internal error"
    if isinstance(exc, IntegrityError):
        return "the request conflicts with a concurrent change of the same item; send it again"
    if isinstance(exc, DataError):
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return f"a value in the request does not fit: {reason}"
    return str(exc)


def _public_problem(p: Any) -> dict[str, Any]:
    item = dict(p.as_dict() if hasattr(p, "as_dict") else p)
    return {k: public_message(v) if isinstance(v, str) else v for k, v in item.items()}


def error_body(detail: str, request: Request, problems: list[Any] | None = None) -> dict[str, Any]:
    """An ErrorBody as a dict: the message made public, the trace id of the request."""
    body: dict[str, Any] = {"detail": public_message(detail)}
    if problems:
        body["problems"] = [_public_problem(p) for p in problems]
    trace_id = getattr(request.state, "trace_id", None)
    if trace_id:
        body["trace_id"] = trace_id
    return body


def _body(exc: BaseException, status: int, request: Request) -> dict[str, Any]:
    return error_body(_message(exc, status), request, getattr(exc, "problems", None))


def allowed_methods(schema: dict[str, Any], scope: Mapping[str, Any]) -> list[str]:
    """The methods the OpenAPI document lists for the request's path (HEAD with GET), for `Allow`."""
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    methods: set[str] = set()
    for template, item in schema.get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            methods.update(m.upper() for m in item if m in {"get", "post", "put", "patch", "delete"})
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


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
        problems = []
        for e in exc.errors():
            loc, message = e.get("loc", ()), str(e.get("msg") or "invalid value")
            if e.get("type") == "json_invalid":  # FastAPI's "JSON decode error": the parser's own message
                loc, message = ("body",), str((e.get("ctx") or {}).get("error") or message)
            problems.append(
                {
                    "location": ".".join(str(p) for p in loc),
                    "problem": str(e.get("type") or "invalid"),
                    "message": message,
                }
            )
        if len(problems) == 1:
            detail = f"invalid request: {problems[0]['location']}: {problems[0]['message']}"
        else:
            detail = "invalid request: " + ", ".join(p["location"] for p in problems)
        return json_response(error_body(detail, request, problems), status_code=422)

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette lists the methods of the first route that matched the path only; a path served
            # by several routes (GET and POST /v1/jobs) would advertise just one of them.
            allowed = allowed_methods(request.app.openapi(), request.scope)
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        return json_response(error_body(detail, request), status_code=exc.status_code, headers=headers)

    app.add_exception_handler(RequestValidationError, validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    from sqlalchemy.exc import SQLAlchemyError

    from jobrunner.errors import JobrunnerError

    # Known error families go to the exception middleware (answered, not re-raised); a bare Exception
    # handler is Starlette's server-error hook: it answers 500 with the trace id and the bug is logged.
    for cls in (ServeError, JobrunnerError, SQLAlchemyError, *table):
        app.add_exception_handler(cls, handle)
    app.add_exception_handler(Exception, handle)
