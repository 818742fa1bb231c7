"""The run cache of jobs (real worker, PostgreSQL, RabbitMQ, S3 on moto, MLflow): an identical submission
is SUCCEEDED at once with `cached_from`; a change of code, parameter, input data or lock file is a miss;
re-saving a notebook with other outputs, metadata or markdown is not."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import nbformat
import pytest

from jobrunner.tags import CACHE_HIT_PREFIX
from tests.jobrunner.support import wait_for, wait_state
from tests.jobrunner.support import write_outputs_notebook as _notebook


def test_the_code_digest_ignores_outputs_metadata_and_markdown(tmp_path: Path) -> None:
    from jobrunner.execution.runcache import code_digest, opted_out

    (tmp_path / "notebooks").mkdir()
    nb = nbformat.read(tmp_path / _notebook(tmp_path), as_version=4)
    digest = code_digest(nb)
    resaved = nbformat.from_dict(json.loads(json.dumps(nb)))
    resaved.cells[1].outputs = [nbformat.v4.new_output("stream", text="wrote results/out.json\n")]
    resaved.cells[1].execution_count = 7
    resaved.cells[1].metadata["collapsed"] = True
    resaved.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"  # what JupyterLab rewrites
    resaved.metadata["language_info"] = {"name": "python", "version": "3.11.7"}
    resaved.cells.insert(1, nbformat.v4.new_markdown_cell("# Notes"))
    assert code_digest(resaved) == digest
    changed = nbformat.from_dict(json.loads(json.dumps(nb)))
    changed.cells[1].source += "\nprint('one more line')"
    assert code_digest(changed) != digest
    other_kernel = nbformat.from_dict(json.loads(json.dumps(nb)))
    other_kernel.metadata["kernelspec"]["name"] = "python-gpu"
    assert code_digest(other_kernel) != digest

    assert not opted_out(nb)
    nb.cells[0].source += "# jobrunner: no-cache\n"
    assert opted_out(nb)
    nb.cells[0].source = nb.cells[0].source.replace("# jobrunner: no-cache\n", "")
    nb.cells[1].metadata["tags"] = ["no-cache"]
    assert opted_out(nb)


def _edit(project: Path, notebook: str, change) -> None:
    path = project / notebook
    nb = nbformat.read(path, as_version=4)
    change(nb)
    nbformat.write(nb, path)


@pytest.mark.services
def test_identical_submissions_hit_and_changes_miss(job_env, workers, mlflow_store) -> None:
    from mlflow.tracking import MlflowClient

    from jobrunner.jobs import cache_stats, cancel_job, get_job, submit

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    notebook = _notebook(project)
    (project / "requirements.lock").write_text("pandas==2.3.3\n")
    worker = workers.start()
    first = wait_state(submit(notebook, {"n": 2}).id, {"SUCCEEDED", "FAILED"}, 120)
    assert first.state.value == "SUCCEEDED" and first.cached_from is None, first.error
    assert first.cache_key
    workers.stop(worker)  # from here on nothing executes: a miss stays QUEUED

    warm = submit(notebook, {"n": 2})  # warm this process (imports, connections) before timing
    wait_for(
        lambda: (
            MlflowClient(mlflow_store)
            .get_run(first.mlflow_run_id)
            .data.tags.get(f"{CACHE_HIT_PREFIX}{warm.id}")
        ),
        30,
        "the warm-up hit's tag",
    )
    started = time.perf_counter()
    hit = submit(notebook, {"n": 2})
    took = time.perf_counter() - started
    assert hit.state.value == "SUCCEEDED" and hit.cached_from == first.id
    assert took < 0.1, f"a hit took {took * 1000:.0f} ms from submit to SUCCEEDED"
    assert hit.mlflow_run_id == first.mlflow_run_id and hit.output_uri == first.output_uri
    assert [o.model_dump() for o in hit.outputs] == [o.model_dump() for o in first.outputs]
    assert get_job(hit.id).cached_from == first.id
    tags = wait_for(
        lambda: (
            (t := MlflowClient(mlflow_store).get_run(first.mlflow_run_id).data.tags).get(
                f"{CACHE_HIT_PREFIX}{hit.id}"
            )
            and t
        ),
        30,
        "the cache-hit tag",
    )
    assert tags[f"{CACHE_HIT_PREFIX}{hit.id}"] == first.id
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "status", hit.id],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert f"cached from: job {first.id}" in proc.stdout, proc.stdout + proc.stderr

    # re-saved as JupyterLab does: outputs, execution counts, metadata, a markdown cell - still a hit
    def resave(nb: nbformat.NotebookNode) -> None:
        nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="wrote results/out.json\n")]
        nb.cells[1].execution_count = 3
        nb.metadata["kernelspec"]["display_name"] = "Python 3 (ipykernel)"
        nb.cells.append(nbformat.v4.new_markdown_cell("A note."))

    _edit(project, notebook, resave)
    assert submit(notebook, {"n": 2}).cached_from == first.id
    assert submit(notebook, {"n": 2, "result_path": "results/out.json"}).cached_from == first.id  # a default

    def missed(why: str, **kwargs) -> None:
        job = submit(notebook, **kwargs)
        assert job.state.value == "QUEUED" and job.cached_from is None, why
        cancel_job(job.id)

    missed("a changed parameter", parameters={"n": 3})
    missed("--no-cache", parameters={"n": 2}, cache=False)
    (project / "data" / "in.csv").write_text("1 2 4\n")
    missed("changed input data", parameters={"n": 2})
    (project / "data" / "in.csv").write_text("1 2 3\n")
    assert submit(notebook, {"n": 2}).cached_from == first.id  # the same data again
    (project / "requirements.lock").write_text("pandas==2.3.4\n")
    missed("a changed lock file", parameters={"n": 2})
    (project / "requirements.lock").write_text("pandas==2.3.3\n")
    _edit(project, notebook, lambda nb: setattr(nb.cells[1], "source", nb.cells[1].source + "\n# v2"))
    missed("a changed code cell", parameters={"n": 2})
    _edit(project, notebook, lambda nb: setattr(nb.cells[1], "source", nb.cells[1].source[: -len("\n# v2")]))
    assert submit(notebook, {"n": 2}).cached_from == first.id
    _edit(project, notebook, lambda nb: nb.cells[1].metadata.__setitem__("tags", ["no-cache"]))
    missed("a notebook that opts out", parameters={"n": 2})
    _edit(project, notebook, lambda nb: nb.cells[1].metadata.pop("tags"))

    # a cached output deleted from S3: a miss, not a broken hit
    result = next(o for o in first.outputs if o.parameter == "result_path")
    bucket, key = result.uri[len("s3://") :].split("/", 1)
    boto3.client("s3").delete_object(Bucket=bucket, Key=key)
    missed("a stored output deleted", parameters={"n": 2})

    stats = cache_stats()
    assert stats["entries"] == 1 and stats["hits"] == 6, stats
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "cache", "stats", "--json"],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(proc.stdout) == stats, proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "cache", "clear"],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "1 cache entry cleared", proc.stdout + proc.stderr
    assert cache_stats()["entries"] == 0


@pytest.mark.services
def test_ten_identical_jobs_in_flight_across_two_workers_execute_once(job_env, workers, mlflow_store) -> None:
    from mlflow.tracking import MlflowClient

    from jobrunner.jobs import cache_stats, job_events, submit

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    notebook = _notebook(project)
    workers.start("a")
    workers.start("b")
    ids = [submit(notebook, {"n": 4}).id for _ in range(10)]  # all before any ran: ten misses at submit
    done = [wait_state(i, {"SUCCEEDED", "FAILED", "CANCELLED"}, 180) for i in ids]
    assert {j.state.value for j in done} == {"SUCCEEDED"}, [j.error for j in done]
    executed = [j for j in done if j.cached_from is None]
    assert len(executed) == 1, [(j.id, j.cached_from) for j in done]
    assert {j.cached_from for j in done if j.cached_from} == {executed[0].id}
    assert {j.mlflow_run_id for j in done} == {executed[0].mlflow_run_id}
    exp = MlflowClient(mlflow_store).get_experiment_by_name(job_env["JOBRUNNER_MLFLOW_EXPERIMENT"])
    runs = MlflowClient(mlflow_store).search_runs([exp.experiment_id])
    assert len(runs) == 1  # one kernel, one MLflow run for the ten jobs
    waited = [e for i in ids for e in job_events(i) if "waiting for the identical job" in (e.message or "")]
    assert waited, "the identical jobs waited for the one executing"
    assert all(j.attempt <= 1 for j in done)  # waiting is not an attempt
    assert cache_stats()["hits"] == 9


def _once_notebook(project: Path, name: str, flag: str, first_run: str) -> None:
    """notebooks/`name`: runs `first_run` (indented code) only while the file `flag` exists, which it
    deletes, so the first execution differs from every later one; then prints ok and its `n`."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("n = 1  # a number\n")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            f"import time\nfrom jobrunner.notebook import project_path\nflag = project_path({flag!r})\n"
            f"if flag.exists():\n    flag.unlink()\n{first_run}print('ok', n)\n"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "notebooks" / name)


