"""Lineage that resolves: model version -> run -> executed notebook -> data hashes -> upstream stage runs.

MLflow alone cannot say which data a model came from (mlflow #867, #2173). Every run the executor records
carries tags `jobrunner.data.input.<path>` / `jobrunner.data.output.<path>` = DVC md5, plus the git commit,
the dirty flag and the dvc.lock digest. A model version names its source run; that run's input hashes are
matched against the output hashes of earlier runs, which gives the stage that produced each input, and so
on up to the raw data. Where a project checkout is at hand, each hash is also compared with its dvc.lock,
so the user sees whether `dvc pull`/`dvc checkout` at that commit restores exactly that data.

    trace("breast-cancer-classifier@champion", client=MlflowClient(uri)) -> Lineage
    render(lineage) -> text;  lineage.as_dict() -> JSON-ready
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from jobrunner.errors import JobrunnerError
from jobrunner.tags import (
    DATA_INPUT_PREFIX,
    DATA_OUTPUT_PREFIX,
    DVC_LOCK_MD5_TAG,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    NOTEBOOK_TAG,
    OUTCOME_TAG,
    STAGE_TAG,
)

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

MAX_DEPTH = 20
# MLflow's own tag: the commit of a run jobrunner did not record
MLFLOW_GIT_COMMIT_TAG = "mlflow.source.git.commit"
log = logging.getLogger(__name__)


class LineageError(JobrunnerError):
    """The model reference is malformed or names nothing in the registry."""


class LineageNotFound(LineageError):
    """No such registered model, version or alias."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


_REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+?)(?:@(?P<alias>[\w.-]+)|/(?P<version>\d+))$")


def parse_ref(text: str) -> ModelRef:
    """`name@alias`, `name/version` (an optional `models:/` prefix is accepted)."""
    match = _REF.match(text.strip())
    if not match:
        raise LineageError(
            f"cannot read model reference {text!r}: use MODEL_NAME@ALIAS (e.g. my-model@champion) "
            "or MODEL_NAME/VERSION (e.g. my-model/3)"
        )
    return ModelRef(match["name"], match["alias"], match["version"])


@dataclass
class DataRef:
    path: str
    md5: str | None
    dvc_lock_md5: str | None = None  # the hash of this path in the project's dvc.lock, if it lists it
    produced_by: StageRun | None = None

    @property
    def matches_dvc_lock(self) -> bool | None:
        return None if self.dvc_lock_md5 is None else self.dvc_lock_md5 == self.md5

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "md5": self.md5,
            "dvc_lock_md5": self.dvc_lock_md5,
            "matches_dvc_lock": self.matches_dvc_lock,
            "produced_by": self.produced_by.as_dict() if self.produced_by else None,
        }


@dataclass
class StageRun:
    run_id: str
    experiment_id: str
    run_name: str | None
    stage: str | None
    notebook: str | None
    status: str
    outcome: str | None
    started_at: str | None
    git_commit: str | None
    git_dirty: str | None
    dvc_lock_md5: str | None
    parameters: dict[str, str]
    executed_notebooks: list[str]  # runs:/<id>/notebook/<file> URIs
    inputs: list[DataRef] = field(default_factory=list)
    outputs: list[DataRef] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # the run's last values (serve shows them)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "stage": self.stage,
            "notebook": self.notebook,
            "status": self.status,
            "outcome": self.outcome,
            "started_at": self.started_at,
            "git": {"commit": self.git_commit, "dirty": self.git_dirty},
            "dvc_lock_md5": self.dvc_lock_md5,
            "parameters": self.parameters,
            "executed_notebooks": self.executed_notebooks,
            "inputs": [d.as_dict() for d in self.inputs],
            "outputs": [d.as_dict() for d in self.outputs],
        }


@dataclass
class Lineage:
    ref: str
    model_name: str
    version: str
    aliases: list[str]
    model_source: str | None
    tracking_uri: str
    run: StageRun | None
    evaluated_by: list[str]  # runs that registered/promoted this version (tag promotion.version)

    def stages(self) -> list[StageRun]:
        """Every run in the lineage, the model's run first, each once."""
        seen: dict[str, StageRun] = {}
        todo = [self.run] if self.run else []
        while todo:
            run = todo.pop(0)
            if run.run_id in seen:
                continue
            seen[run.run_id] = run
            todo.extend(d.produced_by for d in run.inputs if d.produced_by)
        return list(seen.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": {
                "ref": self.ref,
                "name": self.model_name,
                "version": self.version,
                "aliases": self.aliases,
                "source": self.model_source,
            },
            "tracking_uri": self.tracking_uri,
            "evaluated_by": self.evaluated_by,
            "run": self.run.as_dict() if self.run else None,
        }


