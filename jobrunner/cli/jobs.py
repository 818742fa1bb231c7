"""Job commands of the `jobrunner` CLI: migrate, worker, submit, status, list, logs, cancel, dlq.

Exit codes (docs/jobs.md): 0 success; 1 the job ended FAILED or CANCELLED (submit --wait); 2 usage
error (bad parameters, notebook outside the roots), nothing queued; 3 infrastructure (database, broker)
unavailable; 4 job not found; 5 conflict (cancelling a job that already finished, an idempotency key
reused with other parameters).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

from jobrunner.cli.common import (
    ExitCode,
    echo_json,
    fail,
    fail_for,
    or_fail,
    parameter_options,
    parse_parameter_options,
    quiet_pika,
)
from jobrunner.cli.common import settings as _settings
from jobrunner.errors import (
    IdempotencyConflict,
    InfrastructureError,
    InvalidTransition,
    JobNotFound,
    JobrunnerError,
    NotebookNotFound,
    ParameterError,
)
from jobrunner.kinds import JobState
from jobrunner.limits import MAX_TIMEOUT

if TYPE_CHECKING:
    from jobrunner.store.schemas import JobRead


def _handle(exc: Exception) -> NoReturn:
    fail_for(
        exc,
        [
            (JobNotFound, ExitCode.NOT_FOUND),
            ((InvalidTransition, IdempotencyConflict), ExitCode.CONFLICT),
            (InfrastructureError, ExitCode.INFRA),
        ],
    )


def _job_dict(job: JobRead) -> dict[str, Any]:
    return job.model_dump(mode="json")


@click.command()
def migrate() -> None:
    """Create or upgrade the job store's schema (JOBRUNNER_DATABASE_URL)."""
    from jobrunner.store.db import migrate as do_migrate

    head = or_fail(lambda: do_migrate(_settings()), _handle)
    click.echo(f"job store at revision {head}")


@click.command()
@click.option("--id", "worker_id", help="Worker id shown on jobs (default: host:pid).")
@click.option("--burst", is_flag=True, help="Exit when no job is waiting (for scripts and tests).")
def worker(worker_id: str | None, burst: bool) -> None:
    """Run a worker: take jobs one at a time from the queue (or the database without a broker)."""
    import logging

    from jobrunner.logs import configure_logging
    from jobrunner.worker.loop import run_worker

    settings = _settings()
    # a long-running process: one line per job event at INFO (JSON by default, as the API's), more with -v
    configure_logging(min(logging.getLogger().getEffectiveLevel(), logging.INFO), settings.log_json)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:  # -vv shows pika's own lines
        quiet_pika()
    or_fail(lambda: run_worker(settings, worker_id=worker_id, burst=burst), _handle)
    _exit_at_once()


def _exit_at_once(code: int = 0) -> None:
    """Exit without the interpreter's teardown. A stopped worker has committed its job's state and
    closed its kernels; tearing down its heap (MLflow, pandas, papermill loaded) took 8 s of garbage
    collection on a loaded machine, past the SIGTERM grace period an orchestrator grants. atexit
    handlers (kernel socket folders) still run."""
    import atexit
    import logging
    import os

    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@click.command()
