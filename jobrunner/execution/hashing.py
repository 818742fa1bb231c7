"""Data identity for lineage: DVC-compatible hashes of files and folders, and the git state.

A file's hash is the md5 of its bytes, exactly what DVC writes into dvc.lock. A folder's hash follows
DVC's `.dir` scheme (md5 of the JSON list of its files' md5s), so a recorded hash can be matched against
dvc.lock and the DVC cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


def file_md5(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - content identity, as DVC uses it; not security
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dir_md5(path: Path) -> str:
    entries = [
        {"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()}
        for f in sorted(path.rglob("*"))
        if f.is_file()
    ]
    entries.sort(key=lambda e: e["relpath"])
    body = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(body).hexdigest() + ".dir"  # noqa: S324


@dataclass(frozen=True)
class DataHash:
    path: str  # relative to the project when inside it
    md5: str | None  # None: the path does not exist
    size: int | None

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "md5": self.md5, "size": self.size}


def hash_path(path: Path, project_dir: Path) -> DataHash:
    full = path if path.is_absolute() else project_dir / path
    try:
        shown = full.resolve().relative_to(project_dir.resolve()).as_posix()
    except ValueError:
        shown = str(full)
    if full.is_file():
        return DataHash(shown, file_md5(full), full.stat().st_size)
    if full.is_dir():
        size = sum(f.stat().st_size for f in full.rglob("*") if f.is_file())
        return DataHash(shown, dir_md5(full), size)
    return DataHash(shown, None, None)


@dataclass(frozen=True)
class GitState:
    commit: str | None
    dirty: bool | None
    branch: str | None


def git_state(project_dir: Path) -> GitState:
    def git(*args: str) -> str | None:
        executable = shutil.which("git")
        if executable is None:  # no git installed: no git state
            return None
        try:
            out = subprocess.run(  # noqa: S603 - git with our fixed arguments, a list argv, no shell
                [executable, *args], cwd=project_dir, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return GitState(None, None, None)
    # Files DVC itself rewrites during `dvc repro` (dvc.lock, uncached metrics) do not make the code
    # dirty: without excluding them every stage after the first would be recorded as dirty. Their
    # content is recorded separately, as the dvc.lock digest and the output hashes.
    excluded = [f":(exclude){p}" for p in dvc_managed_paths(project_dir)]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ":/", *excluded)
    branch = git("rev-parse", "--abbrev-ref", "HEAD")
    return GitState(commit, bool(status) if status is not None else None, branch)


def dvc_managed_paths(project_dir: Path) -> list[str]:
    """dvc.lock and every out, metric and plot that dvc.yaml declares (paths relative to the project)."""
    import yaml

    paths = ["dvc.lock"]
    try:
        stages = (yaml.safe_load((project_dir / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return paths
    for stage in stages.values():
        if not isinstance(stage, dict):
            continue
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                names = entry.keys() if isinstance(entry, dict) else [entry]
                paths.extend(str(n) for n in names)
    return paths


def dvc_lock_digest(project_dir: Path) -> str | None:
    lock = project_dir / "dvc.lock"
    return file_md5(lock) if lock.is_file() else None
