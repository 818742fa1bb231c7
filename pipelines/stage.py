"""DVC stage entry point: `python -m pipelines.stage NAME` runs the stage's notebook through jobrunner.

dvc.yaml is the single source of truth. For stage NAME this reads
  - `meta.notebook`      the notebook to execute,
  - `meta.parameters`    path parameters (where the notebook reads and writes),
  - `params`             the params.yaml sections whose keys become notebook parameters,
  - `deps` / `outs`      the data the run reads and writes (hashed into the MLflow run),
and executes the notebook with `jobrunner.execution.executor.execute`, writing the executed notebook to
`reports/notebooks/<notebook>.ipynb` (+ .html), which dvc.yaml declares as outputs.

Set JOBRUNNER_PARAMS_PROFILE=ci to overlay the `profiles.ci` block of params.yaml (small, fast runs for
tests). Exit codes: 0 success, 1 the notebook failed, 2 bad stage definition or parameters,
3 infrastructure error.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from jobrunner.config import get_settings
from jobrunner.errors import InfrastructureError, JobrunnerError, ParameterError
from jobrunner.execution.progress import ProgressBar
from jobrunner.tags import STAGE_TAG, TRIGGER_TAG
from pipelines.cli import run_command

REPORTS_DIR = Path("reports/notebooks")


class StageError(JobrunnerError):
    """dvc.yaml or params.yaml does not define the stage the way this runner needs."""


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageError(f"{path} not found (run from the project root)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise StageError(f"{path} must hold a mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_params(project: Path, profile: str | None = None) -> dict[str, Any]:
    params = load_yaml(project / "params.yaml")
    profiles = params.pop("profiles", {}) or {}
    if profile:
        if profile not in profiles:
            raise StageError(
                f"params.yaml has no profile '{profile}'; profiles: {', '.join(profiles) or 'none'}"
            )
        params = deep_merge(params, profiles[profile])
    return params


def _names(entries: list[Any]) -> list[str]:
    """dvc.yaml deps/outs/params entries are strings or one-key mappings (path: {options})."""
    names: list[Any] = []
    for entry in entries or []:
        names.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return [str(n) for n in names]


def stage_plan(name: str, project: Path, profile: str | None = None) -> dict[str, Any]:
    """What the stage will run: notebook, parameters, inputs, outputs, executed-notebook path."""
    stages = load_yaml(project / "dvc.yaml").get("stages", {})
    if name not in stages:
        raise StageError(f"no stage '{name}' in dvc.yaml; stages: {', '.join(stages)}")
    stage = stages[name]
    meta = stage.get("meta") or {}
    notebook = meta.get("notebook")
    if not notebook:
        raise StageError(f"stage '{name}' in dvc.yaml needs meta.notebook (the notebook it runs)")
    params = load_params(project, profile)
    values: dict[str, Any] = {}
    for section in _names(stage.get("params", [])):
        if section not in params or not isinstance(params[section], dict):
            raise StageError(f"stage '{name}' uses params section '{section}', missing from params.yaml")
        clash = set(values) & set(params[section])
        if clash:
            raise StageError(f"stage '{name}': parameter(s) {sorted(clash)} defined in two params sections")
        values.update(params[section])
    values.update(meta.get("parameters") or {})
    executed = REPORTS_DIR / f"{Path(notebook).stem}.ipynb"
    deps = [
        d
        for d in _names(stage.get("deps", []))
        if d != notebook and not d.startswith(("pipelines", "jobrunner"))
    ]
    outs = [
        o
        for o in _names(stage.get("outs", [])) + _names(stage.get("metrics", []))
        if not o.startswith(str(REPORTS_DIR))
    ]
    return {
        "stage": name,
        "notebook": notebook,
        "parameters": values,
        "inputs": deps,
        "outputs": outs,
        "output_path": str(executed),
    }


def run_stage(name: str, *, profile: str | None = None, quiet: bool = False, cache: bool = True) -> int:
    from jobrunner.execution.executor import execute

    settings = get_settings()
    project = settings.project_dir
    plan = stage_plan(name, project, profile)
    for out in plan["outputs"]:
        (project / out).parent.mkdir(parents=True, exist_ok=True)
    print(f"stage {name}: running {plan['notebook']}", file=sys.stderr)
    with ProgressBar(f"{name}", disable=quiet) as bar:
        result = execute(
            plan["notebook"],
            plan["parameters"],
            output_path=plan["output_path"],
            settings=settings,
            inputs=plan["inputs"],
            outputs=plan["outputs"],
            tags={STAGE_TAG: name, TRIGGER_TAG: "dvc"},
            run_name=f"{name}",
            on_progress=bar.update,
            # a notebook re-saved with other outputs or metadata is a changed dep for DVC, not for the run
            # cache: the recorded run's outputs are restored instead of executing (docs/jobs.md)
            cache=cache,
        )
    where = f"executed notebook: {result.output_path.relative_to(project)}"
    if result.ok and result.cached_from:
        print(
            f"stage {name}: run cache hit - same code, parameters, data and environment as MLflow run "
            f"{result.cached_from}; its outputs restored, nothing executed",
            file=sys.stderr,
        )
        return 0
    if result.ok:
        print(
            f"stage {name}: succeeded in {result.duration:.1f}s (MLflow run {result.run_id}); {where}",
            file=sys.stderr,
        )
        return 0
    failure = result.failure
    print(
        f"stage {name}: FAILED - {failure.message if failure else 'unknown error'}; {where}", file=sys.stderr
    )
    return 1


def _env_profile() -> str | None:
    return os.environ.get("JOBRUNNER_PARAMS_PROFILE") or None


def _env_no_cache() -> bool:
    return os.environ.get("JOBRUNNER_STAGE_CACHE", "on").lower() in ("off", "0", "false")


@click.command(name="stage")
@click.argument("stage")
@click.option(
    "--profile",
    metavar="NAME",
    default=_env_profile,
    help="params.yaml profile to overlay (default: $JOBRUNNER_PARAMS_PROFILE).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--no-cache",
    is_flag=True,
    default=_env_no_cache,
    help="Execute even if a recorded run has the same run-cache key (default: $JOBRUNNER_STAGE_CACHE=off).",
)
def stage_command(stage: str, profile: str | None, quiet: bool, no_cache: bool) -> int:
    """Run STAGE of dvc.yaml: its notebook with its params.yaml sections, recorded in MLflow.

    Exit codes: 0 success, 1 the notebook failed, 2 bad stage definition or parameters, 3 infrastructure
    error.
    """
    try:
        return run_stage(stage, profile=profile, quiet=quiet, cache=not no_cache)
    except (StageError, ParameterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except InfrastructureError as exc:
        print(f"infrastructure error: {exc}", file=sys.stderr)
        return 3
    except JobrunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.stage ARGV`: through the warm local execution service when it can (docs/cli.md),
    else `stage_command` in this process. Returns the exit code (usage errors: 2)."""
    from jobrunner.cli import service_client

    code = service_client.run_command("stage", {"argv": list(sys.argv[1:] if argv is None else argv)})
    if code is not None:
        return code
    return run_command(stage_command, argv, "python -m pipelines.stage")


if __name__ == "__main__":
    sys.exit(main())
