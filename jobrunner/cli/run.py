"""`jobrunner run`, `jobrunner params` and `jobrunner service`: run a notebook now, show its parameters,
and the local execution service `run` goes through.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from jobrunner.cli.common import ExitCode, fail, parameter_options, parse_parameter_options
from jobrunner.errors import InfrastructureError, JobrunnerError, ParameterError


@click.command()
@click.argument("notebook", type=click.Path())
@parameter_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Executed notebook path (.ipynb).")
@click.option("--timeout", type=float, help="Whole-notebook time limit in seconds (default: settings).")
@click.option("--no-record", is_flag=True, help="Do not record the run in MLflow.")
@click.option(
    "--cache",
    is_flag=True,
    help="Reuse a recorded run with the same code, parameters, input data and environment: its "
    "outputs are restored into the workspace and nothing runs (docs/cli.md).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run(
    notebook: str,
    params: tuple[tuple[str, str], ...],
    yaml_texts: tuple[str, ...],
    files: tuple[str, ...],
    output: str | None,
    timeout: float | None,
    no_record: bool,
    cache: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Execute NOTEBOOK now in a fresh kernel and record it in MLflow.

    Parameters are checked against the notebook's `parameters` cell before anything runs. The run goes
    through the local execution service when it can (warm kernels, MLflow already imported; started on
    first use, JOBRUNNER_SERVICE=off to run in this process), with the same output and exit codes.
    """
    from jobrunner.cli import service_client
    from jobrunner.execution.progress import Progress, ProgressBar

    args = {
        "notebook": notebook,
        "params": [list(p) for p in params],
        "yaml_texts": list(yaml_texts),
        "files": list(files),
        "output": output,
        "timeout": timeout,
        "no_record": no_record,
        "cache": cache,
        "as_json": as_json,
        "quiet": quiet,
    }
    code: int | None = None
    if service_client.enabled():
        with ProgressBar(Path(notebook).stem, disable=quiet or as_json) as bar:
            code = service_client.run_command(
                "run",
                args,
                on_progress=lambda e: bar.update(
                    Progress(e["cell_index"], e["cells_done"], e["cells_total"])
                ),
            )
    if code is None:  # no service: run here
        code = _run_here(args)
    sys.exit(code)


