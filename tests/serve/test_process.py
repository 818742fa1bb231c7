"""A real uvicorn process: the alias moves under load, shutdown drains the prediction log, logs carry trace
ids."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.serve.conftest import READ, READ_KEY, SWAP_MODEL, WRITE_KEY, start_server

pytestmark = pytest.mark.slow


def test_alias_move_under_load_fails_no_request_and_switches_version(model_store, tmp_path):
    from mlflow.tracking import MlflowClient

    from serve.store import db, models

    v1, v2 = model_store.swap_versions
    client = MlflowClient(model_store.tracking_uri)
    client.set_registered_model_alias(SWAP_MODEL, "champion", v1)
    server = start_server(
        model_store,
        tmp_path,
        {
            "SERVE_MODEL_NAME": SWAP_MODEL,
            "SERVE_MODEL_POLL_INTERVAL": "0.3",
            # a long flush interval leaves records queued at shutdown: the drain must write them
            "SERVE_LOG_FLUSH_INTERVAL": "30",
            "SERVE_LOG_BATCH_SIZE": "100000",
        },
    )
    results: list[tuple[int, int, str | None, str]] = []  # (thread, status, version, trace id)
    errors: list[BaseException] = []
    stop = threading.Event()
    rows = {"rows": model_store.rows[:5]}
    check_tracing_and_metrics_path(server)

    def load(n: int) -> None:
        with httpx.Client(base_url=server.url, headers=READ, timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/predict", json=rows)
                except httpx.HTTPError as exc:  # a dropped connection is a failed request too
                    errors.append(exc)
                    continue
                version = r.json()["model"]["version"] if r.status_code == 200 else None
                results.append((n, r.status_code, version, r.headers.get("x-trace-id", "")))

    try:
        threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        client.set_registered_model_alias(SWAP_MODEL, "champion", v2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(v == v2 for _, _, v, _ in results[-20:]):
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert errors == []
        statuses = {s for _, s, _, _ in results}
        assert statuses == {200}, [r for r in results if r[1] != 200][:5]
        versions = [v for _, _, v, _ in results]
        assert versions[0] == v1 and versions[-1] == v2, (versions[0], versions[-1])
        for n in range(8):  # each client sees the old version, then only the new one
            mine = [v for t, _, v, _ in results if t == n]
            assert mine == sorted(mine, key=lambda v: v != v1), f"thread {n} went back to the old version"
        ready = httpx.get(server.url + "/ready").json()
        assert ready["model"]["version"] == v2
        metrics = httpx.get(server.url + "/metrics").text
        assert 'serve_model_reloads_total{outcome="success"} 2.0' in metrics
        assert (
            f'serve_model_version_info{{alias="champion",model="{SWAP_MODEL}",version="{v2}"}} 1.0' in metrics
        )
    finally:
        stop.set()
        code = server.stop()
        client.set_registered_model_alias(SWAP_MODEL, "champion", v1)
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -15 is a clean stop too
    assert code in (0, -15) and "Application shutdown complete" in server.log(), server.log()[-2000:]

    # shutdown drained the queue: every answered prediction is in the database
    engine = db.make_engine(server.database_url)
    assert db.count_rows(engine, models.PredictionBatch) == len(results)
    engine.dispose()

    # JSON logs: one object per line, the trace id of a request in its line, no API key anywhere
    log = server.log()
    assert READ_KEY not in log and WRITE_KEY not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert lines and all("trace_id" in entry for entry in lines)
    traced = {entry["trace_id"] for entry in lines if entry.get("logger") == "serve.access"}
    assert results[-1][3] in traced
    assert any("serving swap-classifier version" in entry["message"] for entry in lines)


def check_tracing_and_metrics_path(server) -> None:
    """A caller's W3C traceparent is continued; errors carry the trace id; /metrics answers without a
    redirect."""
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = httpx.get(server.url + "/health", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert r.headers["x-trace-id"] == trace_id
    r = httpx.get(server.url + "/v1/model")
    assert r.status_code == 401 and len(r.headers["x-trace-id"]) == 32
    assert r.json()["trace_id"] == r.headers["x-trace-id"]
    m = httpx.get(server.url + "/metrics", follow_redirects=False)
    assert m.status_code == 200 and "serve_http_request_duration_seconds_bucket" in m.text
