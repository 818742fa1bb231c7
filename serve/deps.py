"""FastAPI dependencies as Annotated aliases: the app's services, settings, model and API-key scopes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.security import APIKeyHeader

from serve.config import KeyRing, Settings
from serve.errors import Forbidden, Unauthorized
from serve.links import LinkSigner, sign_notebook_links
from serve.model_loader import ModelHolder, ServingModel
from serve.observability import Metrics

if TYPE_CHECKING:  # the services' modules import MLflow, SQLAlchemy's ORM...: the app's lifespan loads them
    from sqlalchemy import Engine

    from serve.feedback import FeedbackService
    from serve.lineage import LineageService
    from serve.models import ServedModels
    from serve.prediction_log import PredictionWriter


@dataclass
class Services:
    """Everything the lifespan builds; one per app, reached through `request.app.state.services`."""

    settings: Settings
    keyring: KeyRing
    metrics: Metrics
    engine: Engine  # the prediction store (serve/store/)
    writer: PredictionWriter  # stores predictions in the background
    feedback: FeedbackService
    lineage: LineageService
    links: LinkSigner  # signed executed-notebook links for browsers
    models: ServedModels  # every served model by name
    holder: ModelHolder  # the default model's (POST /v1/predict, GET /v1/model)
    extra: dict[tuple[Any, ...], Any] = field(default_factory=dict)  # per-version caches keyed by tuples


def get_services(request: Request) -> Services:
    """The app's services (Starlette's `app.state` holds Any: checked here, once per request)."""
    services = getattr(request.app.state, "services", None)
    if not isinstance(services, Services):
        raise RuntimeError("the app's services are not started: its lifespan has not run")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_model(services: ServicesDep) -> ServingModel:
    return services.holder.get()


ModelDep = Annotated[ServingModel, Depends(get_model)]

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key with scope read or write"
)
# The same header, as its own security scheme: the OpenAPI document shows which operations need the write
# scope (and so can answer 403; serve/contract.py documents that from the scheme's name).
write_key_header = APIKeyHeader(
    name="X-API-Key", scheme_name="WriteKey", auto_error=False, description="An API key with scope write"
)


def _scope(services: Services, key: str | None) -> str:
    if not key:
        raise Unauthorized("an API key is required: send it in the X-API-Key header")
    scope = services.keyring.scope_of(key)
    if scope is None:
        hint = (
            "" if len(services.keyring) else " (this server has no API keys configured: set SERVE_API_KEYS)"
        )
        raise Unauthorized("the API key in X-API-Key is not valid" + hint)
    return scope


def require_read(services: ServicesDep, key: Annotated[str | None, Depends(api_key_header)]) -> str:
    """Any valid key (read or write)."""
    return _scope(services, key)


def require_write(services: ServicesDep, key: Annotated[str | None, Depends(write_key_header)]) -> str:
    """A key with scope write."""
    if _scope(services, key) != "write":
        raise Forbidden("this API key has scope read; this operation needs a key with scope write")
    return "write"


def require_read_or_link(
    request: Request,
    services: ServicesDep,
    key: Annotated[str | None, Depends(api_key_header)],
    expires: Annotated[
        int | None, Query(ge=0, le=10**11, description="Expiry of a signed link (Unix seconds)")
    ] = None,
    signature: Annotated[
        str | None, Query(pattern=r"^[0-9a-f]{64}$", description="Signature of a signed link")
    ] = None,
) -> str:
    """A read key, or a valid signed link to this very page (what a browser opening a link has)."""
    if key or (expires is None and signature is None):
        if not key:
            raise Unauthorized(
                "an API key (X-API-Key header) or a signed link is required: the lineage answers of "
                "GET /v1/model carry signed links to executed notebooks that open in a browser"
            )
        return _scope(services, key)
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    why = services.links.check(path, None if expires is None else str(expires), signature)
    if why:
        raise Unauthorized(f"this link is not valid: {why}")
    return "link"


SignLinks = Callable[[dict[str, Any]], dict[str, Any]]


def get_link_signer(request: Request, services: ServicesDep) -> SignLinks:
    """Signs the notebook links in an answer for this request (its root path, e.g. /api behind nginx)."""
    root = request.scope.get("root_path", "")

    def sign(answer: dict[str, Any]) -> dict[str, Any]:
        signed: dict[str, Any] = sign_notebook_links(answer, services.links, root)  # a dict for a dict
        return signed

    return sign


SignLinksDep = Annotated[SignLinks, Depends(get_link_signer)]
ReadOrLinkDep = Annotated[str, Depends(require_read_or_link)]
ReadKeyDep = Annotated[str, Depends(require_read)]
WriteKeyDep = Annotated[str, Depends(require_write)]
READ = [Depends(require_read)]
WRITE = [Depends(require_write)]
