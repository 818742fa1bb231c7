"""The input data a recorded run read, by its DVC md5: from the checkout, else the DVC cache or remote.

A verification re-executes a run with the data it read. A worker's checkout may hold other data (a later
commit) or none (a worker image without the data), so an input whose md5 differs from the recorded one is
fetched by that md5 - from the project's DVC cache, then from its default DVC remote - into the scratch
copy the verification runs in; the workspace is never touched. DVC stores a file under its md5 and a
folder as a `.dir` listing of (relpath, md5) entries, both in the layout of `dvc push`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jobrunner.execution.hashing import hash_path

log = logging.getLogger(__name__)


def fetch_by_md5(project: Path, md5: str, dest: Path) -> str | None:
    """Write the DVC object `md5` (a file, or a folder's `.dir`) to `dest`; returns where it came from
    ("DVC cache", "DVC remote 'name'") or None when neither has it (or the project uses no DVC)."""
    if not (project / ".dvc").is_dir():
        return None
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        sources: list[tuple[str, Any]] = [("DVC cache", repo.cache.local)]
        name = repo.config["core"].get("remote")
        if name:
            try:
                sources.append((f"DVC remote '{name}'", repo.cloud.get_remote_odb(name, "jobrunner verify")))
            except Exception as exc:  # noqa: BLE001 - a remote that cannot be opened is a miss, said in the log
                log.warning("DVC remote %r cannot be opened: %s", name, exc)
        for label, odb in sources:
            try:
                if _get(odb, md5, dest) and hash_path(dest, project).md5 == md5:
                    log.info("fetched %s (md5 %s) from the %s", dest, md5, label)
                    return label
            except Exception as exc:  # noqa: BLE001 - an unreachable remote: try the next, then refuse
                log.warning("cannot fetch md5 %s from the %s: %s", md5, label, exc)
    return None


def _get(odb: Any, md5: str, dest: Path) -> bool:
    if not odb.exists(md5):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not md5.endswith(".dir"):
        odb.fs.get_file(odb.oid_to_path(md5), str(dest))
        return True
    with odb.fs.open(odb.oid_to_path(md5), mode="r") as f:
        entries = json.load(f)
    if not all(odb.exists(e["md5"]) for e in entries):
        return False
    for entry in entries:
        target = dest / entry["relpath"]
        target.parent.mkdir(parents=True, exist_ok=True)
        odb.fs.get_file(odb.oid_to_path(entry["md5"]), str(target))
    return True
