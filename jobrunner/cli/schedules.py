"""Schedule commands of the `jobrunner` CLI: `jobrunner schedule create|list|show|pause|resume|delete|run-now`
and `jobrunner scheduler` (the tick loop).

Exit codes as the job commands (docs/schedules.md): 0 success; 2 bad input (the message names the
field: cron, timezone, kernel_name, a parameter...), nothing stored; 3 job store unavailable; 4 no such
schedule; 5 conflict (name taken, max_concurrent_runs reached for run-now).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from jobrunner.cli.common import (
    ExitCode,
    echo_json,
    fail,
    fail_for,
    or_fail,
    parameter_option,
    parameters_file_option,
    parameters_yaml_option,
    parse_parameter_options,
)
from jobrunner.cli.common import settings as _settings
from jobrunner.errors import InfrastructureError, JobrunnerError, NotebookNotFound, ParameterError


def _handle(exc: Exception) -> NoReturn:
    from jobrunner.scheduling.schedules import InvalidSchedule, ScheduleConflict, ScheduleNotFound

    if isinstance(exc, InvalidSchedule):
        fail(f"{exc.field}: {exc}")
    fail_for(
        exc,
        [
            (ScheduleNotFound, ExitCode.NOT_FOUND),
            (ScheduleConflict, ExitCode.CONFLICT),
            (InfrastructureError, ExitCode.INFRA),
        ],
    )


def _print_schedule(s: Any) -> None:
    state = (
        "paused"
        if s.paused
        else f"next {s.next_run_at:%Y-%m-%d %H:%M:%S}Z"
        if s.next_run_at
        else "never fires"
    )
    click.echo(f"{s.id}  {s.name}  {s.cron!r} {s.timezone}  {state}  {s.notebook}")


@click.group()
def schedule() -> None:
    """Run notebooks on cron schedules (the `jobrunner scheduler` process submits the jobs)."""


@schedule.command()
@click.argument("name")
@click.argument("notebook")
@click.option("--cron", required=True, help="Five fields: minute hour day-of-month month day-of-week.")
@click.option("--timezone", "tz", default="UTC", show_default=True, help="IANA time zone of the cron times.")
@parameters_file_option
@parameters_yaml_option("Parameters as a YAML mapping.")
@parameter_option
@click.option("--timeout", type=float, metavar="SECONDS", help="Time limit of each run.")
@click.option("--kernel", "kernel_name", help="Kernel name (default: JOBRUNNER_KERNEL_NAME).")
@click.option(
    "--max-concurrent-runs",
    type=int,
    default=1,
    show_default=True,
    help="A slot due while this many runs are unfinished is skipped (and recorded).",
)
@click.option(
    "--catchup",
    type=click.Choice(["once", "skip"]),
    default="once",
    show_default=True,
    help="After downtime: run the missed slots once (the newest), or skip them.",
)
@click.option("--paused", is_flag=True, help="Create it paused.")
@click.option("--notify", "notify_url", metavar="URL", help="Webhook POSTed a JSON body when a run ends.")
@click.option(
    "--notify-on",
    type=click.Choice(["failure", "success", "both"]),
    help="Which run endings --notify is told of (default: failure).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the schedule as JSON.")
def create(
    name: str,
    notebook: str,
    cron: str,
    tz: str,
    files: tuple[str, ...],
    yaml_texts: tuple[str, ...],
    params: tuple[tuple[str, str], ...],
    timeout: float | None,
    kernel_name: str | None,
    max_concurrent_runs: int,
    catchup: str,
    paused: bool,
    notify_url: str | None,
    notify_on: str | None,
    as_json: bool,
) -> None:
    """Create schedule NAME running NOTEBOOK (relative to the project); parameters are checked now."""
    import getpass

    from pydantic import ValidationError

    from jobrunner.execution.notebooks import resolve_notebook
    from jobrunner.execution.params import read_schema
    from jobrunner.scheduling.schedules import ScheduleCreate, create_schedule

    settings = _settings()
    try:
        full, label = resolve_notebook(notebook, settings)
        values = parse_parameter_options(read_schema(full, label), params, yaml_texts, files)
        spec = ScheduleCreate(
            name=name,
            notebook=notebook,
            parameters=values,
            cron=cron,
            timezone=tz,
            timeout_seconds=timeout,
            kernel_name=kernel_name,
            max_concurrent_runs=max_concurrent_runs,
            catchup=catchup,  # type: ignore[arg-type]
            paused=paused,
            notify_url=notify_url,
            notify_on=notify_on,
        )
        row = create_schedule(spec, submitter=getpass.getuser(), settings=settings)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        fail(f"{field}: {err['msg']} (got {err.get('input')!r}); nothing was stored")
    except (ParameterError, NotebookNotFound) as exc:
        fail(f"{exc}\n(nothing was stored; see: jobrunner params {notebook})")
    except JobrunnerError as exc:
        _handle(exc)
    if row.next_run_at is None and not row.paused:
        click.echo(f"warning: the cron expression {row.cron!r} never fires (no such date)", err=True)
    if as_json:
        echo_json(row.model_dump(mode="json"))
    else:
        _print_schedule(row)


@schedule.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True)
def list_(limit: int, offset: int, as_json: bool) -> None:
    """List schedules by name."""
    from jobrunner.scheduling.schedules import list_schedules

    page = or_fail(lambda: list_schedules(limit=limit, offset=offset, settings=_settings()), _handle)
    if as_json:
        echo_json(page.model_dump(mode="json"))
        return
    for s in page.items:
        _print_schedule(s)
    click.echo(f"{len(page.items)} of {page.total} schedule(s)", err=True)


@schedule.command()
@click.argument("ref", metavar="ID_OR_NAME")
@click.option(
    "--runs", default=20, show_default=True, type=click.IntRange(0, 1000), help="Recent runs shown."
)
@click.option("--json", "as_json", is_flag=True)
def show(ref: str, runs: int, as_json: bool) -> None:
    """Show a schedule and its recent runs (job and state, or why a slot was skipped)."""
    from jobrunner.scheduling.schedules import get_schedule

    detail = or_fail(lambda: get_schedule(ref, runs=runs, settings=_settings()), _handle)
    if as_json:
        echo_json(detail.model_dump(mode="json"))
        return
    _print_schedule(detail)
    click.echo(f"  parameters: {json.dumps(detail.parameters)}")
    click.echo(
        f"  kernel {detail.kernel_name}, timeout {detail.timeout_seconds or 'worker default'}, "
        f"max_concurrent_runs {detail.max_concurrent_runs}, catch-up {detail.catchup}"
    )
    if detail.notify_url:
        click.echo(f"  notify on {detail.notify_on}: {detail.notify_url}")
    for r in detail.runs:
        outcome = (
            f"job {r.job_id} {r.job_state.value if r.job_state else ''}" if r.job_id else (r.reason or "")
        )
        click.echo(f"  {r.slot:%Y-%m-%d %H:%M:%S}Z  {r.trigger:<6}  {r.status:<9}  {outcome}")


def _simple(action: str, help_text: str) -> click.Command:
    @click.command(action, help=help_text)
    @click.argument("ref", metavar="ID_OR_NAME")
    @click.option("--json", "as_json", is_flag=True)
    def command(ref: str, as_json: bool) -> None:
        from jobrunner.scheduling import schedules

        func = {
            "pause": schedules.pause_schedule,
            "resume": schedules.resume_schedule,
            "delete": schedules.delete_schedule,
        }[action]
        row = or_fail(lambda: func(ref, settings=_settings()), _handle)
        if as_json:
            echo_json(row.model_dump(mode="json"))
        else:
            click.echo(f"{row.id} {action}d" if action != "pause" else f"{row.id} paused")

    return command


schedule.add_command(_simple("pause", "Pause a schedule: no slot fires until it is resumed."))
schedule.add_command(
    _simple("resume", "Resume a schedule from its next slot (paused slots are not caught up).")
)
schedule.add_command(_simple("delete", "Delete a schedule and its run records (its jobs stay)."))


@schedule.command("run-now")
@click.argument("ref", metavar="ID_OR_NAME")
@click.option("--json", "as_json", is_flag=True)
def run_now(ref: str, as_json: bool) -> None:
    """Submit a run of the schedule now (also while paused); prints the job id."""
    from jobrunner.scheduling.schedules import run_now as do_run_now

    run = or_fail(lambda: do_run_now(ref, settings=_settings()), _handle)
    if as_json:
        echo_json(run.model_dump(mode="json"))
    elif run.job_id:
        click.echo(run.job_id)
    else:
        fail(f"not submitted: {run.reason}")


@click.command()
@click.option("--interval", type=float, help="Seconds between ticks (JOBRUNNER_SCHEDULER_INTERVAL, 5).")
@click.option(
    "--misfire-grace",
    type=float,
    help="A slot more than this many seconds late counts as missed (JOBRUNNER_SCHEDULER_MISFIRE_GRACE, 60).",
)
@click.option(
    "--heartbeat-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Rewritten after each tick (JOBRUNNER_SCHEDULER_HEARTBEAT_FILE).",
)
@click.option(
    "--now-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Tests: read the current time (ISO 8601) from this file at each tick.",
)
@click.option("--once", is_flag=True, help="One tick, then exit.")
@click.option(
    "--check",
    is_flag=True,
    help="Health check: exit 0 if the heartbeat file is fresh (3 intervals, at least 30 s), else 1.",
)
def scheduler(
    interval: float | None,
    misfire_grace: float | None,
    heartbeat_file: Path | None,
    now_file: Path | None,
    once: bool,
    check: bool,
) -> None:
    """Run the scheduler: submit each due slot of every schedule as a job, exactly once across any number
    of schedulers. SIGTERM stops it after the tick in progress."""
    from pydantic import ValidationError

    from jobrunner.scheduling.scheduler import SchedulerSettings, heartbeat_age, run_scheduler

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "interval": interval,
            "misfire_grace": misfire_grace,
            "heartbeat_file": heartbeat_file,
            "now_file": now_file,
        }.items()
        if v is not None
    }
    try:
        options = SchedulerSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        fail(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
    if check:
        age = heartbeat_age(options.heartbeat_file)
        limit = max(3 * options.interval, 30.0)
        if age is None or age > limit:
            what = "missing" if age is None else f"{age:.0f}s old"
            click.echo(f"unhealthy: heartbeat {options.heartbeat_file} {what} (limit {limit:g}s)", err=True)
            sys.exit(1)
        click.echo(f"healthy: last tick {age:.0f}s ago")
        return
    import logging

    from jobrunner.logs import configure_logging

    settings = _settings()
    configure_logging(min(logging.getLogger().getEffectiveLevel(), logging.INFO), settings.log_json)
    or_fail(lambda: run_scheduler(settings, options, once=once), _handle)
