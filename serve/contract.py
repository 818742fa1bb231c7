"""The API's OpenAPI contract: what every operation can answer, and request bodies parsed as JSON really is.

FastAPI documents a route's success response and, for routes with parameters, a 422 with its own
`HTTPValidationError` body. The API answers more than that (serve/errors.py maps every error to a
status in one place), so `install_contract` finishes the generated document once per build, for every
route including ones added later, from what the document itself says:

- every error response has the body the API really sends, `ErrorBody` (`detail` is a string);
- an operation with a security requirement can answer 401; one that needs the write scope (security
  scheme `WriteKey`) also 403; one with parameters or a body 422; one with path parameters 404; every
  `/v1` operation 503 (a database, the job store or the model is not available);
- parts of the document built from data that changes while the server runs (`SchemaPart`: the job
  request body, whose parameters are each notebook's parameters cell) are rebuilt when that data changes.

`StrictJSONRoute` parses request bodies as RFC 8259 JSON: Python's `json` module, which FastAPI uses,
accepts the bare literals NaN and Infinity that no JSON client can rely on (and PostgreSQL's JSON type
refuses), and integers beyond 4300 digits make it raise a ValueError that FastAPI answers with a vague 400.
Here each is a 422 that names the problem.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from serve.errors import ErrorBody, invalid_json_message

log = logging.getLogger(__name__)
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
WRITE_SCHEME = "WriteKey"  # the security scheme of operations that need a key with scope write
GENERIC = {
    "401": "No API key, or not a valid one (X-API-Key)",
    "403": "The API key has scope read; this operation needs a key with scope write",
    "404": "Nothing has this id",
    "422": "The request does not fit this schema; `problems` names each field and what was wrong",
    "503": "A service this operation needs is unavailable (database, job store, or no model loaded yet)",
}


# -- request bodies -----------------------------------------------------------------------------------
class _NotAJSONNumber(ValueError):
    pass


def _refuse_constant(literal: str) -> Any:
    raise _NotAJSONNumber(literal)


def loads_strict(body: bytes) -> Any:
    """`body` as JSON; json.JSONDecodeError (FastAPI answers 422 with its message) for anything else."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError(
            f"the body is not UTF-8 encoded text (byte {exc.start} cannot be decoded); send UTF-8 JSON",
            "",
            0,
        ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except _NotAJSONNumber:
        try:
            orjson.loads(body)  # stops where the literal starts: the position for the message
        except orjson.JSONDecodeError as exc:
            raise json.JSONDecodeError(invalid_json_message(exc, text), text, exc.pos) from None
        raise json.JSONDecodeError(invalid_json_message(json.JSONDecodeError("", text, 0), text), text, 0)
    except json.JSONDecodeError as exc:
        message = f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        raise json.JSONDecodeError(message, text, exc.pos) from None
    except RecursionError:
        raise json.JSONDecodeError("the body nests arrays or objects too deeply", text, 0) from None
    except ValueError:  # int() refuses more than sys.get_int_max_str_digits() digits
        raise json.JSONDecodeError(
            "a number in the body has more than 4300 digits; send shorter numbers (or the value as a string)",
            text,
            0,
        ) from None


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads_strict(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A route whose JSON body is parsed by `loads_strict` (FastAPI's custom request class pattern)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict


# -- the OpenAPI document -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SchemaPart:
    """A part of the document built from data that changes while the server runs (files on disk)."""

    apply: Callable[[dict[str, Any]], None]  # edits the document in place
    version: Callable[[], Hashable]  # changes whenever `apply` would build something else


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": dict(ERROR_REF)}}


def _documents_own_body(response: dict[str, Any]) -> bool:
    schema = (response.get("content") or {}).get("application/json", {}).get("schema")
    return bool(schema) and schema != {"$ref": "#/components/schemas/HTTPValidationError"}


def _finish_operation(path: str, method: str, op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    wanted: set[str] = set()
    security = op.get("security") or []
    if security:
        wanted.add("401")
        if any(WRITE_SCHEME in requirement for requirement in security):
            wanted.add("403")
    params = op.get("parameters") or []
    if params or "requestBody" in op:
        wanted.add("422")
    if any(p.get("in") == "path" for p in params):
        wanted.add("404")
    if path.startswith("/v1/"):
        wanted.add("503")
    for status in wanted:
        responses.setdefault(status, {"description": GENERIC[status]})
    for status, response in responses.items():
        if not status.isdigit() or int(status) < 400:
            continue
        if status == "422" and response.get("description") == "Validation Error":
            response["description"] = GENERIC["422"]
        if not _documents_own_body(response):
            response["content"] = _error_content()


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Every error response of every operation documented with the body the API sends."""
    for path, item in schema.get("paths", {}).items():
        for method, op in item.items():
            if isinstance(op, dict) and "responses" in op:
                _finish_operation(path, method, op)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    error_schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorBody"] = error_schema
    text = json.dumps(schema)
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in text:
            components.pop(unused, None)
    return schema


def install_contract(app: FastAPI, parts: Iterable[SchemaPart] = ()) -> None:
    """Wrap `app.openapi` (call after setting it): the finished document, rebuilt when a part's data changed.

    The app's own builder caches its document in `app.openapi_schema` and clears it when the served model
    changes; a document this wrapper did not finish, or one built for other part versions, is rebuilt.
    """
    build = app.openapi
    parts = tuple(parts)
    finished: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        versions = tuple(part.version() for part in parts)
        current = app.openapi_schema
        if current is not None and current is finished.get("schema") and finished.get("versions") == versions:
            return current  # type: ignore[return-value]
        app.openapi_schema = None
        schema = build()
        for part in parts:
            part.apply(schema)
        finish_openapi(schema)
        app.openapi_schema = schema
        finished.update(schema=schema, versions=versions)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
