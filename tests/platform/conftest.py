"""Fixtures for the production-stack tests: the repository's platform files and the real binaries."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, service_unavailable

PLATFORM = ROOT / "platform"
COMPOSE_FILES = [ROOT / "docker-compose.yml", ROOT / "docker-compose.worker.yml"]


def need_binary(name: str) -> str:
    """Path of a binary the test needs; skips on a laptop without it, fails under CI."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if path is None:
        service_unavailable(name, "binary not on PATH (apt-get install -y nginx prometheus openssl)")
    return path


def load_yaml(path: Path) -> object:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def compose() -> dict:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1, made by our script with the real openssl."""
    need_binary("openssl")
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-selfsigned-cert.sh"), str(out), "localhost"],
        check=True, capture_output=True, timeout=60,
    )
    return out / "fullchain.pem", out / "privkey.pem"
