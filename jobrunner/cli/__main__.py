"""`python -m jobrunner.cli ...`: the same as the `jobrunner` command."""

from jobrunner.cli.app import main

main()
