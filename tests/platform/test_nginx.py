"""Nginx: `nginx -t` on our config, and a live nginx with TLS in front of real uvicorn processes."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.platform.conftest import JUPYTER_TOKEN, Upstream, need_binary, output, spawn, stop, wait_port
from tests.platform.nginx_harness import (
    UPSTREAM_NAMES,
    NginxSite,
    copy_config,
    nginx_cmd,
    nginx_test,
    render_site,
)

BASIC_USER, BASIC_PASSWORD = "ops", "s3cret-for-tests"


def test_nginx_t_accepts_the_config_as_committed(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    nginx = need_binary("nginx")
    copy_config(tmp_path, *tls_cert)
    result = nginx_test(nginx, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def test_nginx_t_rejects_a_broken_config(tmp_path: Path, tls_cert: tuple[Path, Path]) -> None:
    """The check above can fail: a missing include is reported."""
    nginx = need_binary("nginx")
    copy_config(tmp_path, *tls_cert)
    (tmp_path / "snippets" / "proxy.conf").unlink()
    result = nginx_test(nginx, tmp_path)
    assert result.returncode != 0
    assert "proxy.conf" in result.stderr


@pytest.fixture(scope="module")
def site(
    api_upstream: Upstream, echo_upstream: Upstream, jupyter_upstream: Upstream, tls_cert: tuple[Path, Path]
) -> Iterator[NginxSite]:
    nginx = need_binary("nginx")
    need_binary("openssl")
    # Not under pytest's 0700 basetemp: nginx workers run as an unprivileged user and read htpasswd here.
    work = Path(tempfile.mkdtemp(prefix="platform-nginx-"))
    work.chmod(0o755)
    htpasswd = work / "htpasswd"
    # Made by our script, as an operator would; nginx workers (unprivileged) must be able to read it.
    for user, password in (("someone-else", "x"), (BASIC_USER, "old"), (BASIC_USER, BASIC_PASSWORD)):
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "gen-htpasswd.sh"), user, str(htpasswd)],
            check=True,
            capture_output=True,
            env={**os.environ, "NGINX_BASIC_AUTH_PASSWORD": password},
            timeout=30,
        )
    assert [line.split(":")[0] for line in htpasswd.read_text().splitlines()] == ["someone-else", BASIC_USER]
    upstreams = {name: echo_upstream.port for name in UPSTREAM_NAMES}
    upstreams["api"] = api_upstream.port
    upstreams["lab"] = jupyter_upstream.port
    ports = (free_port(), free_port(), free_port())
    s = render_site(work / "conf", *tls_cert, ports=ports, upstreams=upstreams, htpasswd=htpasswd)
    proc = spawn(nginx_cmd(nginx, s.prefix, foreground=True), work / "nginx.out")
    try:
        wait_port(s.https_port, proc, "nginx")
        yield s
    finally:
        stop([proc])
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def https(site: NginxSite, tls_cert: tuple[Path, Path]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"https://localhost:{site.https_port}", verify=str(tls_cert[0]), timeout=10
    ) as client:
        yield client


def _auth() -> dict[str, str]:
    token = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_http_redirects_to_https(site: NginxSite) -> None:
    r = httpx.get(f"http://127.0.0.1:{site.http_port}/api/health?x=1", follow_redirects=False, timeout=10)
    assert r.status_code == 301
    assert r.headers["location"] == "https://127.0.0.1/api/health?x=1"


def test_api_health_answers_through_tls_with_security_headers(site: NginxSite, https: httpx.Client) -> None:
    r = https.get("/api/health")
    assert r.status_code == 200, r.text
    assert r.headers["strict-transport-security"].startswith("max-age=")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "SAMEORIGIN"
    assert "referrer-policy" in r.headers
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert "server" not in r.headers or r.headers["server"] == "nginx"  # server_tokens off: no version


def test_security_headers_also_on_errors(https: httpx.Client) -> None:
    r = https.get("/no-such-route")
    assert r.status_code == 404
    assert "strict-transport-security" in r.headers


def test_api_prefix_is_stripped(api_upstream: Upstream, https: httpx.Client) -> None:
    assert api_upstream.real_api
    docs = https.get("/api/docs")
    assert docs.status_code == 200
    assert "/api/openapi.json" in docs.text  # uvicorn --root-path /api
    assert https.get("/api/openapi.json").status_code == 200


def test_dashboards_keep_their_prefix_and_get_forwarded_headers(https: httpx.Client) -> None:
    r = https.get("/dashboards/some/page?a=1", headers=_auth())
    assert r.status_code == 200
    seen = r.json()
    assert seen["path"] == "/dashboards/some/page"  # Voila keeps its base_url
    assert seen["query"] == "a=1"
    assert seen["headers"]["x-forwarded-proto"] == "https"


def test_metrics_are_not_public(https: httpx.Client) -> None:
    assert https.get("/api/metrics").status_code == 404


@pytest.mark.parametrize("path", ["/dashboards/", "/mlflow/", "/prometheus/", "/alertmanager/"])
def test_basic_auth_guards_internal_uis(https: httpx.Client, path: str) -> None:
    assert https.get(path).status_code == 401
    bad = {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}
    assert https.get(path, headers=bad).status_code == 401
    assert https.get(path, headers=_auth()).status_code == 200


def test_grafana_is_proxied_without_basic_auth(https: httpx.Client) -> None:
    """Grafana has its own login page: nginx forwards it as is, prefix kept (serve_from_sub_path)."""
    r = https.get("/grafana/login")
    assert r.status_code == 200
    assert r.json()["path"] == "/grafana/login"
    assert r.headers.get_list("x-frame-options") == ["SAMEORIGIN"]  # nginx's only, the backend's hidden


def test_jupyterlab_answers_through_nginx_only_with_its_token(https: httpx.Client) -> None:
    # the unauthenticated version endpoint is what the compose health check and the blackbox probe use
    assert https.get("/lab/api").json()["version"]
    assert https.get("/lab/api/status").status_code == 403
    assert https.get("/lab/api/status", headers={"Authorization": "token wrong"}).status_code == 403
    ok = https.get("/lab/api/status", headers={"Authorization": f"token {JUPYTER_TOKEN}"})
    assert ok.status_code == 200 and "started" in ok.json()
    lab = https.get(f"/lab/lab?token={JUPYTER_TOKEN}")
    assert lab.status_code == 200
    assert "/lab/static/" in lab.text  # JupyterLab knows its base URL behind the proxy


def test_jupyterlab_websocket_through_nginx(site: NginxSite, tls_cert: tuple[Path, Path]) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    ctx = ssl.create_default_context(cafile=str(tls_cert[0]))
    url = f"wss://localhost:{site.https_port}/lab/api/events/subscribe"
    with connect(
        url, ssl=ctx, additional_headers={"Authorization": f"token {JUPYTER_TOKEN}"}, open_timeout=15
    ) as ws:
        assert ws.protocol.state.name == "OPEN"
    with pytest.raises(InvalidStatus) as refused, connect(url, ssl=ctx, open_timeout=15):
        pass
    assert refused.value.response.status_code == 403


def test_request_body_limit(https: httpx.Client) -> None:
    big = b"x" * (11 * 1024 * 1024)
    assert https.post("/dashboards/upload", content=big, headers=_auth()).status_code == 413


def test_trace_context_is_continued_and_logged(site: NginxSite, https: httpx.Client) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{trace_id}-00f067aa0ba902b7-01"
    seen = https.get("/grafana/x", headers={"traceparent": incoming}).json()
    assert seen["headers"]["traceparent"] == incoming
    # Without one, nginx starts a trace whose id is the request id, and logs it.
    r = https.get("/grafana/y")
    started = r.json()["headers"]["traceparent"]
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", started)
    assert started.split("-")[1] == r.headers["x-request-id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in site.access_log.read_text().splitlines() if line.strip()]
        by_uri = {line["uri"]: line for line in lines}
        if "/grafana/x" in by_uri and "/grafana/y" in by_uri:
            break
        time.sleep(0.1)
    assert by_uri["/grafana/x"]["trace_id"] == trace_id
    assert by_uri["/grafana/y"]["trace_id"] == r.headers["x-request-id"]
    assert by_uri["/grafana/y"]["status"] == 200


def test_websocket_upgrade_is_proxied(site: NginxSite, tls_cert: tuple[Path, Path]) -> None:
    from websockets.sync.client import connect

    ctx = ssl.create_default_context(cafile=str(tls_cert[0]))
    url = f"wss://localhost:{site.https_port}/dashboards/api/kernels/k1/channels"
    with connect(url, ssl=ctx, additional_headers=_auth(), open_timeout=10) as ws:
        hello = json.loads(ws.recv(timeout=10))
        assert hello["path"] == "/dashboards/api/kernels/k1/channels"
        ws.send("ping")
        assert ws.recv(timeout=10) == "echo:ping"


def test_tls_offers_http2_and_modern_protocols_only(site: NginxSite, tls_cert: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(cafile=str(tls_cert[0]))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", site.https_port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(tls_cert[0]))
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.set_ciphers("AES128-SHA256")  # a non-forward-secret suite: our cipher list must refuse it
    with (
        socket.create_connection(("127.0.0.1", site.https_port), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="localhost")


def test_api_continues_the_trace_nginx_started(
    site: NginxSite, api_upstream: Upstream, https: httpx.Client
) -> None:
    """One trace id from the edge to the API: nginx's access log and the API's logs share it."""
    assert api_upstream.real_api
    r = https.get("/api/health")
    assert r.status_code == 200
    trace_id = r.headers["x-request-id"]
    assert r.headers["x-trace-id"] == trace_id
    # ... and the API's JSON log line of that request carries it (what Loki indexes as trace_id)
    deadline = time.monotonic() + 5
    lines: list[dict] = []
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in output(api_upstream.proc).splitlines() if line.startswith("{")]
        if any(line.get("trace_id") == trace_id for line in lines):
            break
        time.sleep(0.2)
    assert any(line.get("trace_id") == trace_id for line in lines), "no API log line with the trace id"
