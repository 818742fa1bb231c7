"""`jobrunner verify RUN`: re-execute a recorded run and say whether it reproduces.

The re-execution uses what was recorded, not what the checkout holds now: the code cells of the executed
notebook stored with the run, the typed parameters from its lineage.json, and the input data the run
hashed - which must still have the recorded DVC md5 (otherwise verification is refused: `dvc checkout`
the data of that commit first). It runs in a scratch copy of the project, with every output parameter
pointed into the scratch folder (the notebook's outputs never overwrite the workspace, a job's stored
outputs or a path outside the project), is recorded as a new MLflow run tagged `jobrunner.verifies=<run>`, and the
original run gets `jobrunner.verified_by` and `jobrunner.verification` (reproduced | not_reproduced).

Reproduced means: the same outcome, and every metric (timing excepted) equal within `rtol`.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunner.config import Settings
from jobrunner.errors import JobrunnerError
from jobrunner.recording import TAG_PREFIX
from jobrunner.rundiff import TIMING_METRICS, RunNotFound, resolve

__all__ = ["CannotVerify", "Verification", "RunNotFound", "verify_run"]


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
    mismatched: list[str] = field(default_factory=list)
    rtol: float = 1e-6

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "verification_run_id": self.new_run_id,
            "notebook": self.notebook,
            "reproduced": self.reproduced,
            "outcome": {"recorded": self.outcome[0], "now": self.outcome[1]},
            "metrics": {k: {"recorded": a, "now": b} for k, (a, b) in self.metrics.items()},
            "mismatched": self.mismatched,
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
        lines.append(f"  metrics compared with relative tolerance {self.rtol:g}")
        return "\n".join(lines)


def _num(value: float | None) -> str:
    return "(absent)" if value is None else f"{value:.10g}"


def verify_run(ref: str, settings: Settings, *, rtol: float = 1e-6, client: Any = None) -> Verification:
    """Re-execute the run behind `ref` as recorded and compare; raises RunNotFound / CannotVerify."""
    from mlflow.tracking import MlflowClient

    from jobrunner.executor import execute
    from jobrunner.lineage import hash_path

    client = client or MlflowClient(tracking_uri=settings.mlflow_tracking_uri or "")
    run_id = resolve(ref, client)
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MlflowException for an unknown id
        raise RunNotFound(f"no MLflow run {run_id}: {getattr(exc, 'message', exc)}") from exc
    tags = run.data.tags
    notebook = tags.get(f"{TAG_PREFIX}notebook")
    if not notebook:
        raise CannotVerify(f"run {run_id} was not recorded by jobrunner (no {TAG_PREFIX}notebook tag)")

    project = settings.project_dir
    with tempfile.TemporaryDirectory(prefix="jobrunner-verify-") as tmp:
        lineage, executed = _recorded(client, run_id, Path(tmp))
        # the inputs must be the recorded data
        inputs = [i for i in lineage.get("inputs", []) if i.get("md5")]
        for item in inputs:
            now = hash_path(Path(item["path"]), project)
            if now.md5 != item["md5"]:
                state = f"md5 now {now.md5}" if now.md5 else "it is missing"
                raise CannotVerify(
                    f"input {item['path']} is not the data run {run_id} read ({state}, recorded "
                    f"{item['md5']}): check out that data first (e.g. `git checkout "
                    f"{tags.get(f'{TAG_PREFIX}git.commit', '<commit>')[:12]} && dvc checkout`)"
                )
        scratch = Path(tmp) / "project"
        _scratch_project(project, scratch, [i["path"] for i in inputs], notebook, executed)
        parameters = _without_outputs(scratch / notebook, lineage.get("parameters", {}))
        result = execute(
            notebook,
            parameters,
            settings=settings.model_copy(update={"project_dir": scratch, "runs_dir": scratch / ".runs"}),
            inputs=[i["path"] for i in inputs],
            outputs_dir=scratch / ".outputs",
            tags={f"{TAG_PREFIX}verifies": run_id},
            run_name=f"verify-{run.info.run_name or run_id[:8]}",
        )
    recorded_outcome = tags.get(f"{TAG_PREFIX}outcome")
    rerun = client.get_run(result.run_id) if result.run_id else None
    new_metrics = dict(rerun.data.metrics) if rerun else dict(result.metrics)
    old_metrics = dict(run.data.metrics)
    names = sorted((set(old_metrics) | set(new_metrics)) - TIMING_METRICS)
    compared = {k: (old_metrics.get(k), new_metrics.get(k)) for k in names}
    mismatched = [k for k, (a, b) in compared.items() if not _close(a, b, rtol)]
    reproduced = not mismatched and recorded_outcome == result.status
    verification = Verification(
        run_id=run_id,
        new_run_id=result.run_id,
        notebook=notebook,
        reproduced=reproduced,
        outcome=(recorded_outcome, result.status),
        metrics=compared,
        mismatched=mismatched,
        rtol=rtol,
    )
    if result.run_id:
        client.set_tag(run_id, f"{TAG_PREFIX}verified_by", result.run_id)
        client.set_tag(run_id, f"{TAG_PREFIX}verification", "reproduced" if reproduced else "not_reproduced")
    return verification


def _without_outputs(notebook: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """The recorded parameters minus the output parameters: where the run wrote is not what it computed,
    and the re-execution writes into its scratch folder."""
    from jobrunner.params import read_schema

    outputs = set(read_schema(notebook).outputs)
    return {k: v for k, v in parameters.items() if k not in outputs}


def _close(a: float | None, b: float | None, rtol: float) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def _recorded(client: Any, run_id: str, tmp: Path) -> tuple[dict[str, Any], Path]:
    """The run's lineage.json (typed parameters, input hashes) and its executed notebook."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        lineage = json.loads(Path(client.download_artifacts(run_id, "lineage.json", str(tmp))).read_text())
    except Exception as exc:  # noqa: BLE001 - missing artifact
        raise CannotVerify(
            f"run {run_id} has no lineage.json artifact: it was not recorded by jobrunner"
        ) from exc
    try:
        names = [f.path for f in client.list_artifacts(run_id, "notebook") if f.path.endswith(".ipynb")]
        executed = Path(client.download_artifacts(run_id, names[0], str(tmp)))
    except Exception as exc:  # noqa: BLE001 - missing artifact
        raise CannotVerify(f"run {run_id} has no executed notebook among its artifacts") from exc
    return lineage, executed


def _scratch_project(project: Path, scratch: Path, inputs: list[str], notebook: str, executed: Path) -> None:
    """A copy of the project with the recorded code as the notebook and the recorded inputs."""
    import nbformat

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
    nb = nbformat.read(executed, as_version=4)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.get("metadata", {}).pop("papermill", None)
    target = scratch / notebook
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