@click.argument("notebook")
@parameter_options
@click.option("--idempotency-key", help="Submitting again with the same key returns the first job.")
@click.option("--submitter", help="Who submitted (default: $USER).")
@click.option(
    "--timeout",
    type=click.FloatRange(0, MAX_TIMEOUT, min_open=True),
    metavar="SECONDS",
    help="Time limit of each attempt; the worker's JOBRUNNER_TIMEOUT applies if lower.",
)
@click.option(
    "--wait", is_flag=True, help="Wait for the job to finish, with a progress bar; exit 1 if it fails."
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Execute even if an identical earlier job could be reused (see docs/jobs.md, Run cache).",
)
@click.option(
    "--write-workspace",
    is_flag=True,
    help="Write the project's files where the output parameters say (defaults included), as "
    "`jobrunner run` does; without it outputs go to the job's own folder.",
)
@click.option(
    "--kernel",
    metavar="NAME",
    help="Kernelspec to run on (default: the workers' JOBRUNNER_KERNEL_NAME); must be installed.",
)
@click.option(
    "--notify", metavar="URL", help="Webhook POSTed a JSON body when the job ends (see --notify-on)."
)
@click.option(
    "--notify-on",
    type=click.Choice(["failure", "success", "both"]),
    help="When --notify is told (default: failure; a cancel counts as a failure).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def submit(
    notebook: str,
    params: tuple[tuple[str, str], ...],
    yaml_texts: tuple[str, ...],
    files: tuple[str, ...],
    idempotency_key: str | None,
    submitter: str | None,
    timeout: float | None,
    wait: bool,
    no_cache: bool,
    write_workspace: bool,
    kernel: str | None,
    notify: str | None,
    notify_on: str | None,
    as_json: bool,
) -> None:
    """Queue NOTEBOOK (a path relative to the project) as a job; prints the job id.

    The job owns its outputs: output parameters (`# output:`) left at their defaults are written into the
    job's folder and stored with the job (`jobrunner status` lists them); a path inside the project is
    refused unless --write-workspace."""
    import getpass

    from jobrunner.execution.notebooks import resolve_notebook
    from jobrunner.execution.params import read_schema
    from jobrunner.jobs import submit as do_submit

    settings = _settings()
    quiet_pika()
    try:
        full, label = resolve_notebook(notebook, settings)
        values = parse_parameter_options(read_schema(full, label), params, yaml_texts, files)
        job = do_submit(
            notebook,
            values,
            idempotency_key=idempotency_key,
            submitter=submitter or getpass.getuser(),
            timeout=timeout,
            write_workspace=write_workspace,
            cache=not no_cache,
            kernel=kernel,
            notify=notify,
            notify_on=notify_on,
            settings=settings,
        )
    except (ParameterError, NotebookNotFound) as exc:
        fail(f"{exc}\n(nothing was queued; see: jobrunner params {notebook})")
    except JobrunnerError as exc:
        _handle(exc)
    if wait:
        if not as_json:
            click.echo(job.id, err=True)
        job = _wait(job.id, quiet=as_json)
    if as_json:
        echo_json(_job_dict(job))
    else:
        click.echo(job.id)
        if wait:
            _print_outcome(job)
    if wait and job.state.value != "SUCCEEDED":
        sys.exit(ExitCode.FAILED)


def _wait(job_id: str, *, quiet: bool) -> JobRead:
    from jobrunner.jobs import job_progress_bar, wait_for_job

    bar, on_update = job_progress_bar(widget=False)
    try:
        return wait_for_job(job_id, on_update=None if quiet else on_update)
    except KeyboardInterrupt:
        fail(
            f"stopped waiting; job {job_id} keeps running (jobrunner cancel {job_id} to stop it)",
            ExitCode.FAILED,
        )
    finally:
        bar.close()


def _print_outcome(job: JobRead) -> None:
    click.echo(f"{job.state.value}: {job.notebook} (attempt {job.attempt})", err=True)
    if job.output_uri:
        click.echo(f"  executed notebook: {job.output_uri}", err=True)
    if job.mlflow_run_id:
        click.echo(f"  MLflow run: {job.mlflow_run_id}", err=True)
    if job.error:
        click.echo(f"  error: {job.error.message}", err=True)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job: state, progress, error, output location."""
    from jobrunner.jobs import get_job
    from jobrunner.worker.verify import verification_lines

    job = or_fail(lambda: get_job(job_id), _handle)
    if as_json:
        echo_json(_job_dict(job))
        return
    p = job.progress
    click.echo(f"{job.id}  {job.state.value}  {job.notebook}  attempt {job.attempt}")
    click.echo(
        f"  progress: {p.cells_done}/{p.cells_total if p.cells_total is not None else '?'} cells"
        + (f" (running cell {p.current_cell})" if job.state.value == "RUNNING" else "")
    )
    click.echo(f"  parameters: {json.dumps(job.parameters)}")
    for label, value in (
        ("worker", job.worker_id),
        ("created", job.created_at),
        ("started", job.started_at),
        ("finished", job.finished_at),
        ("output", job.output_uri),
        ("MLflow run", job.mlflow_run_id),
    ):
        if value:
            click.echo(f"  {label}: {value}")
    if job.write_workspace:
        click.echo("  writes the workspace (--write-workspace)")
    if job.cached_from:
        click.echo(f"  cached from: job {job.cached_from} (run cache hit: nothing was executed)")
    for f in job.outputs:
        what = f"md5 {f.md5}, {f.size} bytes" if f.md5 else "not written"
        click.echo(f"  output {f.parameter}: {f.path} ({what})" + (f" -> {f.uri}" if f.uri else ""))
    for line in verification_lines(job):
        click.echo(line)
    if job.error:
        click.echo(f"  error: {job.error.message}")


@click.command("list")
@click.option("--state", type=click.Choice([s.value for s in JobState], case_sensitive=False))
@click.option("--notebook", help="Only jobs of this notebook path.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True)
def list_(state: str | None, notebook: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List jobs, newest first."""
    from jobrunner.jobs import list_jobs

    page = or_fail(lambda: list_jobs(state=state, notebook=notebook, limit=limit, offset=offset), _handle)
    if as_json:
        echo_json(page.model_dump(mode="json"))
        return
    for job in page.items:
        p = job.progress
        click.echo(
            f"{job.id}  {job.state.value:<10}  {p.cells_done}/{p.cells_total or '?'}  "
            f"{job.created_at:%Y-%m-%d %H:%M:%S}  {job.notebook}"
        )
    click.echo(f"{len(page.items)} of {page.total} job(s)", err=True)