@pytest.mark.services
def test_when_the_executing_job_fails_exactly_one_waiter_takes_over(job_env, workers) -> None:
    from jobrunner.jobs import submit

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    _once_notebook(
        project,
        "flaky.ipynb",
        "fail-once",
        "    time.sleep(2)\n    raise RuntimeError('the first execution fails')\n",
    )
    (project / "fail-once").write_text("")
    workers.start("a")
    workers.start("b")
    ids = [submit("notebooks/flaky.ipynb", {"n": 7}).id for _ in range(5)]
    done = [wait_state(i, {"SUCCEEDED", "FAILED", "CANCELLED"}, 180) for i in ids]
    failed = [j for j in done if j.state.value == "FAILED"]
    assert len(failed) == 1 and failed[0].error.evalue == "the first execution fails", [j.error for j in done]
    executed = [j for j in done if j.state.value == "SUCCEEDED" and j.cached_from is None]
    assert len(executed) == 1, [(j.state.value, j.cached_from) for j in done]  # one waiter took over
    assert [j.cached_from for j in done if j.cached_from] == [executed[0].id] * 3


@pytest.mark.services
@pytest.mark.slow
def test_sigkill_of_the_executing_worker_one_execution_resumes_and_all_ten_succeed(job_env, workers) -> None:
    from sqlalchemy import select

    from jobrunner.config import get_settings
    from jobrunner.jobs import get_job, submit
    from jobrunner.store.db import session_scope
    from jobrunner.store.models import RunCacheClaim
    from tests.jobrunner.support import wait_consumers

    project = Path(job_env["JOBRUNNER_PROJECT_DIR"])
    _once_notebook(project, "slow_once.ipynb", "slow-once", "    time.sleep(30)\n")
    (project / "slow-once").write_text("")
    slow = {"JOBRUNNER_HEARTBEAT_TIMEOUT": "60", "JOBRUNNER_TAKEOVER_TIMEOUT": "2"}
    procs = [workers.start("k1", **slow), workers.start("k2", **slow)]
    wait_consumers(job_env, 2, timeout=240)
    ids = [submit("notebooks/slow_once.ipynb", {"n": 3}).id for _ in range(10)]

    def holder() -> str | None:
        with session_scope(get_settings()) as session:
            return session.scalar(select(RunCacheClaim.job_id))

    held = wait_for(
        lambda: (h := holder()) and get_job(h).progress.cells_done >= 1 and h, 120, "the executing job"
    )
    busy = next(p for p in procs if p.worker_id == get_job(held).worker_id)
    time.sleep(1.0)
    busy.kill()  # SIGKILL, mid-cell
    busy.wait(10)
    done = [wait_state(i, {"SUCCEEDED", "FAILED", "CANCELLED"}, 180) for i in ids]
    assert {j.state.value for j in done} == {"SUCCEEDED"}, [j.error for j in done]
    executed = [j for j in done if j.cached_from is None]
    assert [j.id for j in executed] == [held]  # one execution took the work over
    assert executed[0].attempt == 2 and executed[0].worker_id != busy.worker_id
    assert sorted(j.cached_from for j in done if j.cached_from) == [held] * 9


