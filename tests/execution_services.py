"""Helpers (no fixtures, no tests): the local execution services (`python -m jobrunner.cli.service`) that
the programs a test starts leave behind.

A stage or `jobrunner run` started without JOBRUNNER_SERVICE=off (as `make demo` and a user's shell run
them) goes through a warm service that outlives it by `service_idle_timeout` (10 minutes). A test that
runs them so must stop the services of its folder when it ends: `stop_services_under(folder)`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jobrunner.cli import service_client


def services_under(folder: Path) -> dict[str, int]:
    """{key: pid} of the services running in `folder` or below (each writes its pid and cwd on start)."""
    root = os.path.realpath(folder)
    found = {}
    for info in service_client.runtime_dir().glob("*.json"):
        try:
            data = json.loads(info.read_text())
        except (OSError, ValueError):
            continue  # written or removed right now
        cwd = os.path.realpath(str(data.get("cwd", "")))
        if (cwd == root or cwd.startswith(root + os.sep)) and _alive(int(data.get("pid", 0))):
            found[str(data["key"])] = int(data["pid"])
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie (a service outlives the client that spawned it: its parent is init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return pid > 0 and state != "Z"


def stop_services_under(folder: Path, timeout: float = 60) -> list[int]:
    """Stop the services running in `folder` the way `jobrunner service stop` does; the pids stopped.
    Raises if one is still running after `timeout` seconds."""
    found = services_under(folder)
    for key in found:
        service_client.stop(key, timeout=timeout)
    deadline = time.monotonic() + timeout
    left = [pid for pid in found.values() if _alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for pid in left if _alive(pid)]
    if left:
        raise AssertionError(f"execution services {left} in {folder} did not stop within {timeout:.0f}s")
    return list(found.values())
