"""Log lines of every long-running process (API, worker, scheduler): JSON on stderr, one line per event.

Each line carries `trace_id`/`span_id` of the current OpenTelemetry span (empty outside one) and any
`extra={...}` fields the caller passes (the worker's job lines carry `job_id`, `attempt` and `event`), so
Loki can filter a job's or a request's lines. Configured only by entry points (`configure_logging`), never
at import.
"""

from __future__ import annotations

import logging
import sys

from opentelemetry import trace

_HANDLER_MARK = "_jobrunner_handler"


class TraceIdFilter(logging.Filter):
    """Adds trace_id/span_id of the current span to every record (empty outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        return True


def configure_logging(level: str | int = "INFO", json_lines: bool = True) -> None:
    """One stderr handler on the root logger (replacing an earlier one of ours): JSON lines or plain text."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TraceIdFilter())
    if json_lines:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s")
        )
    root = logging.getLogger()
    # ours from an earlier call, and a plain stderr handler of logging.basicConfig (the CLI's), so no line
    # is written twice; other handlers (pytest's capture, files) stay
    for old in [
        h for h in root.handlers if getattr(h, _HANDLER_MARK, False) or type(h) is logging.StreamHandler
    ]:
        root.removeHandler(old)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
