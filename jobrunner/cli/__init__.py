"""The `jobrunner` command line (entry point `jobrunner.cli:main`; `python -m jobrunner.cli` too).

The app is jobrunner.cli.app; exit codes, `fail()` and the shared options are in jobrunner.cli.common.
"""

from __future__ import annotations

from jobrunner.cli.app import main
from jobrunner.cli.common import ExitCode, fail, parse_parameter_options
from jobrunner.cli.run import run_notebook_command

__all__ = ["ExitCode", "fail", "main", "parse_parameter_options", "run_notebook_command"]
