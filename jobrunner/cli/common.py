"""What every command of the `jobrunner` CLI shares: exit codes, `fail()`, the parameter options.

Exit codes (documented in docs/cli.md, docs/jobs.md, docs/schedules.md):
    0  success
    1  the notebook ran and failed (or a job ended FAILED/CANCELLED with --wait)
    2  usage error: bad parameters, unknown notebook, invalid input - nothing was run
    3  infrastructure error: kernel, tracking store, database or broker unavailable
    4  not found (job id, schedule, model)
    5  conflict (cancelling a finished job, an idempotency key reused, a schedule name taken)

Import-light on purpose (click, yaml and jobrunner's leaves only): `jobrunner --help` loads every command
module, so anything heavy is imported inside the command that needs it.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INFRA = 3
    NOT_FOUND = 4
    CONFLICT = 5


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    click.echo(f"error: {message}", err=True)
    sys.exit(int(code))


def fail_for(
    exc: Exception, codes: Sequence[tuple[type[Exception] | tuple[type[Exception], ...], ExitCode]]
) -> NoReturn:
    """Exit with the code of the first entry of `codes` whose class `exc` is an instance of; USAGE for
    any other error. Each command group lists its own classes (jobs, schedules)."""
    for classes, code in codes:
        if isinstance(exc, classes):
            fail(str(exc), code)
    fail(str(exc), ExitCode.USAGE)


def or_fail(call: Callable[[], T], handle: Callable[[Exception], NoReturn]) -> T:
    """`call()`'s result; a JobrunnerError it raises goes to `handle`, which exits with its code."""
    from jobrunner.errors import JobrunnerError

    try:
        return call()
    except JobrunnerError as exc:
        handle(exc)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def settings() -> Any:
    from jobrunner.config import get_settings

    return get_settings()


def quiet_pika() -> None:
    """pika logs every failed connection attempt as ERROR with a traceback; the commands report the
    outcome themselves in one line (e.g. submit: the job waits in the outbox)."""
    import logging

    logging.getLogger("pika").setLevel(logging.CRITICAL)


# -- the papermill-style parameter options: -f FILE, -y YAML, -p NAME VALUE ---------------------------------
def parameters_file_option(func: F) -> F:
    return click.option(
        "-f",
        "--parameters-file",
        "files",
        multiple=True,
        type=click.Path(dir_okay=False),
        help="YAML file of parameters (name: value).",
    )(func)


def parameters_yaml_option(help_text: str = "Parameters as a YAML mapping string.") -> Callable[[F], F]:
    return click.option("-y", "--parameters-yaml", "yaml_texts", multiple=True, help=help_text)


def parameter_option(func: F) -> F:
    return click.option(
        "-p",
        "--parameter",
        "params",
        multiple=True,
        type=(str, str),
        metavar="NAME VALUE",
        help="A parameter; the value is converted to the declared type.",
    )(func)


def parameter_options(func: F) -> F:
    """-p NAME VALUE, -y YAML and -f FILE (shown in that order), as `jobrunner run` and `submit` take them."""
    return parameter_option(parameters_yaml_option()(parameters_file_option(func)))


def parse_parameter_options(
    schema: Any, params: tuple[tuple[str, str], ...], yaml_texts: tuple[str, ...], files: tuple[str, ...]
) -> dict[str, Any]:
    """Merge -f files, -y YAML and -p NAME VALUE (in that order; later wins) into validated values.

    Raises ParameterError (exit 2) naming every bad parameter.
    """
    import yaml

    typed: dict[str, Any] = {}
    for path in files:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError, ValueError) as exc:  # ValueError: an int over 4300 digits
            raise click.BadParameter(f"cannot read parameters file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise click.BadParameter(f"parameters file {path} must hold a mapping of name: value")
        typed.update(data)
    for text in yaml_texts:
        try:
            data = yaml.safe_load(text) or {}
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: an int over 4300 digits
            raise click.BadParameter(f"-y is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise click.BadParameter("-y must be a YAML mapping of name: value")
        typed.update(data)
    values: dict[str, Any] = schema.validate(typed)
    values.update(schema.coerce_strings(dict(params)))
    return values
