"""Running the pipelines' click commands (`python -m pipelines.stage`, `python -m pipelines.summary`) as
functions that return an exit code, so that callers in the same process (the execution service,
`jobrunner stage`, tests) get the code back instead of a SystemExit."""

from __future__ import annotations

import click


def run_command(command: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Parse `argv` (None: sys.argv[1:]) and run `command`; its returned int is the exit code.

    Usage errors print click's usage message and return 2; `--help` prints the help and returns 0.
    Ctrl-C stays a KeyboardInterrupt, as for any Python program (click would turn it into an Abort).
    """
    try:
        code = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise exc.__cause__ from None
        click.echo("Aborted!", err=True)
        return 1
    return code if isinstance(code, int) else 0
