"""The chain behind a model version: registry version -> MLflow run (a notebook execution) -> executed
notebook, parameters, git commit, DVC data hashes. Read from the tags and artifacts jobrunner records.

Built off the request path (when a version is loaded, or once per other version asked for) and cached.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobrunner.lineage import dir_md5, file_md5
from jobrunner.tags import (
    DATA_INPUT_PREFIX,
    DATA_OUTPUT_PREFIX,
    DVC_LOCK_MD5_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    NOTEBOOK_TAG,
    STAGE_TAG,
)

log = logging.getLogger(__name__)

DATA_PREFIXES = {DATA_INPUT_PREFIX: "input", DATA_OUTPUT_PREFIX: "output"}


class HashResolver:
    """Finds data by its DVC md5: in the workspace (file hash cached by size and mtime) or the DVC cache."""

    def __init__(self, project_dir: Path):
        self.project_dir = project_dir
        self._cache: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()

    def _workspace_md5(self, path: Path) -> str | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        digest = file_md5(path) if path.is_file() else dir_md5(path) if path.is_dir() else None
        if digest:
            with self._lock:
                self._cache[key] = digest
        return digest

    def resolve(self, rel: str, md5: str) -> str | None:
        full = (self.project_dir / rel).resolve()
        if self.project_dir.resolve() in full.parents and self._workspace_md5(full) == md5:
            return f"workspace:{rel}"
        plain = md5.removesuffix(".dir")
        for cache in (
            self.project_dir / ".dvc" / "cache" / "files" / "md5",
            self.project_dir / ".dvc" / "cache",
        ):
            candidate = cache / plain[:2] / (plain[2:] + (".dir" if md5.endswith(".dir") else ""))
            if candidate.exists():
                return f"dvc-cache:{candidate.relative_to(self.project_dir).as_posix()}"
        return None


def _parse_param(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def build_lineage(
    client: Any,
    *,
    name: str,
    version: str,
    alias: str,
    resolver: HashResolver,
    api_prefix: str = "/v1",
    mlflow_ui_url: str | None = None,
) -> dict[str, Any]:
    """A dict matching schemas.Lineage for one registered version."""
    mv = client.get_model_version(name, version)
    run_id = mv.run_id or mv.tags.get("source_run_id")
    out: dict[str, Any] = {
        "model": {"name": name, "version": str(mv.version), "alias": alias, "run_id": run_id},
        "model_uri": f"models:/{name}/{mv.version}",
        "registered_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC)
        if mv.creation_timestamp
        else None,
        "tags": dict(mv.tags),
        "run": None,
    }
    if not run_id:
        return out
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - a deleted run leaves the rest of the lineage useful
        log.warning("lineage: run %s of %s v%s cannot be read: %s", run_id, name, version, exc)
        return out
    tags = run.data.tags
    html = ipynb = None
    try:
        for art in client.list_artifacts(run_id, "notebook"):
            if art.path.endswith(".html"):
                html = art.path
            elif art.path.endswith(".ipynb"):
                ipynb = art.path
    except Exception as exc:  # noqa: BLE001
        log.warning("lineage: artifacts of run %s cannot be listed: %s", run_id, exc)
    data = []
    for key, md5 in sorted(tags.items()):
        for prefix, direction in DATA_PREFIXES.items():
            if key.startswith(prefix) and md5 and md5 != "missing":
                path = key[len(prefix) :]
                location = resolver.resolve(path, md5)
                data.append(
                    {
                        "path": path,
                        "md5": md5,
                        "direction": direction,
                        "resolved": location is not None,
                        "location": location,
                    }
                )
    dirty = tags.get(GIT_DIRTY_TAG)
    ui = None
    if mlflow_ui_url:
        ui = f"{mlflow_ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    out["run"] = {
        "run_id": run_id,
        "experiment_id": run.info.experiment_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "stage": tags.get(STAGE_TAG),
        "started_at": datetime.fromtimestamp(run.info.start_time / 1000, UTC)
        if run.info.start_time
        else None,
        "git_commit": tags.get(GIT_COMMIT_TAG) or tags.get("mlflow.source.git.commit"),
        "git_dirty": None if dirty is None else dirty == "true",
        "dvc_lock_md5": tags.get(DVC_LOCK_MD5_TAG),
        "parameters": {k: _parse_param(v) for k, v in run.data.params.items()},
        "metrics": dict(run.data.metrics),
        "mlflow_url": ui,
        "notebook": {
            "path": tags.get(NOTEBOOK_TAG) or tags.get("mlflow.source.name"),
            "html_url": f"{api_prefix}/runs/{run_id}/notebook" if html else None,
            "ipynb_artifact": ipynb,
        },
        "data": data,
    }
    return out


def notebook_html(client: Any, run_id: str) -> bytes | None:
    """The executed notebook of a run as HTML bytes (the `notebook/*.html` artifact), or None."""
    import tempfile

    html = next((a.path for a in client.list_artifacts(run_id, "notebook") if a.path.endswith(".html")), None)
    if html is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, html, tmp)
        return Path(local).read_bytes()


class LineageService:
    """Lineage per registered version, cached (a version's lineage never changes once trained)."""

    def __init__(self, tracking_uri: str, project_dir: Path, mlflow_ui_url: str | None = None):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.resolver = HashResolver(project_dir)
        self.mlflow_ui_url = mlflow_ui_url
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def for_version(self, name: str, version: str, alias: str) -> dict[str, Any]:
        key = (name, version)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            cached = build_lineage(
                self.client,
                name=name,
                version=version,
                alias=alias,
                resolver=self.resolver,
                mlflow_ui_url=self.mlflow_ui_url,
            )
            with self._lock:
                self._cache[key] = cached
        return cached

    def notebook_html(self, run_id: str) -> bytes | None:
        return notebook_html(self.client, run_id)
