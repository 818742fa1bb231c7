"""`jobrunner diff A B`: what differs between two recorded executions.

A and B are MLflow run ids, or registered model versions (`name@alias`, `name/version`) standing for the
run that produced them. The comparison covers what the executor records: parameters, metrics, the git
commit and dirty flag, the DVC md5 of every input and output, the notebook, outcome and duration, the
code cells of the two executed notebooks (the injected parameters cell left out), their text outputs cell
by cell and their images by hash (jobrunner/execution/cell_outputs.py: numbers rounded to 6 significant
digits), and the environment digest (`jobrunner.env.*` tags: the lock file's md5, the jobrunner version and
the md5 of the project's own packages, as in the run-cache key). `RunDiff.changes` lists every difference
most relevant first: outcome, notebook, metrics, parameters, data, code, text outputs, images,
environment, git. GET /v1/runs/{a}/diff/{b} answers `as_dict()`; `render_html` is its page.
"""

from __future__ import annotations

import difflib
import json
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobrunner.errors import JobrunnerError
from jobrunner.tags import (
    DATA_INPUT_PREFIX,
    DATA_OUTPUT_PREFIX,
    ENV_PREFIX,
    GIT_COMMIT_TAG,
    GIT_DIRTY_TAG,
    NOTEBOOK_TAG,
    OUTCOME_TAG,
    OUTPUTS_FOLDER_TAG,
)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
TIMING_METRICS = frozenset({"duration_s"})  # differs on every run: shown, never counted as a difference

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class RunNotFound(JobrunnerError):
    """No MLflow run (or model version) answers to the reference."""


@dataclass
class RunSide:
    ref: str
    run_id: str
    notebook: str | None
    outcome: str | None
    started: str | None
    params: dict[str, str]
    metrics: dict[str, float]
    commit: str | None
    dirty: str | None
    data: dict[str, str]  # "input <path>" / "output <path>" -> md5
    code: list[str] | None  # code cells of the executed notebook, None when it was not recorded
    defaults: dict[str, str] = field(default_factory=dict)  # its parameters cell, as MLflow param text
    cells: list[Any] | None = None  # CellOutputs of the executed notebook, None when it was not recorded
    environment: dict[str, str] = field(default_factory=dict)  # the jobrunner.env.* tags

    def param(self, name: str) -> str | None:
        """The value the run used: recorded when passed, else the notebook's default."""
        return self.params.get(name, self.defaults.get(name))


