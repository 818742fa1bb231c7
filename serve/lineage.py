"""The chain behind a model version: registry version -> MLflow run (a notebook execution) -> executed
notebook, parameters, git commit, DVC data hashes. Read from the tags and artifacts jobrunner records,
by jobrunner's own lineage reader (jobrunner.provenance.lineage); this module adds where each data hash
is found.

Built off the request path (when a version is loaded, or once per other version asked for) and cached.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobrunner.execution.hashing import dir_md5, file_md5
from jobrunner.provenance.lineage import read_run

log = logging.getLogger(__name__)


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
    """A dict matching schemas.Lineage for one registered version: the registry's version, then the run
    as jobrunner's provenance reads it (jobrunner.provenance.lineage.read_run), each data hash located."""
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
        run = read_run(client, run_id)
    except Exception as exc:  # noqa: BLE001 - a deleted run leaves the rest of the lineage useful
        log.warning("lineage: run %s of %s v%s cannot be read: %s", run_id, name, version, exc)
        return out
    html = ipynb = None
    for uri in run.executed_notebooks:  # runs:/<run id>/notebook/<file>
        path = uri.removeprefix(f"runs:/{run_id}/")
        if path.endswith(".html"):
            html = path
        elif path.endswith(".ipynb"):
            ipynb = path
    data = []
    for direction, refs in (("input", run.inputs), ("output", run.outputs)):
        for ref in refs:
            if ref.md5:  # a path the run recorded as missing has no hash to find
                location = resolver.resolve(ref.path, ref.md5)
                data.append(
                    {
                        "path": ref.path,
                        "md5": ref.md5,
                        "direction": direction,
                        "resolved": location is not None,
                        "location": location,
                    }
                )
    ui = None
    if mlflow_ui_url:
        ui = f"{mlflow_ui_url.rstrip('/')}/#/experiments/{run.experiment_id}/runs/{run_id}"
    out["run"] = {
        "run_id": run_id,
        "experiment_id": run.experiment_id,
        "run_name": run.run_name,
        "status": run.status,
        "stage": run.stage,
        "started_at": datetime.fromisoformat(run.started_at) if run.started_at else None,
        "git_commit": run.git_commit,
        "git_dirty": None if run.git_dirty is None else run.git_dirty == "true",
        "dvc_lock_md5": run.dvc_lock_md5,
        "parameters": {k: _parse_param(v) for k, v in run.parameters.items()},
        "metrics": run.metrics,
        "mlflow_url": ui,
        "notebook": {
            "path": run.notebook,
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
