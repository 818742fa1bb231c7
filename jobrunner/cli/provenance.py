"""`jobrunner lineage`, `diff`, `verify` and `check`: where a model came from, how two runs differ, whether
a run reproduces, and whether production is reachable.

    jobrunner lineage breast-cancer-classifier@champion [--json]
    jobrunner lineage breast-cancer-classifier/3 [--json]
    jobrunner check [--json] [--no-dvc]
    jobrunner diff RUN_A RUN_B [--json]       (run ids or MODEL@ALIAS / MODEL/VERSION)
    jobrunner verify RUN [--rtol R] [--json] [--queue]

Exit codes (jobrunner.cli.common.ExitCode): 0 ok, 2 bad reference, 3 a service is unreachable or
misconfigured, 4 no such model, version or alias.
"""

from __future__ import annotations

import json
import sys

import click

from jobrunner.cli.common import ExitCode, fail


@click.command()
@click.argument("model_ref", metavar="MODEL_NAME@ALIAS|MODEL_NAME/VERSION")
@click.option("--json", "as_json", is_flag=True, help="Print the lineage as JSON.")
@click.option(
    "--max-depth", type=int, default=20, show_default=True, help="How many upstream stages to follow."
)
def lineage(model_ref: str, as_json: bool, max_depth: int) -> None:
    """Trace a registered model back to its run, executed notebook, data hashes and upstream stage runs.

    Each data hash is compared with dvc.lock of the project in the working directory.
    """
    from jobrunner.config import get_settings
    from jobrunner.provenance.lineage import LineageError, LineageNotFound, parse_ref, render, trace

    settings = get_settings()
    uri = settings.mlflow_tracking_uri or ""
    try:
        ref = parse_ref(model_ref)
    except LineageError as exc:
        fail(str(exc), ExitCode.USAGE)
    _fail_fast_on_tracking(uri)
    from mlflow.tracking import MlflowClient

    try:
        result = trace(
            ref,
            client=MlflowClient(tracking_uri=uri),
            tracking_uri=uri,
            project_dir=settings.project_dir,
            max_depth=max_depth,
        )
    except LineageNotFound as exc:
        fail(f"{exc} at {uri}", ExitCode.NOT_FOUND)
    except LineageError as exc:
        fail(str(exc), ExitCode.INFRA)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        click.echo(render(result))


def _fail_fast_on_tracking(uri: str) -> None:
    """MLflow's client retries an unreachable server for minutes; say at once which setting is wrong."""
    from jobrunner.execution.checks import check_mlflow

    result = check_mlflow(uri)
    if not result.ok:
        fail(result.message, ExitCode.INFRA)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--no-dvc", is_flag=True, help="Skip the DVC remote (e.g. in a worker without a checkout).")
def check(as_json: bool, no_dvc: bool) -> None:
    """Check the configured services: S3 endpoint, credentials and buckets, DVC remote, MLflow server.

    Each failure names the setting to fix. Exit 0 when all pass, 3 otherwise.
    """
    from jobrunner.config import get_settings
    from jobrunner.execution.checks import run_checks

    results = run_checks(get_settings(), dvc=not no_dvc)
    failed = [r for r in results if not r.ok]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}, indent=2))
    else:
        for r in results:
            click.echo(f"{'ok  ' if r.ok else 'FAIL'}  {r.name}: {r.message}", err=not r.ok)
        if failed:
            settings = ", ".join(dict.fromkeys(str(r.setting) for r in failed))
            click.echo(f"error: {len(failed)} check(s) failed; settings to fix: {settings}", err=True)
    sys.exit(ExitCode.INFRA if failed else 0)


@click.command()
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
def diff(run_a: str, run_b: str, as_json: bool) -> None:
    """Compare two recorded executions: parameters, metrics, git commit, data hashes and code cells.

    A and B are MLflow run ids, or model versions (MODEL@ALIAS, MODEL/VERSION) standing for the runs that
    produced them. Exit 0 when nothing differs, 1 when something does (as `diff`).
    """
    from jobrunner.config import get_settings
    from jobrunner.provenance.diff import RunNotFound, diff_json, diff_runs, render

    uri = get_settings().mlflow_tracking_uri or ""
    _fail_fast_on_tracking(uri)
    from mlflow.tracking import MlflowClient

    try:
        result = diff_runs(run_a, run_b, MlflowClient(tracking_uri=uri))
    except RunNotFound as exc:
        fail(f"{exc} (MLflow at {uri})", ExitCode.NOT_FOUND)
    except Exception as exc:  # noqa: BLE001 - the store answered with something unexpected
        fail(f"cannot compare the runs at {uri}: {exc}", ExitCode.INFRA)
    click.echo(diff_json(result) if as_json else render(result))
    sys.exit(0 if result.identical else 1)


@click.command()
@click.argument("run_ref", metavar="RUN")
@click.option(
    "--rtol",
    type=click.FloatRange(0, 1),
    default=1e-6,
    show_default=True,
    help="Relative tolerance when comparing metrics.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the verification (with --queue: the job) as JSON."
)
@click.option(
    "--queue",
    is_flag=True,
    help="Run the verification as a job on any worker; `jobrunner status JOB` shows the result.",
)
def verify(run_ref: str, rtol: float, as_json: bool, queue: bool) -> None:
    """Re-execute a recorded run (its recorded code, parameters and input data) and check that it reproduces.

    RUN is an MLflow run id or a model version (MODEL@ALIAS, MODEL/VERSION). The re-execution runs in a
    scratch copy of the project and is recorded as a new MLflow run; metrics, declared outputs (DVC md5)
    and each cell's text outputs are compared. Exit 0 when it reproduces (with --queue: when queued), 1
    when it does not or cannot be verified (e.g. the input data is nowhere to be found), 4 for an unknown run.
    """
    from jobrunner.config import get_settings
    from jobrunner.errors import InfrastructureError
    from jobrunner.provenance.verify import CannotVerify, RunNotFound, verify_run

    settings = get_settings()
    _fail_fast_on_tracking(settings.mlflow_tracking_uri or "")
    try:
        if queue:
            from jobrunner.worker.verify import submit_verification

            job = submit_verification(run_ref, rtol=rtol, submitter="cli")
            if as_json:
                click.echo(job.model_dump_json(indent=2))
            else:
                click.echo(
                    f"{job.id}  queued: verify run {job.verifies} ({job.notebook}); "
                    f"`jobrunner status {job.id}` shows the result"
                )
            return
        result = verify_run(run_ref, settings, rtol=rtol)
    except RunNotFound as exc:
        fail(str(exc), ExitCode.NOT_FOUND)
    except CannotVerify as exc:
        fail(f"cannot verify: {exc}", ExitCode.FAILED)
    except InfrastructureError as exc:
        fail(str(exc), ExitCode.INFRA)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else result.render())
    sys.exit(0 if result.reproduced else ExitCode.FAILED)
