"""Prometheus, alert rules and Alertmanager with the real binaries (Debian prometheus, alertmanager,
blackbox exporter), and a real Prometheus scraping the running API."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, free_port, port_open, service_unavailable
from tests.platform.conftest import PLATFORM, Upstream, need_binary, spawn, stop, wait_port

PROM = PLATFORM / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))


def run(*cmd: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_names() -> set[str]:
    names = set()
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    return names


def test_promtool_check_config() -> None:
    result = run(need_binary("promtool"), "check", "config", str(PROM / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    assert RULES
    result = run(need_binary("promtool"), "check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """promtool is a real check: an invalid expression fails it."""
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n")
    assert run(need_binary("promtool"), "check", "rules", str(bad)).returncode != 0


def test_promtool_test_rules() -> None:
    assert RULE_TESTS
    result = run(need_binary("promtool"), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_unit_test_and_a_runbook() -> None:
    fired: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    names = alert_names()
    assert names - fired == set(), "alerts without a unit test where they fire"
    required = {
        "ServiceDown",
        "ApiHighErrorRate",
        "ApiHighLatencyP99",
        "QueueBacklogGrowing",
        "JobFailureRateHigh",
        "NoWorkerAlive",
        "ModelAccuracyLow",
        "DiskNearlyFull",
    }
    assert required <= names
    runbook = (ROOT / "docs" / "operations.md").read_text()
    anchors = {m.lower() for m in re.findall(r"^#+ .*?`?([A-Za-z0-9]+)`?\s*$", runbook, flags=re.M)}
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["annotations"]["runbook"] == f"docs/operations.md#{rule['alert'].lower()}"
                    assert rule["alert"].lower() in anchors, f"no runbook heading for {rule['alert']}"


def test_alertmanager_config_is_valid_and_routes_retraining() -> None:
    path = PLATFORM / "alertmanager" / "alertmanager.yml"
    result = run(need_binary("amtool"), "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    conf = yaml.safe_load(path.read_text())
    routes = {r["receiver"]: r for r in conf["route"]["routes"]}
    assert routes["retrain"]["matchers"] == ['action = "retrain"']
    receiver = next(r for r in conf["receivers"] if r["name"] == "retrain")
    hook = receiver["webhook_configs"][0]
    assert hook["url"].startswith("http://api:8000/v1/")
    assert hook["http_config"]["authorization"]["credentials_file"].startswith("/run/secrets/")
    # the alert that asks for retraining carries the label the route matches
    model_rules = [
        r
        for p in RULES
        for g in yaml.safe_load(p.read_text())["groups"]
        for r in g["rules"]
        if r.get("labels", {}).get("action") == "retrain"
    ]
    assert [r["alert"] for r in model_rules] == ["ModelAccuracyLow"]


def test_blackbox_config_is_valid() -> None:
    exporter = need_binary("prometheus-blackbox-exporter")
    result = run(exporter, f"--config.file={PLATFORM / 'blackbox' / 'blackbox.yml'}", "--config.check")
    assert result.returncode == 0, result.stdout + result.stderr


# -- metric names: dashboards and rules use only what our code exports ------------------------------------
OUR_PREFIXES = ("serve_", "jobrunner_")


def used_metric_names() -> dict[str, set[str]]:
    """Metric names of our own code (serve_*, jobrunner_*) used in rules and Grafana dashboards."""
    sources = [*RULES, *sorted((PLATFORM / "grafana" / "dashboards").glob("*.json"))]
    used: dict[str, set[str]] = {}
    for path in sources:
        for name in re.findall(r"\b((?:serve|jobrunner)_[a-z0-9_]+)\b", path.read_text()):
            used.setdefault(name, set()).add(path.name)
    return used


def exported_names(text: str) -> set[str]:
    """Sample names a /metrics exposition offers (counters with _total, histograms with their parts)."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def test_dashboards_and_rules_use_only_exported_metrics(
    api_upstream: Upstream, worker_metrics_port: int
) -> None:
    assert api_upstream.real_api
    api = httpx.get(f"http://127.0.0.1:{api_upstream.port}/metrics", timeout=10)
    assert api.status_code == 200
    worker = httpx.get(f"http://127.0.0.1:{worker_metrics_port}/metrics", timeout=10)
    assert worker.status_code == 200
    exported = exported_names(api.text) | exported_names(worker.text)
    used = used_metric_names()
    assert len(used) >= 8, "dashboards and rules should chart the API and the workers"
    missing = {name: sorted(files) for name, files in used.items() if name not in exported}
    assert missing == {}, "metric names used but not exported by serve/jobrunner"


# -- a real Prometheus scraping the running API and a worker metrics endpoint ------------------------------
@pytest.fixture
def prometheus(tmp_path: Path, api_upstream: Upstream, worker_metrics_port: int) -> Iterator[str]:
    binary = need_binary("prometheus")
    worker_port = worker_metrics_port
    # Our prometheus.yml with our rules; the api and worker jobs pointed at loopback, scraped every second.
    conf = yaml.safe_load((PROM / "prometheus.yml").read_text())
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    conf["global"]["scrape_interval"] = "1s"
    conf["global"]["evaluation_interval"] = "1s"
    conf.pop("alerting")
    jobs = {job["job_name"]: job for job in conf["scrape_configs"]}
    api_job = {**jobs["api"], "static_configs": [{"targets": [f"127.0.0.1:{api_upstream.port}"]}]}
    api_job.pop("dns_sd_configs")
    worker_job = {"job_name": "worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]}
    conf["scrape_configs"] = [api_job, worker_job]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(conf))
    port = free_port()
    proc = spawn(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path / "prometheus.log",
    )
    try:
        wait_port(port, proc, "prometheus")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop([proc])


