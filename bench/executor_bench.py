"""Notebook execution overhead: jobrunner's one execution path vs papermill, measured in one run.

    .venv/bin/python bench/executor_bench.py [--runs 5]

Times a one-cell parameterised notebook (tests/fixtures/notebooks/ok.ipynb) executed
  - by the papermill CLI (a new process per run: the anchor most teams script around),
  - by papermill.execute_notebook in a long-lived process (fresh kernel each run),
  - by jobrunner.execute without MLflow recording (contract check, kernel, engine, HTML rendering),
  - by jobrunner.execute with MLflow recording into a local SQLite store (the full path).
Prints the median and min wall time of each, and jobrunner's overhead over in-process papermill.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from anchors import papermill_cli, papermill_inproc

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "fixtures" / "notebooks" / "ok.ipynb"


def measure(label: str, runs: int, fn: Callable[[int], None]) -> tuple[str, float, float]:
    fn(-1)  # warm-up (imports, first MLflow DB migration)
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return label, statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="jr-bench-"))
    (work / "dvc.yaml").write_text("stages: {}\n")
    os.environ["JOBRUNNER_PROJECT_DIR"] = str(work)
    os.environ.pop("MLFLOW_TRACKING_URI", None)

    from jobrunner.execution.executor import execute

    pm_cli = papermill_cli(NOTEBOOK, work)
    pm_inproc = papermill_inproc(NOTEBOOK, work)

    def jr(record: bool) -> Callable[[int], None]:
        def run(i: int) -> None:
            result = execute(NOTEBOOK, {"x": 3}, output_path=work / f"jr-{record}-{i}.ipynb", record=record)
            assert result.ok, result.failure

        return run

    rows = [
        measure("papermill CLI (process per run)", args.runs, pm_cli),
        measure("papermill.execute_notebook (in-process)", args.runs, pm_inproc),
        measure("jobrunner.execute, no recording", args.runs, jr(False)),
        measure("jobrunner.execute + MLflow run (SQLite)", args.runs, jr(True)),
    ]
    print(f"\none-cell notebook, {args.runs} runs each after a warm-up, {os.cpu_count()} cores\n")
    print("| how | median s | min s |\n| --- | --- | --- |")
    for label, med, low in rows:
        print(f"| {label} | {med:.3f} | {low:.3f} |")
    base = rows[1][1]
    print(
        f"\njobrunner overhead over in-process papermill: {rows[2][1] - base:+.3f} s without recording, "
        f"{rows[3][1] - base:+.3f} s with MLflow recording; papermill CLI costs {rows[0][1] - base:+.3f} s"
    )


if __name__ == "__main__":
    main()
