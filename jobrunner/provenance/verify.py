"""`jobrunner verify RUN`: re-execute a recorded run and say whether it reproduces.

The re-execution uses what was recorded, not what the checkout holds now: the code cells of the executed
notebook stored with the run, the typed parameters from its lineage.json, and the input data the run
hashed. An input whose file in the checkout no longer has the recorded DVC md5 (or is missing, as in a
worker without the data) is fetched by that md5 from the DVC cache or the default DVC remote
(jobrunner/provenance/verify_data.py); when neither has it, verification is refused (`dvc checkout` the data
of that commit, or `dvc push` it). It runs in a scratch copy of the project, with every output parameter
pointed into the scratch folder (the notebook's outputs never overwrite the workspace, a job's stored outputs
or a path outside the project), is recorded as a new MLflow run tagged `jobrunner.verifies=<run>`, and the
original run gets `jobrunner.verified_by` and `jobrunner.verification` (reproduced | not_reproduced).

`jobrunner verify --queue` and POST /v1/runs/{id}/verify run the same on a worker
(jobrunner/worker/verify.py).

Reproduced means: the same outcome, every metric (timing excepted) equal within `rtol`, every declared
output with the recorded DVC md5, and every code cell's text outputs the same (numbers rounded to the
digits `rtol` keeps; jobrunner/execution/cell_outputs.py).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobrunner.config import Settings
from jobrunner.errors import JobrunnerError
from jobrunner.provenance.diff import TIMING_METRICS, RunNotFound, resolve
from jobrunner.tags import (
    GIT_COMMIT_TAG,
    NOTEBOOK_TAG,
    OUTCOME_TAG,
    OUTPUTS_FOLDER_TAG,
    OUTPUTS_STORED_PREFIX,
    VERIFICATION_TAG,
    VERIFIED_BY_TAG,
    VERIFIES_TAG,
)

__all__ = ["CannotVerify", "Verification", "RunNotFound", "verify_run"]
log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class CannotVerify(JobrunnerError):
    """The run cannot be re-executed as recorded (missing notebook or lineage, changed input data)."""


@dataclass
class Verification:
    run_id: str
    new_run_id: str | None
    notebook: str
    reproduced: bool
    outcome: tuple[str | None, str | None]
    metrics: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # all compared
    mismatched: list[str] = field(default_factory=list)  # metric names
    rtol: float = 1e-6
    outputs: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # path -> md5 then, now
    mismatched_outputs: list[str] = field(default_factory=list)
    volatile_outputs: list[str] = field(default_factory=list)  # other md5, same content but MLmodel metadata
    cells_compared: int = 0
    cells: list[dict[str, Any]] = field(default_factory=list)  # cells whose text outputs differ
    fetched: dict[str, str] = field(default_factory=dict)  # input path -> where its recorded data came from
    model_versions: list[str] = field(default_factory=list)  # tagged reproduced=true|false

    @property
    def differences(self) -> list[str]:
        """One line per difference, most telling first: outcome, metrics, output artifacts, cells."""
        out = []
        if self.outcome[0] != self.outcome[1]:
            out.append(f"outcome: {self.outcome[0]} -> {self.outcome[1]}")
        out += [
            f"metric {k}: {_num(self.metrics[k][0])} -> {_num(self.metrics[k][1])}" for k in self.mismatched
        ]
        out += [
            f"output {k}: md5 {self.outputs[k][0] or '(absent)'} -> {self.outputs[k][1] or '(absent)'}"
            for k in self.mismatched_outputs
        ]
        for c in self.cells:
            out.append(f"{c['cell']}: text output {_snippet(c['a'])} -> {_snippet(c['b'])}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "verification_run_id": self.new_run_id,
            "notebook": self.notebook,
            "reproduced": self.reproduced,
            "differences": self.differences,
            "outcome": {"recorded": self.outcome[0], "now": self.outcome[1]},
            "metrics": {k: {"recorded": a, "now": b} for k, (a, b) in self.metrics.items()},
            "mismatched": self.mismatched,
            "outputs": {k: {"recorded": a, "now": b} for k, (a, b) in self.outputs.items()},
            "mismatched_outputs": self.mismatched_outputs,
            "volatile_outputs": self.volatile_outputs,
            "cells_compared": self.cells_compared,
            "cells": self.cells,
            "fetched_inputs": self.fetched,
            "model_versions": self.model_versions,
            "rtol": self.rtol,
        }

    def render(self) -> str:
        verdict = "REPRODUCED" if self.reproduced else "NOT REPRODUCED"
        lines = [f"{verdict}: run {self.run_id} ({self.notebook}) re-executed as run {self.new_run_id}"]
        if self.outcome[0] != self.outcome[1]:
            lines.append(f"  outcome: {self.outcome[0]} -> {self.outcome[1]}")
        for k, (a, b) in self.metrics.items():
            mark = "  differs" if k in self.mismatched else ""
            lines.append(f"  {k}: {_num(a)} -> {_num(b)}{mark}")
        if not self.metrics:
            lines.append("  (the run recorded no metrics: only the outcome was compared)")
        for k, (md5_a, md5_b) in self.outputs.items():
            mark = (
                "  differs"
                if k in self.mismatched_outputs
                else "  (same content; only MLflow's save time and ids differ)"
                if k in self.volatile_outputs
                else ""
            )
            lines.append(f"  output {k}: md5 {md5_a or '(absent)'} -> {md5_b or '(absent)'}{mark}")
        for c in self.cells:
            lines.append(f"  {c['cell']}: text output differs: {_snippet(c['a'])} -> {_snippet(c['b'])}")
        if self.cells_compared:
            lines.append(
                f"  text outputs of {self.cells_compared} code cell(s) compared, {len(self.cells)} differ"
            )
        for path, source in self.fetched.items():
            lines.append(f"  input {path}: the recorded data, fetched from the {source}")
        for version in self.model_versions:
            lines.append(f"  model version {version}: tagged reproduced={str(self.reproduced).lower()}")
        lines.append(f"  metrics and numbers in text outputs compared with relative tolerance {self.rtol:g}")
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "(absent)" if value is None else f"{value:.10g}"


def _snippet(text: str | None, limit: int = 60) -> str:
    if text is None:
        return "(no cell)"
    one = " ".join(text.split())
    return repr(one if len(one) <= limit else one[:limit] + "...")


def verify_run(
    ref: str,
    settings: Settings,
    *,
    rtol: float = 1e-6,
    client: Any = None,
    output_path: Path | None = None,
    tags: dict[str, str] | None = None,
    **execution: Any,
) -> Verification:
    """Re-execute the run behind `ref` as recorded and compare; raises RunNotFound / CannotVerify.

    `output_path` keeps the executed notebook (a verification job stores it); `tags` go to the new MLflow
    run; `execution` are further options of executor.execute (cancel, timeout, on_progress, on_output,
    kernel_name). The report (verification.json, verification.html) is logged to the new run and every
    registered model version the run produced is tagged reproduced=true|false
    (jobrunner/provenance/verify_report.py).
    """
    from mlflow.tracking import MlflowClient

    from jobrunner.execution.executor import environment_tags, execute
    from jobrunner.execution.hashing import hash_path

    client = client or MlflowClient(tracking_uri=settings.mlflow_tracking_uri or "")
    run_id = resolve(ref, client)
    try:
        run = client.get_run(run_id)
    except Exception as exc:
        raise RunNotFound(f"no MLflow run {run_id}: {getattr(exc, 'message', exc)}") from exc
    tags_then = run.data.tags
    notebook = tags_then.get(NOTEBOOK_TAG)
    if not notebook:
        raise CannotVerify(f"run {run_id} was not recorded by jobrunner (no {NOTEBOOK_TAG} tag)")

    project = settings.project_dir
    with tempfile.TemporaryDirectory(prefix="jobrunner-verify-") as tmp:
        lineage, executed = _recorded(client, run_id, Path(tmp))
        # the inputs must be the recorded data: the checkout's, or fetched by md5 from DVC
        inputs = [i for i in lineage.get("inputs", []) if i.get("md5")]
        stale = [i for i in inputs if hash_path(Path(i["path"]), project).md5 != i["md5"]]
        scratch = Path(tmp) / "project"
        _scratch_project(project, scratch, [i["path"] for i in inputs if i not in stale], notebook, executed)
        fetched = {i["path"]: _fetch(i, project, scratch, run_id, tags_then) for i in stale}
        parameters = _without_outputs(scratch / notebook, lineage.get("parameters", {}))
        result = execute(
            notebook,
            parameters,
            output_path=output_path,
            settings=settings.model_copy(update={"project_dir": scratch, "runs_dir": scratch / ".runs"}),
            inputs=[i["path"] for i in inputs],
            outputs_dir=scratch / ".outputs",
            # the environment is the worker's, not the scratch copy's (which holds no lock file or packages)
            tags={**environment_tags(project), **(tags or {}), VERIFIES_TAG: run_id},
            run_name=f"verify-{run.info.run_name or run_id[:8]}",
            **execution,
        )
        then_outputs = {o["path"]: o.get("md5") for o in lineage.get("outputs", [])}
        now_outputs = {h.path: h.md5 for h in result.outputs}
        outputs = {
            k: (then_outputs.get(k), now_outputs.get(k)) for k in sorted(set(then_outputs) | set(now_outputs))
        }
        volatile = _volatile_only(outputs, result, project, tags_then, Path(tmp))
        recorded_folder = tags_then.get(OUTPUTS_FOLDER_TAG)
        then_cells, now_cells = _cells(
            executed,
            result.output_path,
            rtol,
            [
                [
                    (str(project.resolve()), "<project>"),
                    (str(project), "<project>"),
                    (recorded_folder or "", "<outputs>"),
                    (run_id, "<run>"),
                ],
                [
                    (str(scratch.resolve()), "<project>"),
                    (str(scratch), "<project>"),
                    (result.run_id or "", "<run>"),
                    (str((scratch / ".outputs").resolve()), "<outputs>" if recorded_folder else "<project>"),
                ],
            ],
        )
    recorded_outcome = tags_then.get(OUTCOME_TAG)
    rerun = client.get_run(result.run_id) if result.run_id else None
    new_metrics = dict(rerun.data.metrics) if rerun else dict(result.metrics)
    old_metrics = dict(run.data.metrics)
    names = sorted((set(old_metrics) | set(new_metrics)) - TIMING_METRICS)
    compared = {k: (old_metrics.get(k), new_metrics.get(k)) for k in names}
    mismatched = [k for k, (a, b) in compared.items() if not _close(a, b, rtol)]
    mismatched_outputs = [k for k, (a, b) in outputs.items() if a != b and k not in volatile]
    from jobrunner.execution.cell_outputs import changed_cells

    cells = changed_cells(then_cells, now_cells) if then_cells is not None and now_cells is not None else []
    verification = Verification(
        run_id=run_id,
        new_run_id=result.run_id,
        notebook=notebook,
        reproduced=False,
        outcome=(recorded_outcome, result.status),
        metrics=compared,
        mismatched=mismatched,
        rtol=rtol,
        outputs=outputs,
        mismatched_outputs=mismatched_outputs,
        volatile_outputs=volatile,
        cells_compared=len(then_cells or []),
        cells=cells,
        fetched={k: v for k, v in fetched.items() if v},
    )
    verification.reproduced = not verification.differences
    if result.run_id and result.status != "cancelled":  # a stopped re-execution proves nothing either way
        from jobrunner.provenance.verify_report import publish

        client.set_tag(run_id, VERIFIED_BY_TAG, result.run_id)
        client.set_tag(
            run_id, VERIFICATION_TAG, "reproduced" if verification.reproduced else "not_reproduced"
        )
        publish(verification, client)
    return verification


def _fetch(item: dict[str, Any], project: Path, scratch: Path, run_id: str, tags: dict[str, str]) -> str:
    """The recorded data of a changed or missing input, from the DVC cache or remote into the scratch copy."""
    from jobrunner.execution.hashing import hash_path
    from jobrunner.provenance.verify_data import fetch_by_md5

    path, md5 = item["path"], item["md5"]
    if not Path(path).is_absolute():
        source = fetch_by_md5(project, md5, scratch / path)
        if source:
            return source
    now = hash_path(Path(path), project)
    state = f"md5 now {now.md5}" if now.md5 else "it is missing"
    raise CannotVerify(
        f"input {path} is not the data run {run_id} read ({state}, recorded {md5}), and neither the DVC "
        f"cache nor the DVC remote has md5 {md5}: check out that data first (e.g. `git checkout "
        f"{tags.get(GIT_COMMIT_TAG, '<commit>')[:12]} && dvc checkout`), or `dvc push` it"
    )


def _volatile_only(
    outputs: dict[str, tuple[str | None, str | None]],
    result: Any,
    project: Path,
    tags: dict[str, str],
    tmp: Path,
) -> list[str]:
    """Outputs whose md5 differs but whose content is the recorded one except for MLflow model metadata
    (jobrunner/provenance/verify_outputs.py)."""
    from jobrunner.provenance.verify_outputs import recorded_copy, stable_digest

    where = {t.path: t.location for t in result.output_targets}
    same = []
    for i, (path, (then, now)) in enumerate(outputs.items()):
        location = where.get(path)
        if then is None or now is None or then == now or location is None or not location.exists():
            continue
        recorded = recorded_copy(
            path, then, project, tags.get(f"{OUTPUTS_STORED_PREFIX}{path}"[:250]), tmp / "recorded" / str(i)
        )
        if recorded is not None and stable_digest(recorded) == stable_digest(location):
            same.append(path)
    return same


def _cells(then: Path, now: Path, rtol: float, folders: list[list[tuple[str, str]]]) -> tuple[Any, Any]:
    """The code cells (text outputs normalised) of the recorded and the new executed notebook."""
    from jobrunner.execution import notebooks
    from jobrunner.execution.cell_outputs import cell_outputs

    try:
        a = cell_outputs(notebooks.read(then, as_version=4), rtol=rtol, folders=folders[0])
        b = cell_outputs(notebooks.read(now, as_version=4), rtol=rtol, folders=folders[1])
    except (OSError, ValueError) as exc:  # the new notebook was not written (the kernel never started)
        log.warning("text outputs not compared: %s", exc)
        return None, None
    return a, b


def _without_outputs(notebook: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """The recorded parameters minus the output parameters: where the run wrote is not what it computed,
    and the re-execution writes into its scratch folder."""
    from jobrunner.execution.params import read_schema

    outputs = set(read_schema(notebook).outputs)
    return {k: v for k, v in parameters.items() if k not in outputs}


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def _recorded(client: MlflowClient, run_id: str, tmp: Path) -> tuple[dict[str, Any], Path]:
    """The run's lineage.json (typed parameters, input hashes) and its executed notebook."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        lineage = json.loads(Path(client.download_artifacts(run_id, "lineage.json", str(tmp))).read_text())
    except Exception as exc:
        raise CannotVerify(
            f"run {run_id} has no lineage.json artifact: it was not recorded by jobrunner"
        ) from exc
    try:
        names = [f.path for f in client.list_artifacts(run_id, "notebook") if f.path.endswith(".ipynb")]
        executed = Path(client.download_artifacts(run_id, names[0], str(tmp)))
    except Exception as exc:
        raise CannotVerify(f"run {run_id} has no executed notebook among its artifacts") from exc
    return lineage, executed


def _scratch_project(project: Path, scratch: Path, inputs: list[str], notebook: str, executed: Path) -> None:
    """A copy of the project with the recorded code as the notebook and the recorded inputs."""
    from jobrunner.execution import notebooks

    scratch.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        if (project / name).is_file():
            shutil.copy2(project / name, scratch / name)
    if not (scratch / "dvc.yaml").exists():
        (scratch / "dvc.yaml").write_text("stages: {}\n")  # marks the project root for project_path()
    for rel in inputs:
        if Path(rel).is_absolute():  # outside the project: read where it is
            continue
        src, dst = project / rel, scratch / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
    nb = notebooks.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.get("metadata", {}).pop("papermill", None)
    target = scratch / notebook
    target.parent.mkdir(parents=True, exist_ok=True)
    notebooks.write(nb, target)