# -- walking -----------------------------------------------------------------------------------------------
def read_dvc_lock(project_dir: Path | None) -> dict[str, str]:
    """path -> md5 of every dep and out in dvc.lock (empty when there is none)."""
    lock = project_dir / "dvc.lock" if project_dir else None
    if lock is None or not lock.is_file():
        return {}
    data = yaml.safe_load(lock.read_text()) or {}
    hashes: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
            if entry.get("md5"):
                hashes[str(entry["path"])] = str(entry["md5"])
    return hashes


class _Walker:
    def __init__(self, client: MlflowClient, lock: dict[str, str], max_depth: int):
        self.client = client
        self.lock = lock
        self.max_depth = max_depth
        self.cache: dict[str, StageRun] = {}

    def stage_run(self, run_id: str, depth: int = 0) -> StageRun:
        if run_id in self.cache:  # shared ancestors (and cycles) are built once
            return self.cache[run_id]
        run = self.client.get_run(run_id)
        tags = run.data.tags
        result = StageRun(
            run_id=run_id,
            experiment_id=run.info.experiment_id,
            run_name=tags.get("mlflow.runName") or getattr(run.info, "run_name", None),
            stage=tags.get(STAGE_TAG),
            notebook=tags.get(NOTEBOOK_TAG) or tags.get("mlflow.source.name"),
            status=run.info.status,
            outcome=tags.get(OUTCOME_TAG),
            started_at=_iso(run.info.start_time),
            git_commit=tags.get(GIT_COMMIT_TAG) or tags.get(MLFLOW_GIT_COMMIT_TAG),
            git_dirty=tags.get(GIT_DIRTY_TAG),
            dvc_lock_md5=tags.get(DVC_LOCK_MD5_TAG),
            parameters=dict(sorted(run.data.params.items())),
            executed_notebooks=self._notebooks(run_id),
            inputs=self._refs(tags, DATA_INPUT_PREFIX),
            outputs=self._refs(tags, DATA_OUTPUT_PREFIX),
            metrics=dict(run.data.metrics),
        )
        self.cache[run_id] = result
        if depth < self.max_depth:
            for data in result.inputs:
                producer = self.producer(run, data) if data.md5 else None
                data.produced_by = self.stage_run(producer, depth + 1) if producer else None
        return result

    def _refs(self, tags: dict[str, str], prefix: str) -> list[DataRef]:
        refs = []
        for key in sorted(k for k in tags if k.startswith(prefix)):
            path = key[len(prefix) :]
            md5 = tags[key] if tags[key] != "missing" else None
            refs.append(DataRef(path, md5, self.lock.get(path)))
        return refs

    def _notebooks(self, run_id: str) -> list[str]:
        try:
            files = self.client.list_artifacts(run_id, "notebook")
        except Exception as exc:  # noqa: BLE001 - a run without artifacts still has lineage
            log.warning("lineage: artifacts of run %s cannot be listed: %s", run_id, exc)
            return []
        return [f"runs:/{run_id}/{f.path}" for f in files if not f.is_dir]

    def producer(self, consumer: Run, data: DataRef) -> str | None:
        """The latest successful run that wrote `data.path` with this md5 before `consumer` started."""
        key = f"{DATA_OUTPUT_PREFIX}{data.path}".replace("`", "")
        runs = self.client.search_runs(
            [consumer.info.experiment_id],
            filter_string=f"tags.`{key}` = '{data.md5}'",
            max_results=50,
            order_by=["attributes.start_time DESC"],
        )
        for run in runs:
            if run.info.run_id == consumer.info.run_id:
                continue
            if run.info.status != "FINISHED":
                continue
            if (
                run.info.start_time
                and consumer.info.start_time
                and run.info.start_time > consumer.info.start_time
            ):
                continue
            # RunInfo.run_id is a str behind MLflow's untyped `searchable_attribute` decorator
            return cast(str, run.info.run_id)
        return None


def _iso(millis: int | None) -> str | None:
    return datetime.fromtimestamp(millis / 1000, UTC).isoformat() if millis else None


def trace(
    ref: str | ModelRef,
    *,
    client: MlflowClient,
    tracking_uri: str = "",
    project_dir: Path | None = None,
    max_depth: int = MAX_DEPTH,
) -> Lineage:
    """Resolve `ref` in the registry and walk its lineage. Raises LineageNotFound / LineageError."""
    model = parse_ref(ref) if isinstance(ref, str) else ref
    version = find_version(client, model)
    run_id = version.run_id or (version.tags or {}).get("source_run_id")
    walker = _Walker(client, read_dvc_lock(project_dir), max_depth)
    run = walker.stage_run(run_id) if run_id else None
    evaluated = (
        client.search_runs(
            [run.experiment_id],
            filter_string=f"tags.`promotion.version` = '{version.version}'",
            max_results=10,
        )
        if run
        else []
    )
    return Lineage(
        ref=str(model),
        model_name=model.name,
        version=str(version.version),
        aliases=list(getattr(version, "aliases", []) or []),
        model_source=version.source,
        tracking_uri=tracking_uri,
        run=run,
        evaluated_by=[r.info.run_id for r in evaluated],
    )


