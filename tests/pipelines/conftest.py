"""Fixtures of the pipeline tests: fresh git clones of the committed repository.

The stages run as `make demo` runs them, through the local execution service (not JOBRUNNER_SERVICE=off),
so each fixture stops the services started in its clone when it ends (tests/execution_services.py):
otherwise every clone's service would live on for its 10-minute idle timeout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.execution_services import stop_services_under


def _clone(target: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    return target


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Iterator[Path]:
    """A clone of its own for one test."""
    clone = _clone(tmp_path / "repo")
    yield clone
    stop_services_under(clone)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One clone for a module whose tests build on each other (test_pipeline_e2e.py: repro, a second
    repro, a parameter change, a push)."""
    clone = _clone(tmp_path_factory.mktemp("e2e") / "repo")
    yield clone
    stop_services_under(clone)
