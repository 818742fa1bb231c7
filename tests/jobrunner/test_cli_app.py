"""The CLI as a package (jobrunner/cli/): one app, light to load, one set of exit codes, `jobrunner stage`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobrunner.cli import ExitCode, main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "mlflow", "papermill", "pika", "nbformat", "pipelines")


def _env() -> dict[str, str]:
    return {**os.environ, "JOBRUNNER_SERVICE": "off"}


def test_help_lists_every_command_and_loads_nothing_heavy() -> None:
    code = (
        "import sys; from jobrunner.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n"
        f"print('loaded:', *sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    *help_lines, loaded = proc.stdout.rstrip("\n").split("\n")
    assert loaded == "loaded:", f"`jobrunner --help` imported {loaded}"
    listed = "\n".join(help_lines)
    for command in (
        "run",
        "params",
        "service",
        "stage",
        "migrate",
        "worker",
        "submit",
        "status",
        "list",
        "logs",
        "cancel",
        "dlq",
        "cache",
        "schedule",
        "scheduler",
        "lineage",
        "check",
        "diff",
        "verify",
    ):
        assert f"\n  {command} " in listed, command


def test_exit_codes_are_one_enum() -> None:
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]
    assert ExitCode.USAGE == 2 and ExitCode.INFRA == 3 and ExitCode.NOT_FOUND == 4 and ExitCode.CONFLICT == 5


def test_the_command_modules_share_one_fail_and_one_exit_code_enum() -> None:
    from jobrunner.cli import common, jobs, provenance, run, schedules

    for module in (jobs, provenance, run, schedules):
        assert module.fail is common.fail and module.ExitCode is common.ExitCode


def test_python_dash_m_runs_the_same_app() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "stage", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: python -m jobrunner.cli stage [OPTIONS] NAME" in proc.stdout


@pytest.mark.parametrize("argv", [["no-such-stage"], ["ingest", "--profile", "no-such-profile"]])
def test_stage_is_python_dash_m_pipelines_stage(argv: list[str]) -> None:
    """Same message, same exit code (2: bad stage definition) as the entry point dvc.yaml runs."""
    ours = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "stage", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=120,
    )
    theirs = subprocess.run(
        [sys.executable, "-m", "pipelines.stage", *argv],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=120,
    )
    assert (ours.returncode, ours.stderr, ours.stdout) == (theirs.returncode, theirs.stderr, theirs.stdout)
    assert ours.returncode == ExitCode.USAGE and "error: " in ours.stderr


def test_stage_hands_its_options_to_the_stage_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipelines.stage

    seen: list[list[str]] = []
    monkeypatch.setattr(pipelines.stage, "main", lambda argv: seen.append(argv) or 1)
    result = CliRunner().invoke(main, ["stage", "train", "--profile", "ci", "--quiet", "--no-cache"])
    assert (result.exit_code, seen) == (1, [["train", "--profile", "ci", "--quiet", "--no-cache"]])
    result = CliRunner().invoke(main, ["stage", "train"])
    assert (result.exit_code, seen[-1]) == (1, ["train"])