def _run_here(args: dict[str, Any]) -> int:
    from jobrunner.execution.executor import CancelToken
    from jobrunner.execution.progress import ProgressBar

    token = CancelToken()
    previous = signal.signal(signal.SIGTERM, lambda *_: token.cancel("SIGTERM received"))
    try:
        with ProgressBar(
            Path(args["notebook"]).stem, disable=bool(args.get("quiet") or args.get("as_json"))
        ) as bar:
            return run_notebook_command(args, cwd=Path.cwd(), env=None, on_progress=bar.update, cancel=token)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_notebook_command(
    args: dict[str, Any],
    *,
    cwd: Path,
    env: dict[str, str] | None,
    out: Any = None,
    err: Any = None,
    on_progress: Any = None,
    cancel: Any = None,
) -> int:
    """`jobrunner run` itself, in this process or in the execution service; returns the exit code.

    `args` are the command's options as given; relative paths are taken from `cwd`; `env` is the
    caller's environment (the kernel's base), None for this process's. Output goes to `out`/`err`.
    """
    from jobrunner.execution.executor import execute
    from jobrunner.execution.params import read_schema

    def _out(text: str) -> None:
        (out or (lambda t: click.echo(t, nl=False)))(text + "\n")

    def _err(text: str) -> None:
        (err or (lambda t: click.echo(t, nl=False, err=True)))(text + "\n")

    notebook = args["notebook"]
    nb_path = Path(notebook) if Path(notebook).is_absolute() else cwd / notebook
    try:
        try:
            schema = read_schema(nb_path)
        except JobrunnerError as exc:  # messages name the notebook as the user wrote it
            raise type(exc)(str(exc).replace(str(nb_path), notebook)) from exc
        files = [str(Path(f) if Path(f).is_absolute() else cwd / f) for f in args.get("files") or ()]
        values = parse_parameter_options(
            schema,
            tuple(tuple(p) for p in args.get("params") or ()),
            tuple(args.get("yaml_texts") or ()),
            tuple(files),
        )
    except ParameterError as exc:
        _err(f"error: {str(exc).replace(str(nb_path), notebook)}\n(see: jobrunner params {notebook})")
        return ExitCode.USAGE
    except (JobrunnerError, click.BadParameter) as exc:
        _err(f"error: {exc.format_message() if isinstance(exc, click.BadParameter) else exc}")
        return ExitCode.USAGE

    output = args.get("output")
    out_path = (Path(output) if Path(output).is_absolute() else cwd / output) if output else None
    try:
        result = execute(
            nb_path.resolve(),
            values,
            output_path=out_path,
            timeout=args.get("timeout"),
            record=not args.get("no_record"),
            on_progress=on_progress,
            cancel=cancel,
            base_env=env,
            cache=bool(args.get("cache")),
        )
    except KeyboardInterrupt:
        _err("error: interrupted")
        return ExitCode.FAILED
    except InfrastructureError as exc:
        _err(f"error: {exc}")
        return ExitCode.INFRA
    except JobrunnerError as exc:
        _err(f"error: {exc}")
        return ExitCode.USAGE

    if args.get("as_json"):
        _out(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        _err(f"{result.status}: {result.notebook} in {result.duration:.1f}s")
        if result.cached_from:
            _err(
                f"  run cache hit: outputs restored from MLflow run {result.cached_from}; "
                "nothing was executed"
            )
        _err(f"  executed notebook: {result.output_path}")
        if result.html_path:
            _err(f"  html: {result.html_path}")
        if result.run_id:
            _err(f"  MLflow run: {result.run_id}")
        for key, value in sorted(result.metrics.items()):
            _err(f"  {key} = {value:.6g}")
        if result.failure:
            _err(f"  error: {result.failure.message}")
    return 0 if result.ok else ExitCode.FAILED


@click.group()
def service() -> None:
    """The local execution service that `jobrunner run` uses (warm kernels, MLflow kept imported)."""


@service.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def service_status(as_json: bool) -> None:
    """Show the service of this folder and configuration (exit 1 if none runs)."""
    from jobrunner.cli import service_client

    info = service_client.status()
    if info is None:
        key = service_client.service_key()
        click.echo(
            f"no execution service runs for this configuration (log: {service_client.paths(key)['log']})",
            err=True,
        )
        sys.exit(ExitCode.FAILED)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    pool = info.get("pool") or {}
    click.echo(
        f"service {info['key']} pid {info['pid']}, up {info['uptime_s']}s, {info['served']} run(s), "
        f"{info['active']} running; project {info['project_dir']}; idle kernels {pool.get('idle')}; "
        f"log {info['log']}"
    )


@service.command("stop")
def service_stop() -> None:
    """Stop the service of this folder and configuration (running requests finish first)."""
    from jobrunner.cli import service_client

    click.echo("stopped" if service_client.stop() else "no execution service was running", err=True)


@click.command()
@click.argument("notebook", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the schema as JSON.")
def params(notebook: str, as_json: bool) -> None:
    """Show NOTEBOOK's parameters: name, type, default and help text."""
    from jobrunner.execution.params import read_schema

    try:
        schema = read_schema(notebook)
    except JobrunnerError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(schema.as_dict(), indent=2, default=str))
        return
    if schema.cell_index is None:
        click.echo(f"{notebook} has no cell tagged 'parameters': it runs with its own values only.")
        return
    width = max((len(n) for n in schema.parameters), default=4)
    for p in schema.parameters.values():
        click.echo(
            f"{p.name:<{width}}  {p.type_label:<14} default={json.dumps(p.default)}"
            + (f"  # {p.help}" if p.help else "")
        )
