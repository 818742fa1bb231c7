"""API keys on every route: enumerated from the app, so a new route cannot slip through unprotected."""

from __future__ import annotations

import re

import pytest
from starlette.routing import Route

from serve.config import KeyRing, parse_api_keys
from tests.serve.conftest import READ, READ_KEY, WRITE

PUBLIC = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/docs/assets/{name}"),  # Swagger UI / ReDoc files (serve/docs_pages.py)
}
WRITE_ROUTES = {
    ("POST", "/v1/feedback"),
    ("POST", "/v1/jobs"),
    ("POST", "/v1/jobs/{job_id}/cancel"),
    ("POST", "/v1/alerts/alertmanager"),
    ("POST", "/v1/schedules"),
    ("POST", "/v1/schedules/{schedule_id}/pause"),
    ("POST", "/v1/schedules/{schedule_id}/resume"),
    ("DELETE", "/v1/schedules/{schedule_id}"),
    ("POST", "/v1/schedules/{schedule_id}/run-now"),
    ("POST", "/v1/runs/{run_id}/verify"),
}


def all_routes(app):
    """Every route with its full path (FastAPI 0.16x nests included routers in the route table)."""
    try:
        from fastapi.routing import _iter_included_route_candidates
    except ImportError:  # older FastAPI: a flat table
        return list(app.routes)
    return list(_iter_included_route_candidates(app.routes))


def operations(app):
    for route in all_routes(app):
        if isinstance(route, Route):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                yield method, route.path


def call(client, method, path, headers):
    url = re.sub(r"\{[^}]+\}", "00000000000000000000000000000000", path)
    return client.request(method, url, headers=headers, json={} if method in ("POST", "PUT") else None)


def test_the_route_table_is_what_this_test_knows(app_client):
    ops = set(operations(app_client.app))
    assert ops >= PUBLIC and ops >= WRITE_ROUTES
    assert ("POST", "/v1/predict") in ops and ("GET", "/v1/predictions/{prediction_id}/lineage") in ops


def test_every_non_public_route_refuses_missing_and_wrong_keys(app_client):
    checked = 0
    for method, path in operations(app_client.app):
        if (method, path) in PUBLIC:
            continue
        for headers in ({}, {"X-API-Key": "wrong-key"}, {"X-API-Key": READ_KEY + "x"}, {"X-API-Key": ""}):
            r = call(app_client, method, path, headers)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert "X-API-Key" in r.json()["detail"]
            assert r.headers["www-authenticate"] == "ApiKey"
        checked += 1
    assert checked >= 10


def test_read_key_is_forbidden_on_write_routes_and_write_key_passes_everywhere(app_client):
    for method, path in operations(app_client.app):
        if (method, path) in PUBLIC:
            continue
        read = call(app_client, method, path, READ)
        write = call(app_client, method, path, WRITE)
        assert write.status_code not in (401, 403), (method, path, write.text)
        if (method, path) in WRITE_ROUTES:
            assert read.status_code == 403, (method, path, read.text)
            assert "scope write" in read.json()["detail"]
        else:
            assert read.status_code not in (401, 403), (method, path, read.text)


def test_health_and_ready_are_public(app_client):
    assert app_client.get("/health").json() == {"status": "ok"}
    r = app_client.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["database"] is True


def test_metrics_can_require_a_key(model_store, tmp_path):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from tests.serve.conftest import serve_settings

    app = create_app(serve_settings(model_store, f"sqlite:///{tmp_path / 'db.sqlite'}", metrics_auth=True))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        r = client.get("/metrics", headers=READ)
        assert r.status_code == 200 and "serve_http_requests_total" in r.text
        assert r.headers["content-type"].startswith("text/plain")
        assert client.get("/health").status_code == 200


def test_key_parsing_and_scopes():
    ring = KeyRing(parse_api_keys("a-key:read, b-key:write\n# comment\n"))
    assert ring.scope_of("a-key") == "read" and ring.scope_of("b-key") == "write"
    assert ring.scope_of("c-key") is None and ring.scope_of("") is None
    with pytest.raises(ValueError, match="scope read or write"):
        parse_api_keys("a-key:admin")
    with pytest.raises(ValueError):
        parse_api_keys("no-scope")
    assert "a-key" not in repr(parse_api_keys("a-key:read"))


def test_keys_from_a_file_and_production_refuses_placeholders(tmp_path):
    from serve.config import Settings

    keyfile = tmp_path / "keys"
    keyfile.write_text("file-key-0123456789abcdef:write\n")
    s = Settings(_env_file=None, api_keys="env-key-0123456789abcdef:read", api_keys_file=keyfile)
    ring = KeyRing(s.keys())
    assert ring.scope_of("file-key-0123456789abcdef") == "write"
    assert ring.scope_of("env-key-0123456789abcdef") == "read"
    with pytest.raises(ValueError, match="placeholder or short"):
        Settings(_env_file=None, environment="production", api_keys="CHANGE_ME:write")
