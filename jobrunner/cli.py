"""The `jobrunner` command line.

Exit codes (documented in docs/cli.md):
    0  success
    1  the notebook ran and failed (or a job ended FAILED/CANCELLED with --wait)
    2  usage error: bad parameters, unknown notebook, invalid input - nothing was run
    3  infrastructure error: kernel, tracking store, database or broker unavailable
    4  not found (job id, model)
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from jobrunner.errors import InfrastructureError, JobrunnerError, NotebookNotFound, ParameterError

EXIT_FAILED, EXIT_USAGE, EXIT_INFRA, EXIT_NOT_FOUND = 1, 2, 3, 4


def fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def parse_parameter_options(
    schema: Any, params: tuple[tuple[str, str], ...], yaml_texts: tuple[str, ...], files: tuple[str, ...]
) -> dict[str, Any]:
    """Merge -f files, -y YAML and -p NAME VALUE (in that order; later wins) into validated values.

    Raises ParameterError (exit 2) naming every bad parameter.
    """
    typed: dict[str, Any] = {}
    for path in files:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise click.BadParameter(f"cannot read parameters file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise click.BadParameter(f"parameters file {path} must hold a mapping of name: value")
        typed.update(data)
    for text in yaml_texts:
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"-y is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise click.BadParameter("-y must be a YAML mapping of name: value")
        typed.update(data)
    values = schema.validate(typed)
    values.update(schema.coerce_strings(dict(params)))
    return values


def parameter_options(func: Any) -> Any:
    func = click.option("-f", "--parameters-file", "files", multiple=True, type=click.Path(dir_okay=False),
                        help="YAML file of parameters (name: value).")(func)
    func = click.option("-y", "--parameters-yaml", "yaml_texts", multiple=True,
                        help="Parameters as a YAML mapping string.")(func)
    func = click.option("-p", "--parameter", "params", multiple=True, type=(str, str),
                        metavar="NAME VALUE", help="A parameter; the value is converted to the declared type.")(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="notebook-jobs")
def main(verbose: int) -> None:
    """Run parameterised notebooks: now (`run`), as queued jobs (`submit`), or as DVC stages."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.argument("notebook", type=click.Path())
@parameter_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Executed notebook path (.ipynb).")
@click.option("--timeout", type=float, help="Whole-notebook time limit in seconds (default: settings).")
@click.option("--no-record", is_flag=True, help="Do not record the run in MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def run(notebook: str, params: tuple[tuple[str, str], ...], yaml_texts: tuple[str, ...],
        files: tuple[str, ...], output: str | None, timeout: float | None, no_record: bool,
        as_json: bool, quiet: bool) -> None:
    """Execute NOTEBOOK now in a fresh kernel and record it in MLflow.

    Parameters are checked against the notebook's `parameters` cell before anything runs.
    """
    from jobrunner.executor import CancelToken, execute
    from jobrunner.params import read_schema
    from jobrunner.progress import ProgressBar

    try:
        schema = read_schema(notebook)
        values = parse_parameter_options(schema, params, yaml_texts, files)
    except ParameterError as exc:
        fail(str(exc) + f"\n(see: jobrunner params {notebook})")
    except NotebookNotFound as exc:
        fail(str(exc))
    except JobrunnerError as exc:
        fail(str(exc))

    token = CancelToken()
    previous = signal.signal(signal.SIGTERM, lambda *_: token.cancel("SIGTERM received"))
    try:
        with ProgressBar(Path(notebook).stem, disable=quiet or as_json) as bar:
            result = execute(Path(notebook).resolve(), values, output_path=output and Path(output).resolve(),
                             timeout=timeout, record=not no_record, on_progress=bar.update, cancel=token)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_FAILED)
    except InfrastructureError as exc:
        fail(str(exc), EXIT_INFRA)
    finally:
        signal.signal(signal.SIGTERM, previous)

    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(f"{result.status}: {result.notebook} in {result.duration:.1f}s", err=True)
        click.echo(f"  executed notebook: {result.output_path}", err=True)
        if result.html_path:
            click.echo(f"  html: {result.html_path}", err=True)
        if result.run_id:
            click.echo(f"  MLflow run: {result.run_id}", err=True)
        for key, value in sorted(result.metrics.items()):
            click.echo(f"  {key} = {value:.6g}", err=True)
        if result.failure:
            click.echo(f"  error: {result.failure.message}", err=True)
    sys.exit(0 if result.ok else EXIT_FAILED)


@main.command()
@click.argument("notebook", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the schema as JSON.")
def params(notebook: str, as_json: bool) -> None:
    """Show NOTEBOOK's parameters: name, type, default and help text."""
    from jobrunner.params import read_schema

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
        click.echo(f"{p.name:<{width}}  {p.type_label:<14} default={json.dumps(p.default)}"
                   + (f"  # {p.help}" if p.help else ""))


def _register_plugins() -> None:
    """Attach command groups defined in other modules (jobs, lineage) when they are present."""
    import importlib

    for module_name in ("jobrunner.cli_jobs", "jobrunner.cli_lineage", "jobrunner.cli_schedules"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        module.register(main)


_register_plugins()

if __name__ == "__main__":
    main()
