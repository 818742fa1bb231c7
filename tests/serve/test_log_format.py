"""The worker and the API write the same JSON log lines: one formatter (jobrunner.logs), configured by
JOBRUNNER_LOG_JSON for the worker and scheduler and SERVE_LOG_JSON for the API."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def _line(configure, capsys: pytest.CaptureFixture[str], **kwargs) -> str:
    from opentelemetry.sdk.trace import TracerProvider

    configure("INFO", **kwargs)
    with TracerProvider().get_tracer("test").start_as_current_span("job"):
        logging.getLogger("jobrunner.worker.loop").info("job taken", extra={"job_id": "j1", "attempt": 1})
    (line,) = capsys.readouterr().err.splitlines()
    return line


def test_worker_and_api_log_the_same_json_lines(capsys, root_logging):
    from jobrunner.logs import configure_logging as worker_logging
    from serve.observability import configure_logging as api_logging

    worker = json.loads(_line(worker_logging, capsys, json_lines=True))
    api = json.loads(_line(api_logging, capsys, json_lines=True))
    assert set(worker) == set(api) >= {"time", "level", "logger", "message", "trace_id", "span_id", "job_id"}
    assert worker["level"] == "INFO" and worker["job_id"] == "j1" and worker["attempt"] == 1
    assert len(worker["trace_id"]) == 32 and worker["trace_id"] != api["trace_id"]
    # JOBRUNNER_LOG_JSON=false: plain text with the trace id
    text = _line(worker_logging, capsys, json_lines=False)
    assert not text.startswith("{") and "INFO jobrunner.worker.loop [" in text and text.endswith("job taken")
