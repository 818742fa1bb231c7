"""Alertmanager's webhook: alerts labelled action="retrain" submit the retraining notebook job.

Alertmanager can only send a bearer token (`http_config.authorization`), so this route accepts the write
key as `Authorization: Bearer <key>` as well as in X-API-Key. Resolved alerts and alerts without
action="retrain" are acknowledged and ignored. Each firing alert submits at most one job: the
idempotency key is the alert's fingerprint and start time, so Alertmanager's repeats and retries of the
same alert return the job already submitted.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from serve.contract import StrictJSONRoute
from serve.deps import ServicesDep, _scope, write_key_header
from serve.errors import Forbidden

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], route_class=StrictJSONRoute)
bearer = HTTPBearer(auto_error=False, description="The write API key as a bearer token (Alertmanager)")


def require_write_key_or_bearer(
    services: ServicesDep,
    key: Annotated[str | None, Depends(write_key_header)],
    token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """A key with scope write, in X-API-Key or as `Authorization: Bearer`."""
    if _scope(services, key or (token.credentials if token else None)) != "write":
        raise Forbidden("this API key has scope read; this operation needs a key with scope write")
    return "write"


# What becomes part of the job's idempotency key and submitter (database columns of 255 characters).
Text = Annotated[str, Field(max_length=100, pattern=r"^[^\x00-\x1f\x7f]*$")]


class Alert(BaseModel):
    status: str = Field(description="firing or resolved")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: Text = ""
    fingerprint: Text = ""


def _label(alert: Alert, key: str, default: str) -> str:
    """A label fit for a database column and a metric: control characters dropped, at most 100 characters."""
    value = "".join(c for c in alert.labels.get(key, default) if ord(c) >= 32 and ord(c) != 127)
    return value[:100] or default


class AlertmanagerPayload(BaseModel):
    """The body Alertmanager's webhook receiver sends (version 4)."""

    version: str = "4"
    status: str = ""
    receiver: str = ""
    groupKey: str = ""
    alerts: list[Alert] = Field(default_factory=list)


class AlertsHandled(BaseModel):
    submitted: list[str] = Field(
        description="ids of the retraining jobs submitted (or found) for firing alerts"
    )
    ignored: int = Field(description="alerts that were resolved or not labelled action=retrain")


@router.post(
    "/alertmanager",
    response_model=AlertsHandled,
    dependencies=[Depends(require_write_key_or_bearer)],
    responses={
        404: {"description": "The retraining notebook (SERVE_RETRAIN_NOTEBOOK) does not exist"},
        409: {"description": "The alert's idempotency key belongs to a job with other parameters"},
        422: {"description": "Not an Alertmanager payload, or the retraining job's parameters are invalid"},
    },
)
async def alertmanager_webhook(body: AlertmanagerPayload, services: ServicesDep) -> dict[str, Any]:
    """Submit the retraining job for each firing alert labelled action="retrain"."""
    from jobrunner.jobs import submit

    settings = services.settings
    submitted: list[str] = []
    ignored = 0
    for alert in body.alerts:
        if alert.status != "firing" or alert.labels.get("action") != "retrain":
            ignored += 1
            continue
        name = _label(alert, "alertname", "alert")
        key = f"alertmanager:{alert.fingerprint or name}:{alert.startsAt}"
        job = await run_in_threadpool(
            submit,
            settings.retrain_notebook,
            dict(settings.retrain_parameters),
            idempotency_key=key,
            submitter=f"alertmanager:{name}",
        )
        services.metrics.retrains.labels(_label(alert, "model", settings.model_name), "submitted").inc()
        submitted.append(job.id)
    return {"submitted": submitted, "ignored": ignored}