@click.command()
@click.argument("job_id")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Print events and cell output as they happen until the job ends; exit 0 if it "
    "SUCCEEDED, 1 if it FAILED or was CANCELLED.",
)
@click.option("--json", "as_json", is_flag=True, help="With --follow: one JSON object per line.")
def logs(job_id: str, follow: bool, as_json: bool) -> None:
    """Show a job's history (state changes, retries, webhooks) and the text output of its executed
    notebook; with --follow, its live output while it runs."""
    from jobrunner.jobs import get_job, job_events, job_output_notebook

    if follow:
        _follow(job_id, as_json)
        return
    try:
        job = get_job(job_id)
        events = job_events(job_id)
    except JobrunnerError as exc:
        _handle(exc)
    outputs: list[dict[str, Any]] = []
    if job.output_uri:
        try:
            outputs = _cell_outputs(job_output_notebook(job_id))
        except (OSError, InfrastructureError) as exc:
            click.echo(f"warning: executed notebook not readable: {exc}", err=True)
    else:  # running, or its worker died: the live output stored so far (jobrunner/store/live.py)
        outputs = _live_outputs(job_id)
    if as_json:
        echo_json(
            {
                "id": job.id,
                "state": job.state.value,
                "events": [e.model_dump(mode="json") for e in events],
                "outputs": outputs,
            }
        )
        return
    for e in events:
        click.echo(
            f"{e.at:%Y-%m-%d %H:%M:%S}  {e.to_state:<10}  {e.message or ''}"
            + (f"  [{e.worker_id}]" if e.worker_id else "")
        )
    for out in outputs:
        click.echo(f"--- cell {out['cell_index']}")
        click.echo(out["text"].rstrip("\n"))


def _live_outputs(job_id: str) -> list[dict[str, Any]]:
    """The latest attempt's live output per cell, as _cell_outputs gives the executed notebook's."""
    from jobrunner.store.live import read_output

    chunks = read_output(job_id, limit=10_000)
    latest = max((c.attempt for c in chunks), default=None)
    found: dict[int | None, list[str]] = {}
    for c in chunks:
        if c.attempt == latest:
            found.setdefault(c.cell_index, []).append(c.text)
    return [{"cell_index": i, "text": "".join(t), "live": True, "attempt": latest} for i, t in found.items()]


def _follow(job_id: str, as_json: bool) -> None:
    """`logs --follow`: stream jobrunner.store.live.follow until the job ends; exit code: its outcome."""
    from jobrunner.store.live import follow

    cell: tuple[int, int | None] | None = None
    state = None
    try:
        for item in follow(job_id):
            if as_json:
                click.echo(json.dumps({"type": item.type, **item.data}, default=str))
            elif item.type == "event":
                click.echo(
                    f"{item.data['at'][:19].replace('T', ' ')}  {item.data['to_state']:<10}  "
                    f"{item.data['message'] or ''}",
                    err=True,
                )
            elif item.type == "output":
                here = (item.data["attempt"], item.data["cell_index"])
                if here != cell:
                    cell = here
                    click.echo(f"--- cell {here[1]} (attempt {here[0]})", err=True)
                click.echo(item.data["text"], nl=False, err=item.data["name"] == "stderr")
            elif item.type == "end":
                state = item.data["state"]
                error = (item.data.get("error") or {}).get("message")
                click.echo(f"{state}" + (f": {error}" if error else ""), err=True)
            sys.stdout.flush()
    except KeyboardInterrupt:
        fail(f"stopped following; job {job_id} keeps running", ExitCode.FAILED)
    except JobrunnerError as exc:
        _handle(exc)
    sys.exit(0 if state == JobState.SUCCEEDED.value else ExitCode.FAILED)


