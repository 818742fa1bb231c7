"""OTLP export (off by default, on with SERVE_OTLP_ENDPOINT) and CORS (off by default)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from fastapi.testclient import TestClient

from serve.app import create_app
from tests.serve.conftest import READ, serve_settings


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_spans_are_exported_over_otlp_with_the_returned_trace_id(model_store, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.received = []
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        app = create_app(
            serve_settings(model_store, f"sqlite:///{tmp_path / 'db.sqlite'}", otlp_endpoint=endpoint)
        )
        with TestClient(app) as client:
            r = client.post("/v1/predict", json={"rows": model_store.rows[:1]}, headers=READ)
            assert r.status_code == 200
            trace_id = r.headers["x-trace-id"]
        # leaving the client ran the lifespan exit, which flushes the span processor
    finally:
        server.shutdown()
    assert _Receiver.received, "no OTLP export arrived"
    path, content_type, _ = _Receiver.received[0]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert bytes.fromhex(trace_id) in b"".join(b for _, _, b in _Receiver.received)
    assert b"POST /v1/predict" in b"".join(b for _, _, b in _Receiver.received)


def test_cors_is_off_by_default_and_on_for_configured_origins(app_client, model_store, tmp_path):
    preflight = {"Origin": "https://dash.example.org", "Access-Control-Request-Method": "POST"}
    r = app_client.options("/v1/predict", headers=preflight)
    assert "access-control-allow-origin" not in r.headers
    r = app_client.get("/health", headers={"Origin": "https://dash.example.org"})
    assert "access-control-allow-origin" not in r.headers

    app = create_app(
        serve_settings(
            model_store, f"sqlite:///{tmp_path / 'db.sqlite'}", cors_origins=["https://dash.example.org"]
        )
    )
    with TestClient(app) as client:
        r = client.options(
            "/v1/predict", headers={**preflight, "Access-Control-Request-Headers": "X-API-Key"}
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://dash.example.org"
        other = client.get("/health", headers={"Origin": "https://evil.example.com"})
        assert "access-control-allow-origin" not in other.headers
