"""Grafana, Loki, Alloy, Tempo and the OTel collector: no binaries here, so their configs are checked for
what breaks silently - dangling references between components, data sources, PromQL that does not parse,
and the trace-id links between logs and traces."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.platform.conftest import PLATFORM, need_binary

GRAFANA = PLATFORM / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def datasources() -> dict[str, dict]:
    conf = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text())
    return {ds["uid"]: ds for ds in conf["datasources"]}


def panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_four_dashboards_with_unique_uids_and_titles() -> None:
    loaded = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert {d["title"] for d in loaded} >= {"API", "Jobs", "Model", "Infrastructure"}
    uids = [d["uid"] for d in loaded]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_use_provisioned_datasources_and_do_not_overlap(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    known = datasources()
    cells: set[tuple[int, int]] = set()
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in known, panel["title"]
        assert panel["targets"], f"{panel['title']} queries nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in known
            assert target["expr"].strip()


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    """Dashboard queries are checked by promtool as recording rules (it parses PromQL)."""
    promtool = need_binary("promtool")
    rules = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                if target["datasource"]["uid"] == "prometheus":
                    rules.append({"record": f"dashboard:{path.stem}:{len(rules)}", "expr": target["expr"]})
    assert len(rules) > 30
    file = tmp_path / "dashboard-queries.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(file)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_logs_and_traces_link_both_ways() -> None:
    ds = datasources()
    tempo, loki, prom = ds["tempo"], ds["loki"], ds["prometheus"]
    to_logs = tempo["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki"
    assert to_logs["filterByTraceID"] or "__trace.traceId" in to_logs.get("query", "")
    assert "trace_id" in to_logs["query"] and "$${__trace.traceId}" in to_logs["query"]
    derived = loki["jsonData"]["derivedFields"]
    assert {d["datasourceUid"] for d in derived} == {"tempo"}
    # the regex finds the id in our JSON log lines
    line = json.dumps(
        {"level": "INFO", "message": "GET /health 200", "trace_id": "7e522a5af62a9af978dc6205c3e9a73b"}
    )
    patterns = [d["matcherRegex"] for d in derived if d.get("matcherType") != "label"]
    assert any(re.search(p, line).group(1) == "7e522a5af62a9af978dc6205c3e9a73b" for p in patterns)
    assert prom["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"


def test_log_shipper_extracts_the_trace_id_that_nginx_and_the_api_log() -> None:
    alloy = (PLATFORM / "alloy" / "config.alloy").read_text()
    assert 'trace_id = "trace_id"' in alloy
    assert "stage.structured_metadata" in alloy
    nginx = (PLATFORM / "nginx" / "nginx.conf").read_text()
    assert '"trace_id":"$trace_id"' in nginx


def test_alloy_components_are_wired() -> None:
    """Every `x.y.z.receiver` / `.targets` / `.rules` reference names a component defined in the file."""
    text = (PLATFORM / "alloy" / "config.alloy").read_text()
    defined = {f"{kind}.{label}" for kind, label in re.findall(r'^([a-z_.]+)\s+"([a-z_]+)"\s*\{', text, re.M)}
    assert {"discovery.docker.containers", "loki.source.docker.containers", "loki.write.default"} <= defined
    refs = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)+)\.(?:receiver|targets|rules)\b", text)
    assert refs
    assert set(refs) <= defined, set(refs) - defined
    assert text.count("{") == text.count("}")


def test_otel_collector_pipelines_reference_defined_components() -> None:
    conf = yaml.safe_load((PLATFORM / "otel-collector" / "config.yaml").read_text())
    service = conf["service"]
    assert set(service["extensions"]) <= set(conf["extensions"])
    for name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(conf[kind]), f"{name}.{kind}"
    assert service["pipelines"]["traces"]["exporters"] == ["otlp/tempo"]
    # memory_limiter must come first in the processors (collector guidance)
    assert service["pipelines"]["traces"]["processors"][0] == "memory_limiter"


def test_tempo_receives_otlp_and_loki_keeps_structured_metadata() -> None:
    tempo = yaml.safe_load((PLATFORM / "tempo" / "tempo.yml").read_text())
    assert {"grpc", "http"} <= set(tempo["distributor"]["receivers"]["otlp"]["protocols"])
    loki = yaml.safe_load((PLATFORM / "loki" / "loki.yml").read_text())
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["schema_config"]["configs"][-1]["schema"] == "v13"  # structured metadata needs v13 + tsdb
    assert loki["schema_config"]["configs"][-1]["store"] == "tsdb"


def test_grafana_login_is_required() -> None:
    compose = yaml.safe_load((PLATFORM.parent / "docker-compose.yml").read_text())
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
