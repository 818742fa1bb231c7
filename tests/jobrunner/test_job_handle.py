"""The notebook-side job API (`jobrunner.notebook.submit(...).wait()`) and per-job time limits, in
embedded mode (SQLite job store, no broker) with a real worker process."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.jobrunner.support import PYTHON, wait_for


@pytest.fixture
def worker(cli, project):
    proc = subprocess.Popen(
        [PYTHON, "-m", "jobrunner.cli", "worker"],
        env=cli.env,
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=(project / "worker.log").open("wb"),
    )
    yield proc
    proc.terminate()
    proc.wait(30)


def test_submit_wait_returns_the_job_and_a_failing_notebook_raises_job_failed(cli, project, worker):
    from jobrunner.errors import JobFailed
    from jobrunner.notebook import submit

    ok = submit("notebooks/ok.ipynb", {"x": 1, "label": "sum"})
    failing = submit("notebooks/raises.ipynb", {"message": "bad input row 7"})
    assert ok.state == "QUEUED" and "ok.ipynb QUEUED" in repr(ok)

    done = ok.wait(timeout=180, progress=False)
    assert done.state.value == "SUCCEEDED" and done.mlflow_run_id and done.output_uri
    assert done.progress.cells_done == done.progress.cells_total == 5

    with pytest.raises(JobFailed) as caught:
        failing.wait(timeout=180, progress=False)
    assert "in cell 2" in str(caught.value) and "bad input row 7" in str(caught.value)
    assert caught.value.job.error.ename == "ValueError" and caught.value.job.output_uri
    assert failing.wait(timeout=5, progress=False, check=False).state.value == "FAILED"


def test_per_job_timeout_stops_the_notebook_and_wait_timeout_leaves_the_job_running(
    cli,
    project,
    worker,
):
    from jobrunner.errors import JobFailed, WaitTimeout
    from jobrunner.notebook import submit

    limited = submit("notebooks/sleeps.ipynb", {"seconds": 120.0}, timeout=2)
    assert limited.job.timeout_seconds == 2
    started = time.monotonic()
    with pytest.raises(JobFailed) as caught:
        limited.wait(timeout=120, progress=False)
    job = caught.value.job
    assert job.error.kind == "timeout" and "2s" in job.error.message, job.error
    assert (job.finished_at - job.started_at).total_seconds() < 30
    assert time.monotonic() - started < 60

    long = submit("notebooks/sleeps.ipynb", {"seconds": 120.0})
    with pytest.raises(WaitTimeout) as waited:
        long.wait(timeout=0.5, progress=False)
    assert long.id in str(waited.value) and "keeps running" in str(waited.value)
    wait_for(lambda: long.refresh().state.value == "RUNNING", 60, "the long job to start")
    long.cancel()
    with pytest.raises(JobFailed) as cancelled:
        long.wait(timeout=60, progress=False)
    assert cancelled.value.job.state.value == "CANCELLED"


def test_a_bad_time_limit_is_refused_before_anything_is_queued(cli, project):
    from jobrunner.errors import InvalidTimeout
    from jobrunner.jobs import list_jobs
    from jobrunner.notebook import submit

    for bad in (0, -1, 10**9, "60", True, float("nan")):
        with pytest.raises(InvalidTimeout, match="timeout must be a number of seconds"):
            submit("notebooks/ok.ipynb", {"x": 1}, timeout=bad)
    code, _, err = cli("submit", "notebooks/ok.ipynb", "--timeout", "0")
    assert code == 2 and "--timeout" in err
    assert list_jobs().total == 0
