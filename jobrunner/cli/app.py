"""The one click app of the `jobrunner` command line; each command group lives in its own module.

    run, params, service            jobrunner.cli.run
    stage                           jobrunner.cli.stage
    migrate, worker, submit, status, list, logs, cancel, dlq, cache
                                    jobrunner.cli.jobs
    schedule, scheduler             jobrunner.cli.schedules
    lineage, diff, verify, check    jobrunner.cli.provenance

Exit codes, `fail()` and the shared options are jobrunner.cli.common's. The command modules import only
click and jobrunner's leaf modules at the top; everything heavy (SQLAlchemy, MLflow, papermill) is
imported inside the command that runs, so `jobrunner --help` and `jobrunner run` stay fast.
"""

from __future__ import annotations

import logging

import click

from jobrunner.cli import jobs, provenance, schedules
from jobrunner.cli import run as run_module
from jobrunner.cli.stage import stage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="notebook-jobs")
def main(verbose: int) -> None:
    """Run parameterised notebooks: now (`run`), as queued jobs (`submit`), or as DVC stages."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


for _command in (
    run_module.run,
    run_module.params,
    run_module.service,
    stage,
    jobs.migrate,
    jobs.worker,
    jobs.submit,
    jobs.status,
    jobs.list_,
    jobs.logs,
    jobs.cancel,
    jobs.dlq,
    jobs.cache,
    schedules.schedule,
    schedules.scheduler,
    provenance.lineage,
    provenance.check,
    provenance.diff,
    provenance.verify,
):
    main.add_command(_command)