def test_prometheus_scrapes_the_api_and_a_worker(prometheus: str, api_upstream: Upstream) -> None:
    base = prometheus
    deadline = time.monotonic() + 30
    health: dict[str, str] = {}
    while time.monotonic() < deadline:
        targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health == {"api": "up", "worker": "up"}:
            break
        time.sleep(0.5)
    assert health == {"api": "up", "worker": "up"}
    rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    loaded = {r["name"] for g in rules for r in g["rules"]}
    assert alert_names() <= loaded
    # the API's own metrics, not only `up`
    queries = ['count(jobrunner_jobs{state="QUEUED"})', "count(serve_http_requests_total)"]
    for query in queries:
        deadline = time.monotonic() + 15
        while True:
            result = httpx.get(f"{base}/api/v1/query", params={"query": query}, timeout=5).json()["data"][
                "result"
            ]
            if result or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result, query


# -- a real Alertmanager: the retraining webhook ----------------------------------------------------------
class _Capture(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[tuple[str, list[dict], str]]:
    binary = need_binary("prometheus-alertmanager")
    _Capture.received = []
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    key = "am-test-key-0123456789abcdef"
    (tmp_path / "key").write_text(key + "\n")
    text = (PLATFORM / "alertmanager" / "alertmanager.yml").read_text()
    # What only a container has: the API's address and the secret's path; and no 30 s group wait.
    for old, new, count in [
        ("http://api:8000", f"http://127.0.0.1:{hook.server_port}", 1),
        ("/run/secrets/alertmanager_api_key", str(tmp_path / "key"), 1),
        ("group_wait: 30s", "group_wait: 1s", 1),
    ]:
        assert text.count(old) == count, old
        text = text.replace(old, new)
    (tmp_path / "alertmanager.yml").write_text(text)
    port = free_port()
    proc = spawn(
        [
            binary,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--web.route-prefix=/alertmanager/",
        ],
        tmp_path / "alertmanager.log",
    )
    try:
        wait_port(port, proc, "alertmanager")
        yield f"http://127.0.0.1:{port}/alertmanager", _Capture.received, key
    finally:
        stop([proc])
        hook.shutdown()


def test_low_accuracy_alert_asks_the_api_to_retrain(alertmanager: tuple[str, list[dict], str]) -> None:
    base, received, key = alertmanager
    alerts = [
        {
            "labels": {
                "alertname": "ModelAccuracyLow",
                "action": "retrain",
                "severity": "warning",
                "model": "breast-cancer-classifier",
                "version": "3",
            },
            "annotations": {"summary": "Live accuracy of breast-cancer-classifier v3 is 70%"},
        },
        {
            "labels": {
                "alertname": "ServiceDown",
                "severity": "critical",
                "job": "api",
                "instance": "api:8000",
            }
        },
    ]
    deadline = time.monotonic() + 20
    while True:  # alertmanager answers before its API is fully up
        r = httpx.post(f"{base}/api/v2/alerts", json=alerts, timeout=5)
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert r.status_code == 200, r.text
    while not received and time.monotonic() < deadline:
        time.sleep(0.2)
    assert received, "Alertmanager did not call the retraining webhook"
    time.sleep(1.5)  # a second group (ServiceDown) would have been sent by now
    assert len(received) == 1, [c["body"]["groupLabels"] for c in received]
    call = received[0]
    assert call["path"] == "/v1/alerts/alertmanager"
    assert call["headers"]["Authorization"] == f"Bearer {key}"
    body = call["body"]
    assert body["status"] == "firing" and body["receiver"] == "retrain"
    assert [a["labels"]["alertname"] for a in body["alerts"]] == ["ModelAccuracyLow"]
    assert body["alerts"][0]["labels"]["model"] == "breast-cancer-classifier"


def test_rabbitmq_metrics_used_by_the_dashboards_exist() -> None:
    """The RabbitMQ panels chart names the rabbitmq_prometheus plugin exports (scraped from the real
    broker)."""
    if not port_open("127.0.0.1", 5672):
        service_unavailable("RabbitMQ", "nothing listens on 127.0.0.1:5672")
    if not port_open("127.0.0.1", 15692):
        plugins = need_binary("rabbitmq-plugins")  # the plugin docker-compose.yml enables (enabled_plugins)
        subprocess.run([plugins, "enable", "rabbitmq_prometheus"], capture_output=True, timeout=120)
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", 15692) and time.monotonic() < deadline:
            time.sleep(0.5)
    text = httpx.get("http://127.0.0.1:15692/metrics", timeout=10).text
    exported = exported_names(text)
    used = set()
    for path in [*RULES, *sorted((PLATFORM / "grafana" / "dashboards").glob("*.json"))]:
        used |= set(re.findall(r"\b(rabbitmq_[a-z0-9_]+)\b", path.read_text()))
    assert used, "the Jobs dashboard charts the broker"
    assert used <= exported, used - exported
    enabled = (PLATFORM / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in enabled
