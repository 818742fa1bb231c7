"""Logs, traces and metrics of the API.

- JSON log lines on stderr; every line written while a request is handled carries its `trace_id`.
- One OpenTelemetry span per request (W3C `traceparent` honoured), its trace id returned in `X-Trace-Id`;
  spans are exported over OTLP/HTTP only when an endpoint is configured.
- Prometheus metrics in a registry per app (several apps in one test process must not collide); with
  PROMETHEUS_MULTIPROC_DIR set (uvicorn --workers N) /metrics aggregates every worker.

The request middleware is a plain ASGI callable: BaseHTTPMiddleware would cost a task per request.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from jobrunner.logs import configure_logging as _configure_logging

TRACE_HEADER = b"x-trace-id"
_propagator = TraceContextTextMapPropagator()


# -- logging ---------------------------------------------------------------------------------------------
def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Called from the app's lifespan (the entry point), never at import. The same JSON lines as the
    worker's (jobrunner.logs); uvicorn's own loggers go through them too."""
    _configure_logging(level, json_lines)
    # uvicorn's own loggers print plain text through their handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our middleware logs requests with the trace id


# -- tracing ---------------------------------------------------------------------------------------------
def make_tracer_provider(service_name: str, otlp_endpoint: str | None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


# -- metrics ---------------------------------------------------------------------------------------------
class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "serve_http_requests_total",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "serve_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.predictions = Counter(
            "serve_predictions_total",
            "Predicted rows by model version and class",
            ["model", "version", "label"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "serve_prediction_batch_rows",
            "Rows per prediction request",
            registry=r,
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000),
        )
        self.reloads = Counter("serve_model_reloads_total", "Model loads by outcome", ["outcome"], registry=r)
        self.model_version = Gauge(
            "serve_model_version_info",
            "The served model version (value 1)",
            ["model", "version", "alias"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.logged = Counter(
            "serve_prediction_log_written_total", "Prediction requests written to the database", registry=r
        )
        self.log_pending = Gauge(
            "serve_prediction_log_pending",
            "Prediction requests waiting to be written",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.feedback = Counter(
            "serve_feedback_total", "Feedback labels received", ["model", "version", "correct"], registry=r
        )
        self.accuracy = Gauge(
            "serve_live_accuracy",
            "Accuracy over the feedback window of the served version",
            ["model", "version"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.retrains = Counter(
            "serve_retrain_jobs_submitted_total",
            "Retraining jobs submitted by feedback",
            ["model", "outcome"],
            registry=r,
        )
        self.jobs = Counter(
            "serve_job_submissions_total", "Jobs submitted over REST", ["outcome"], registry=r
        )

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            # prometheus_client ships py.typed but leaves this constructor unannotated
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


# -- the request middleware ------------------------------------------------------------------------------
class ObservabilityMiddleware:
    """Span, trace-id header, request metrics and one log line per request."""

    def __init__(self, app: Any, *, tracer: trace.Tracer, metrics: Metrics, slow_ms: float = 0.0):
        self.app = app
        self.tracer = tracer
        self.metrics = metrics
        self.slow_ms = slow_ms
        self.log = logging.getLogger("serve.access")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = scope.get("headers") or []
        parent = None
        for k, v in headers:
            if k == b"traceparent":
                parent = _propagator.extract({"traceparent": v.decode("latin-1")})
                break
        method = scope["method"]
        span = self.tracer.start_span(f"{method} {scope['path']}", context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span))
        trace_id = format(span.get_span_context().trace_id, "032x")
        scope.setdefault("state", {})["trace_id"] = trace_id
        status = 500

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (TRACE_HEADER, trace_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            span.update_name(f"{method} {template}")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", template)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            if status >= 400 or elapsed * 1000 >= self.slow_ms:
                self.log.info(
                    "%s %s %d %.2fms",
                    method,
                    scope["path"],
                    status,
                    elapsed * 1000,
                    extra={
                        "http_method": method,
                        "http_route": template,
                        "http_status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            span.end()
            otel_context.detach(token)