@dataclass
class RunDiff:
    a: RunSide
    b: RunSide
    params: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    metrics: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    timing: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    data: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    code: list[str] = field(default_factory=list)  # unified diff lines of the code cells
    code_compared: bool = False
    text_outputs: list[dict[str, Any]] = field(default_factory=list)  # cells whose text outputs differ
    images: list[dict[str, Any]] = field(default_factory=list)  # cells whose images differ by hash
    environment: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def same_code_commit(self) -> bool:
        return (self.a.commit, self.a.dirty) == (self.b.commit, self.b.dirty)

    @property
    def identical(self) -> bool:
        """Same parameters, data, code (commit and cells), notebook and metrics."""
        return (
            not (
                self.params
                or self.metrics
                or self.data
                or self.code
                or self.text_outputs
                or self.images
                or self.environment
            )
            and self.same_code_commit
            and self.a.notebook == self.b.notebook
        )

    @property
    def changes(self) -> list[dict[str, Any]]:
        """Every difference, most relevant first: what came out (outcome, metrics), what went in
        (parameters, data, code), what the cells showed, then where it ran (environment, git)."""
        out: list[dict[str, Any]] = []

        def add(kind: str, name: str, a: Any, b: Any) -> None:
            out.append({"kind": kind, "name": name, "a": a, "b": b})

        if self.a.outcome != self.b.outcome:
            add("outcome", "outcome", self.a.outcome, self.b.outcome)
        if self.a.notebook != self.b.notebook:
            add("notebook", "notebook", self.a.notebook, self.b.notebook)
        for k, (ma, mb) in self.metrics.items():
            add("metric", k, ma, mb)
        for k, (pa, pb) in self.params.items():
            add("parameter", k, pa, pb)
        for k, (da, db) in self.data.items():
            add("data", k, da, db)
        if self.code:
            changed = [line for line in self.code if line[:1] in "+-" and line[:3] not in ("+++", "---")]
            add(
                "code",
                "code cells",
                "\n".join(x for x in changed if x.startswith("-")),
                "\n".join(x for x in changed if x.startswith("+")),
            )
        for c in self.text_outputs:
            add("text_output", c["cell"], c["a"], c["b"])
        for c in self.images:
            add("image", c["cell"], c["a"], c["b"])
        for k, (ea, eb) in self.environment.items():
            add("environment", k, ea, eb)
        if not self.same_code_commit:
            add(
                "git",
                "commit",
                f"{self.a.commit} (dirty {self.a.dirty})",
                f"{self.b.commit} (dirty {self.b.dirty})",
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        def side(s: RunSide) -> dict[str, Any]:
            return {
                "ref": s.ref,
                "run_id": s.run_id,
                "notebook": s.notebook,
                "outcome": s.outcome,
                "started": s.started,
                "git_commit": s.commit,
                "git_dirty": s.dirty,
                "environment": s.environment,
            }

        return {
            "identical": self.identical,
            "changes": self.changes,
            "a": side(self.a),
            "b": side(self.b),
            "parameters": {k: {"a": a, "b": b} for k, (a, b) in self.params.items()},
            "metrics": {k: {"a": a, "b": b} for k, (a, b) in self.metrics.items()},
            "timing": {k: {"a": a, "b": b} for k, (a, b) in self.timing.items()},
            "data": {k: {"a": a, "b": b} for k, (a, b) in self.data.items()},
            "code_compared": self.code_compared,
            "code_diff": self.code,
            "text_outputs": self.text_outputs,
            "images": self.images,
            "environment": {k: {"a": a, "b": b} for k, (a, b) in self.environment.items()},
        }


def resolve(ref: str, client: MlflowClient) -> str:
    """The run id behind `ref` (a run id, `name@alias` or `name/version`)."""
    from jobrunner.provenance.lineage import LineageError, find_version, parse_ref

    if RUN_ID.match(ref.strip()):
        return ref.strip()
    try:
        model = parse_ref(ref)
    except LineageError as exc:
        raise RunNotFound(f"{ref!r} is neither an MLflow run id (32 hex digits) nor a model reference: {exc}")
    try:
        version = find_version(client, model)
    except LineageError as exc:  # LineageNotFound included: it names the versions and aliases that exist
        raise RunNotFound(f"no model version {model} in the registry: {exc}") from exc
    run_id = version.run_id or (version.tags or {}).get("source_run_id")
    if not run_id:
        raise RunNotFound(f"model version {model} records no run that produced it")
    return str(run_id)


def load_side(ref: str, client: MlflowClient) -> RunSide:
    from mlflow.exceptions import MlflowException

    run_id = resolve(ref, client)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise RunNotFound(f"no MLflow run {run_id}: {exc.message}") from exc
    tags = run.data.tags
    data = {}
    environment = {k[len(ENV_PREFIX) :]: v for k, v in tags.items() if k.startswith(ENV_PREFIX)}
    for key, md5 in tags.items():
        for kind, prefix in (("input", DATA_INPUT_PREFIX), ("output", DATA_OUTPUT_PREFIX)):
            if key.startswith(prefix):
                data[f"{kind} {key[len(prefix) :]}"] = md5
    started = datetime.fromtimestamp(run.info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return RunSide(
        ref=ref,
        run_id=run_id,
        notebook=tags.get(NOTEBOOK_TAG),
        outcome=tags.get(OUTCOME_TAG),
        started=started,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        commit=tags.get(GIT_COMMIT_TAG),
        dirty=tags.get(GIT_DIRTY_TAG),
        data=data,
        environment=environment,
        **_executed_notebook(client, run_id, tags.get(OUTPUTS_FOLDER_TAG)),
    )


def _executed_notebook(
    client: MlflowClient, run_id: str, outputs_folder: str | None = None
) -> dict[str, Any]:
    """From the executed notebook recorded with the run: its code cells (papermill's injected parameters
    left out: they are compared as parameters), their outputs and the defaults of its parameters cell."""
    import os

    from jobrunner.execution import notebooks
    from jobrunner.execution.cell_outputs import cell_outputs
    from jobrunner.execution.params import schema_from_notebook
    from jobrunner.execution.recording import flatten

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a CLI's output
    try:
        names = [f.path for f in client.list_artifacts(run_id, "notebook") if f.path.endswith(".ipynb")]
    except Exception:  # noqa: BLE001 - no artifacts (or an unreachable store): the code is not compared
        return {"code": None}
    if not names:
        return {"code": None}
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, names[0], tmp)
        nb = notebooks.read(local, as_version=4)
    try:
        defaults = flatten(schema_from_notebook(nb, names[0]).defaults)
    except JobrunnerError:  # no (or an unreadable) parameters cell: only recorded values are compared
        defaults = {}
    code = [
        c.source
        for c in nb.cells
        if c.cell_type == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ]
    cells = cell_outputs(nb, folders=[(outputs_folder or "", "<outputs>"), (run_id, "<run>")])
    return {"code": code, "defaults": defaults, "cells": cells}


def _changed(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def diff_runs(ref_a: str, ref_b: str, client: MlflowClient) -> RunDiff:
    a, b = load_side(ref_a, client), load_side(ref_b, client)
    result = RunDiff(a=a, b=b)
    names = sorted(set(a.params) | set(b.params))
    result.params = {k: (a.param(k), b.param(k)) for k in names if a.param(k) != b.param(k)}
    metrics_a = {k: v for k, v in a.metrics.items() if k not in TIMING_METRICS}
    metrics_b = {k: v for k, v in b.metrics.items() if k not in TIMING_METRICS}
    result.metrics = _changed(metrics_a, metrics_b)
    result.timing = {
        k: (a.metrics.get(k), b.metrics.get(k)) for k in TIMING_METRICS if k in a.metrics or k in b.metrics
    }
    result.data = _changed(a.data, b.data)
    if a.code is not None and b.code is not None:
        result.code_compared = True
        result.code = list(
            difflib.unified_diff(
                "\n\n".join(a.code).splitlines(),
                "\n\n".join(b.code).splitlines(),
                fromfile=f"a: {a.notebook} ({a.run_id[:8]})",
                tofile=f"b: {b.notebook} ({b.run_id[:8]})",
                lineterm="",
            )
        )
    if a.cells is not None and b.cells is not None:
        from jobrunner.execution.cell_outputs import changed_cells, changed_images

        result.text_outputs = changed_cells(a.cells, b.cells)
        result.images = changed_images(a.cells, b.cells)
    if a.environment and b.environment:  # runs recorded before the env tags compare as unknown, not changed
        result.environment = _changed(a.environment, b.environment)
    return result


def render(d: RunDiff) -> str:
    def head(tag: str, s: RunSide) -> str:
        commit = (
            f"git {s.commit[:10]}{' (dirty)' if s.dirty == 'true' else ''}" if s.commit else "no git commit"
        )
        ref = f" ({s.ref})" if s.ref != s.run_id else ""
        return f"{tag}: run {s.run_id}{ref} {s.notebook or '?'}, {s.outcome or '?'}, {s.started}, {commit}"

    lines = [head("a", d.a), head("b", d.b)]
    if d.identical:
        lines.append("no differences: same notebook, code, parameters, data and metrics")
    if d.a.notebook != d.b.notebook:
        lines.append(f"notebook: {d.a.notebook} -> {d.b.notebook}")
    if not d.same_code_commit:
        lines.append(f"git: {d.a.commit} (dirty {d.a.dirty}) -> {d.b.commit} (dirty {d.b.dirty})")
    for title, changes in (("parameters", d.params), ("data (DVC md5)", d.data)):
        if changes:
            lines.append(f"{title}:")
            for k, (a, b) in changes.items():
                default_a = _default(d.a, k) if title == "parameters" else ""
                default_b = _default(d.b, k) if title == "parameters" else ""
                lines.append(f"  {k}: {_show(a)}{default_a} -> {_show(b)}{default_b}")
    if d.metrics:
        lines.append("metrics:")
        for k, (ma, mb) in d.metrics.items():
            delta = f" ({mb - ma:+.4g})" if ma is not None and mb is not None else ""
            lines.append(f"  {k}: {_show(ma)} -> {_show(mb)}{delta}")
    for k, (ta, tb) in d.timing.items():
        lines.append(f"{k}: {_show(ta)} -> {_show(tb)} (timing, not compared)")
    if not d.code_compared:
        lines.append("code cells: not compared (an executed notebook is missing from a run's artifacts)")
    elif d.code:
        lines.append("code cells:")
        lines += [f"  {line}" for line in d.code]
    else:
        lines.append("code cells: identical")
    if d.text_outputs:
        lines.append("text outputs:")
        for c in d.text_outputs:
            lines.append(f"  {c['cell']}: {_show(_one_line(c['a']))} -> {_show(_one_line(c['b']))}")
    for c in d.images:
        lines.append(
            f"images of {c['cell']}: {', '.join(c['a']) or '(none)'} -> {', '.join(c['b']) or '(none)'}"
        )
    if d.environment:
        lines.append("environment:")
        lines += [f"  {k}: {_show(ea)} -> {_show(eb)}" for k, (ea, eb) in d.environment.items()]
    elif not (d.a.environment and d.b.environment):
        lines.append("environment: not compared (a run predates the environment tags)")
    return "\n".join(lines)


def _one_line(text: str | None, limit: int = 80) -> str | None:
    if text is None:
        return None
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit] + "..."


def _default(side: RunSide, name: str) -> str:
    return " (default)" if name not in side.params and name in side.defaults else ""


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value) if not isinstance(value, str) else value


def diff_json(d: RunDiff) -> str:
    return json.dumps(d.as_dict(), indent=2)