def _cell_outputs(raw: bytes) -> list[dict[str, Any]]:
    from jobrunner.execution import notebooks

    nb = notebooks.reads(raw.decode("utf-8"), as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        texts = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            elif out.get("output_type") == "error":
                texts.append(f"{out.get('ename')}: {out.get('evalue')}\n")
            elif "text/plain" in out.get("data", {}):
                texts.append(out["data"]["text/plain"] + "\n")
        if texts:
            found.append({"cell_index": i, "text": "".join(texts)})
    return found


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def cancel(job_id: str, as_json: bool) -> None:
    """Cancel a job: a queued job never starts; a running one is stopped within seconds."""
    from jobrunner.jobs import cancel_job

    job = or_fail(lambda: cancel_job(job_id), _handle)
    if as_json:
        echo_json(_job_dict(job))
    else:
        click.echo(f"{job.id} {job.state.value}")


@click.group()
def dlq() -> None:
    """Inspect and requeue dead-lettered job messages."""


@dlq.command("list")
@click.option("--json", "as_json", is_flag=True)
def dlq_list(as_json: bool) -> None:
    """List dead-lettered messages (they stay in the dead-letter queue)."""
    from jobrunner.jobs import list_dead_letters as list_dead
    from jobrunner.queue.base import short_label

    quiet_pika()
    letters = or_fail(lambda: list_dead(_settings()), _handle)
    if as_json:
        echo_json(
            [{**d.as_dict(), "job_id": short_label(d.job_id, 255) if d.job_id else None} for d in letters]
        )
        return
    for d in letters:
        click.echo(f"{short_label(d.job_id) if d.job_id else '-':<36}  {d.reason}")
    click.echo(f"{len(letters)} dead-lettered message(s)", err=True)


@dlq.command("requeue")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead-lettered job.")
@click.option(
    "--discard",
    is_flag=True,
    help="Drop letters that cannot be requeued (not a job message, no such job) instead of keeping "
    "them in the dead-letter queue.",
)
@click.option("--json", "as_json", is_flag=True)
def dlq_requeue(job_ids: tuple[str, ...], all_: bool, discard: bool, as_json: bool) -> None:
    """Requeue dead-lettered jobs (JOB_IDS, or --all): they become QUEUED and run again.

    Letters that cannot be requeued are reported and skipped (kept, or dropped with --discard).
    """
    from jobrunner.jobs import requeue_dead_letters as requeue_dead

    if not job_ids and not all_:
        fail("name job ids to requeue, or pass --all")
    quiet_pika()
    report = or_fail(
        lambda: requeue_dead(_settings(), None if all_ else set(job_ids), discard=discard), _handle
    )
    if as_json:
        echo_json({"requeued": report.requeued, "skipped": report.skipped})
        return
    for job_id in report.requeued:
        click.echo(job_id)
    for skipped in report.skipped:
        what = "dropped" if skipped["discarded"] else "skipped"
        click.echo(f"{what}: {skipped['job_id'] or '-'}: {skipped['reason']}", err=True)
    kept = sum(not x["discarded"] for x in report.skipped)
    click.echo(
        f"{len(report.requeued)} job(s) requeued"
        + (f", {len(report.skipped) - kept} letter(s) dropped" if len(report.skipped) > kept else "")
        + (f", {kept} letter(s) left in the dead-letter queue (--discard drops them)" if kept else ""),
        err=True,
    )


@click.group()
def cache() -> None:
    """The run cache of jobs: how many executions can be reused, how often they were; forget them."""


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True)
def cache_stats(as_json: bool) -> None:
    """Entries (reusable executions), hits (jobs served from the cache) and misses (jobs executed)."""
    from jobrunner.jobs import cache_stats as stats

    found = or_fail(lambda: stats(settings=_settings()), _handle)
    if as_json:
        echo_json(found)
        return
    click.echo(f"entries {found['entries']}  hits {found['hits']}  misses {found['misses']}")


@cache.command("clear")
def cache_clear() -> None:
    """Forget every entry: the next identical submissions execute again (jobs keep their results)."""
    from jobrunner.jobs import clear_cache

    cleared = or_fail(lambda: clear_cache(settings=_settings()), _handle)
    click.echo(f"{cleared} cache entr{'y' if cleared == 1 else 'ies'} cleared")
