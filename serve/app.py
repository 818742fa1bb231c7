"""The FastAPI application: `uvicorn serve.app:app` (or `create_app(settings)` in tests).

Nothing happens at import except building the route table: settings are read, logging configured, the
database migrated, the model loaded and the background threads started in the lifespan, and all of it
is undone (prediction log drained first) when the server stops.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from serve.config import KeyRing, Settings, get_settings
from serve.contract import install_contract
from serve.deps import READ, Services
from serve.docs_pages import install_offline_docs
from serve.errors import install_error_handlers
from serve.links import LinkSigner
from serve.model_loader import ModelHolder, ServingModel, silence_feature_name_warning
from serve.models import ServedModels, served_refs
from serve.observability import Metrics, ObservabilityMiddleware, configure_logging, make_tracer_provider
from serve.signature import request_components

log = logging.getLogger(__name__)
PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


def lifespan_factory(settings_factory: Callable[[], Settings]) -> Callable[[FastAPI], Any]:
    """The lifespan for an app whose settings come from `settings_factory` (called at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = settings_factory()
        services = await run_in_threadpool(start_services, app, settings)
        app.state.services = services
        try:
            yield
        finally:
            await run_in_threadpool(stop_services, services)
            app.state.tracer_provider.shutdown()  # flushes spans still waiting for export

    return lifespan


def start_services(app: FastAPI, settings: Settings) -> Services:
    import os

    from serve.feedback import FeedbackService
    from serve.lineage import LineageService
    from serve.prediction_log import PredictionWriter
    from serve.store import db

    configure_logging(settings.log_level, settings.log_json)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in JSON logs
    silence_feature_name_warning()
    metrics: Metrics = app.state.metrics
    api_keys = settings.keys()
    keyring = KeyRing(api_keys)
    if not len(keyring):
        log.warning(
            "no API keys configured (SERVE_API_KEYS / SERVE_API_KEYS_FILE): every /v1 route answers 401"
        )
    engine = db.make_engine(settings.resolved_database_url())
    db.migrate(engine)
    writer = PredictionWriter(
        engine,
        batch_size=settings.log_batch_size,
        flush_interval=settings.log_flush_interval,
        on_written=lambda n: metrics.logged.inc(n),
    )
    writer.start()
    tracking_uri = settings.resolved_tracking_uri()
    lineage = LineageService(tracking_uri, settings.project_dir(), settings.mlflow_ui_url)
    extra: dict[tuple[Any, ...], Any] = {}  # the services' per-version caches

    def enrich(model: ServingModel) -> None:
        try:
            model.lineage = lineage.for_version(model.name, model.version, model.alias)
        except Exception as exc:  # noqa: BLE001 - serve the model even when its lineage cannot be read
            log.warning("lineage of %s v%s unavailable: %s", model.name, model.version, exc)
            model.lineage = {
                "model": model.identity,
                "model_uri": f"models:/{model.name}/{model.version}",
                "run": None,
            }
        extra[("features", model.name, model.version)] = [{"name": f} for f in model.features]

    def on_reload(outcome: str, model: ServingModel | None) -> None:
        metrics.reloads.labels(outcome).inc()
        if model is not None:
            metrics.model_version.clear()
            for m in models.loaded():  # every served model (each swaps on its own alias)
                metrics.model_version.labels(m.name, m.version, m.alias).set(1)
            app.openapi_schema = None  # the request schema shows the new version's features

    refs, default = served_refs(settings.models, settings.model_name, settings.model_alias)
    models = ServedModels.build(
        refs,
        default,
        lambda ref: ModelHolder(
            ref.name,
            ref.alias,
            tracking_uri,
            settings.model_poll_interval,
            on_reload=on_reload,
            enrich=enrich,
            batch_limit=settings.batch_limit,
        ),
    )
    holder = models.default  # POST /v1/predict, GET /v1/model
    services = Services(
        settings=settings,
        keyring=keyring,
        metrics=metrics,
        engine=engine,
        writer=writer,
        feedback=FeedbackService(engine, settings, metrics),
        lineage=lineage,
        links=LinkSigner([k.key for k in api_keys], settings.link_secret, settings.link_ttl),
        models=models,
        holder=holder,
        extra=extra,
    )
    services.models.refresh_all()
    if holder.current is None and not settings.allow_start_without_model:
        raise RuntimeError(
            f"no model could be loaded and SERVE_ALLOW_START_WITHOUT_MODEL is false: {holder.last_error}"
        )
    services.models.start_polling()
    log.info(
        "API ready: default model %s@%s version %s (%d served), database %s",
        holder.name,
        holder.alias,
        holder.current.version if holder.current else None,
        len(services.models.holders),
        engine.url.render_as_string(hide_password=True),
    )
    return services


def stop_services(services: Services) -> None:
    services.models.stop()
    services.writer.close()  # drain: every accepted prediction is written before the process exits
    services.feedback.join()
    services.engine.dispose()
    log.info("API stopped; prediction log drained (%d records left)", services.writer.pending)


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        services = getattr(app.state, "services", None)
        model = services.holder.current if services is not None and services.holder is not None else None
        limit = services.settings.batch_limit if services is not None else 10_000
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        # generated per served version from the signature (pydantic create_model): serve/signature.py
        served = services.models.loaded() if services is not None and services.models is not None else []
        schemas.update(
            request_components(
                model.request if model is not None else None, [m.request for m in served], limit
            )
        )
        app.openapi_schema = schema
        return schema

    return openapi


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; `settings` (tests) or the environment, read when the server starts."""
    from serve.routes import (
        alerts,
        events,
        feedback,
        health,
        jobs,
        model,
        monitoring,
        pages,
        predict,
        runs,
        schedules,
    )

    settings_factory: Callable[[], Settings] = (lambda: settings) if settings is not None else get_settings
    app = FastAPI(
        title="notebook-jobs API",
        version="0.1.0",
        description="Predictions from the champion model with lineage, notebook jobs, feedback. "
        "Send an API key in X-API-Key (scope read, or write for changes).",
        lifespan=lifespan_factory(settings_factory),
        docs_url=None,  # served from installed assets, not a CDN: serve/docs_pages.py
        redoc_url=None,
    )
    install_offline_docs(app)
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(predict.router)
    app.include_router(model.router, dependencies=READ)
    app.include_router(pages.router)  # a read key or a signed link (serve/links.py)
    app.include_router(feedback.router)
    app.include_router(jobs.router)
    app.include_router(alerts.router)
    app.include_router(monitoring.router, dependencies=READ)
    app.include_router(schedules.router)  # read/write scopes per route, as jobs
    app.include_router(events.router)  # GET /v1/jobs/{id}/events: server-sent events (read scope)
    app.include_router(runs.router)  # verify a run on a worker, diff two runs
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    # every error status each operation can answer, with the body it sends: serve/contract.py
    install_contract(
        app,
        [
            jobs.notebook_schema_part(),
            feedback.label_schema_part(app),
            schedules.schedule_schema_part(),
            events.stream_schema_part(),
        ],
    )

    cfg = settings_factory()  # read when the app is built (for uvicorn: at start-up), never at import
    cors = cfg.cors_origins
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=["X-Trace-Id"],
        )
    provider = make_tracer_provider(cfg.service_name, cfg.otlp_endpoint)
    app.state.tracer_provider = provider
    app.add_middleware(
        ObservabilityMiddleware,
        tracer=provider.get_tracer("serve"),
        metrics=app.state.metrics,
        slow_ms=cfg.access_log_slow_ms,
    )
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn serve.app:app` asks for `app`; build it on first access, not when serve.app is imported.
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
