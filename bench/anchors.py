"""The papermill anchors the execution benchmarks compare with, one definition for both scripts.

`papermill_cli`: the papermill command line, a new process per run (what most teams script around);
`papermill_inproc`: papermill.execute_notebook in this long-lived process (a fresh kernel each run).
Both execute `notebook` with x=3 into `work`, as the jobrunner side of each benchmark does.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def papermill_cli(notebook: Path, work: Path) -> Callable[[int], None]:
    papermill = Path(sys.executable).with_name("papermill")

    def run(i: int) -> None:
        subprocess.run(
            [
                str(papermill),
                str(notebook),
                str(work / f"cli-{i}.ipynb"),
                "-p",
                "x",
                "3",
                "--no-progress-bar",
            ],
            check=True,
            capture_output=True,
        )

    return run


def papermill_inproc(notebook: Path, work: Path) -> Callable[[int], None]:
    import papermill

    def run(i: int) -> None:
        papermill.execute_notebook(
            str(notebook),
            str(work / f"pm-{i}.ipynb"),
            parameters={"x": 3},
            progress_bar=False,
            kernel_name="python3",
        )

    return run
