"""Run the repository's nginx config with the real Debian nginx on loopback ports.

The config files are copied unchanged except for what only a container has: listen ports (the test uses
free loopback ports and drops the IPv6 listeners), the basic-auth secret path, the ACME webroot, and
upstreams.conf (loopback addresses instead of compose service names). Every substitution must match,
so a config that drifts from what the tests exercise fails here instead of being silently untested.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT

NGINX_DIR = ROOT / "platform" / "nginx"
UPSTREAM_NAMES = ("api", "dashboards", "lab", "mlflow", "grafana", "prometheus", "alertmanager")


@dataclass
class NginxSite:
    prefix: Path
    http_port: int
    https_port: int
    status_port: int

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"


def _sub(text: str, old: str, new: str, count: int) -> str:
    assert text.count(old) == count, f"expected {count}x {old!r} in platform/nginx/nginx.conf"
    return text.replace(old, new)


def copy_config(dst: Path, cert: Path, key: Path) -> None:
    """The config tree as deployed: our files, Debian's mime.types, the certificate under certs/."""
    shutil.copytree(NGINX_DIR, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.pem"))
    shutil.copy("/etc/nginx/mime.types", dst / "mime.types")
    (dst / "certs").mkdir(exist_ok=True)
    shutil.copy(cert, dst / "certs" / "fullchain.pem")
    shutil.copy(key, dst / "certs" / "privkey.pem")


def render_site(
    dst: Path,
    cert: Path,
    key: Path,
    *,
    ports: tuple[int, int, int],
    upstreams: dict[str, int],
    htpasswd: Path,
) -> NginxSite:
    http_port, https_port, status_port = ports
    copy_config(dst, cert, key)
    text = (NGINX_DIR / "nginx.conf").read_text()
    text = _sub(text, "listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;", 1)
    text = _sub(text, "listen [::]:80 default_server;\n", "", 1)
    text = _sub(
        text,
        "listen 443 ssl http2 default_server;",
        f"listen 127.0.0.1:{https_port} ssl http2 default_server;",
        1,
    )
    text = _sub(text, "listen [::]:443 ssl http2 default_server;\n", "", 1)
    text = _sub(text, "listen 8080;", f"listen 127.0.0.1:{status_port};", 1)
    text = _sub(text, "/run/secrets/nginx_htpasswd", str(htpasswd), 4)
    text = _sub(text, "root /var/www/certbot;", f"root {dst / 'acme'};", 1)
    text = _sub(text, "access_log /dev/stdout json_trace;", f"access_log {dst / 'access.log'} json_trace;", 1)
    (dst / "nginx.conf").write_text(text)
    # The same variable names as platform/nginx/upstreams.conf, loopback addresses instead of services.
    prod = (NGINX_DIR / "upstreams.conf").read_text()
    lines = []
    for name in UPSTREAM_NAMES:
        assert f"$upstream_{name} " in prod, f"upstreams.conf lost $upstream_{name}"
        lines.append(f'map "" $upstream_{name} {{ default 127.0.0.1:{upstreams[name]}; }}')
    (dst / "upstreams.conf").write_text("\n".join(lines) + "\n")
    return NginxSite(prefix=dst, http_port=http_port, https_port=https_port, status_port=status_port)


def nginx_cmd(nginx: str, prefix: Path, *, foreground: bool = False) -> list[str]:
    """The command line docker-compose.yml uses, with a throw-away prefix and pid file."""
    globals_ = f"pid {prefix / 'nginx.pid'};" + (" daemon off;" if foreground else "")
    return [nginx, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", globals_]


def nginx_test(nginx: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*nginx_cmd(nginx, prefix), "-t"], capture_output=True, text=True, timeout=30)