def test_jobrunner_run_with_cache_restores_a_recorded_runs_outputs(
    project, mlflow_store, monkeypatch
) -> None:
    """`jobrunner run --cache`: a run with the same key restores the recorded outputs into the workspace
    without a kernel; a changed parameter executes."""
    import os

    from mlflow.tracking import MlflowClient

    from jobrunner.config import get_settings
    from jobrunner.execution.executor import execute

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("JOBRUNNER_MLFLOW_EXPERIMENT", f"run-cache-{project.name}")
    get_settings.cache_clear()
    notebook = _notebook(project)
    first = execute(notebook, {"n": 5}, html=False, cache=True)
    assert first.ok and first.cached_from is None, first.failure
    written = {p: (project / p).read_bytes() for p in ("results/out.json", "models/m/weights.txt")}
    (project / "results" / "out.json").unlink()
    (project / "models" / "m" / "weights.txt").write_text("edited by hand")

    env = {**os.environ, "JOBRUNNER_SERVICE": "off", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner.cli", "run", notebook, "-p", "n", "5", "--cache"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"run cache hit: outputs restored from MLflow run {first.run_id}" in proc.stderr
    assert {p: (project / p).read_bytes() for p in written} == written  # restored byte for byte
    client = MlflowClient(mlflow_store)
    exp = client.get_experiment_by_name(f"run-cache-{project.name}")
    assert len(client.search_runs([exp.experiment_id])) == 1  # nothing executed, nothing recorded

    other = execute(notebook, {"n": 6}, html=False, cache=True)
    assert other.ok and other.cached_from is None  # a changed parameter is a miss
    assert json.loads((project / "results" / "out.json").read_text()) == {"total": 36}
