"""`jobrunner stage NAME`: run the DVC stage NAME of dvc.yaml, as `python -m pipelines.stage NAME` does.

The stage runner itself is pipelines.stage (dvc.yaml's commands call it, and keep doing so); this command
takes the same options and hands them to it, so both run the same code with the same output and exit
codes (0 success, 1 the notebook failed, 2 bad stage definition or parameters, 3 infrastructure).
"""

from __future__ import annotations

import sys

import click


@click.command()
@click.argument("name")
@click.option(
    "--profile", metavar="NAME", help="params.yaml profile to overlay (default: $JOBRUNNER_PARAMS_PROFILE)."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--no-cache",
    is_flag=True,
    help="Execute even if a recorded run has the same run-cache key (default: $JOBRUNNER_STAGE_CACHE=off).",
)
def stage(name: str, profile: str | None, quiet: bool, no_cache: bool) -> None:
    """Run stage NAME of dvc.yaml: its notebook with its params.yaml sections, recorded in MLflow.

    The same as `python -m pipelines.stage NAME` (what dvc.yaml runs): through the local execution
    service when it can, the executed notebook written to reports/notebooks/.
    """
    # pipelines sits above jobrunner (import-linter contract in pyproject.toml): imported when run only
    from pipelines.stage import main as stage_main

    argv = [name]
    if profile:
        argv += ["--profile", profile]
    if quiet:
        argv.append("--quiet")
    if no_cache:
        argv.append("--no-cache")
    sys.exit(int(stage_main(argv) or 0))