def read_run(client: MlflowClient, run_id: str, *, project_dir: Path | None = None) -> StageRun:
    """The lineage record of one run (tags, parameters, metrics, executed notebooks, data hashes), without
    walking to the runs that produced its inputs (`inputs[*].produced_by` stay None). serve's lineage
    answers are built from it."""
    return _Walker(client, read_dvc_lock(project_dir), max_depth=0).stage_run(run_id)


def find_version(client: MlflowClient, model: ModelRef) -> ModelVersion:
    """The registry's ModelVersion for `model`; LineageNotFound (naming what exists) or LineageError."""
    from mlflow.exceptions import MlflowException

    try:
        if model.alias:
            return client.get_model_version_by_alias(model.name, model.alias)
        if model.version is None:  # parse_ref always sets one of the two
            raise LineageError(f"model reference {model.name!r} names neither an alias nor a version")
        return client.get_model_version(model.name, model.version)
    except MlflowException as exc:
        if (
            "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", ""))
            or "not found" in str(exc).lower()
        ):
            raise LineageNotFound(_not_found(client, model)) from exc
        raise LineageError(f"cannot resolve {model} in the model registry: {exc}") from exc


def _not_found(client: MlflowClient, model: ModelRef) -> str:
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(model.name)
    except MlflowException:
        names = [m.name for m in client.search_registered_models(max_results=20)]
        known = f"registered models: {', '.join(names)}" if names else "the registry is empty"
        return f"no registered model named '{model.name}' ({known})"
    if model.alias:
        aliases = sorted(getattr(registered, "aliases", {}) or {})
        return (
            f"model '{model.name}' has no alias '{model.alias}' "
            f"(aliases: {', '.join(aliases) if aliases else 'none'})"
        )
    return f"model '{model.name}' has no version {model.version}"


# -- rendering ---------------------------------------------------------------------------------------------
def render(lineage: Lineage) -> str:
    aliases = f" (@{', @'.join(lineage.aliases)})" if lineage.aliases else ""
    lines = [
        f"model {lineage.model_name} version {lineage.version}{aliases}",
        f"  source: {lineage.model_source}",
        f"  tracking: {lineage.tracking_uri}",
    ]
    if lineage.evaluated_by:
        lines.append(f"  evaluated/promoted by run(s): {', '.join(lineage.evaluated_by)}")
    if lineage.run is None:
        lines.append("  (the version names no source run: lineage stops here)")
        return "\n".join(lines)
    _render_run(lineage.run, lines, indent="  ", seen=set())
    return "\n".join(lines)


def _render_run(run: StageRun, lines: list[str], indent: str, seen: set[str]) -> None:
    git = (run.git_commit or "unknown")[:12] + (" (dirty)" if run.git_dirty == "true" else "")
    lines.append(
        f"{indent}run {run.run_id}  stage={run.stage or '-'}  {run.outcome or run.status}  "
        f"started {run.started_at or '?'}"
    )
    if run.run_id in seen:
        lines.append(f"{indent}  (shown above)")
        return
    seen.add(run.run_id)
    lines.append(f"{indent}  notebook: {run.notebook or '-'}  git {git}  dvc.lock {run.dvc_lock_md5 or '-'}")
    for uri in run.executed_notebooks:
        lines.append(f"{indent}  executed notebook: {uri}")
    if run.parameters:
        shown = ", ".join(f"{k}={v}" for k, v in run.parameters.items())
        lines.append(f"{indent}  parameters: {shown}")
    for data in run.outputs:
        lines.append(f"{indent}  output {data.path}  md5 {data.md5}{_lock_note(data)}")
    for data in run.inputs:
        lines.append(f"{indent}  input  {data.path}  md5 {data.md5}{_lock_note(data)}")
        if data.produced_by:
            lines.append(f"{indent}    produced by:")
            _render_run(data.produced_by, lines, indent + "    ", seen)
        elif data.md5:
            lines.append(f"{indent}    (no recorded run wrote this hash: external or pre-platform data)")


def _lock_note(data: DataRef) -> str:
    if data.matches_dvc_lock is None:
        return ""
    return "  = dvc.lock" if data.matches_dvc_lock else f"  (dvc.lock now has {data.dvc_lock_md5})"
