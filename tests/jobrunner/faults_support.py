"""Helpers of the fault suite (test_faults_*.py; no tests here): a notebook that leaves a mark each time it
runs to the end, the strict invariants every fault test asserts, AMQP through a cuttable proxy.

Invariants after a fault (docs/operations.md, "Fault tolerance"):
- every job SUCCEEDED exactly once (one SUCCEEDED event), its attempt count explained by its events;
- no notebook that ran to the end ran again (one mark per job);
- one successful, non-superseded MLflow run per job, the one the job row names.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat

from jobrunner.tags import ATTEMPT_TAG, JOB_ID_TAG, OUTCOME_TAG, SUPERSEDED_TAG
from tests.jobrunner.support import TcpProxy, infrastructure_retries, job, wait_for

AMQP_HOSTPORT = "127.0.0.1:5672"
SLEEP_CELL = 3  # progress.current_cell of the sleep cell (papermill's injected parameters cell counts)


def _write_notebook(project: Path, name: str, parameters: str, cells: list[str]) -> str:
    """notebooks/`name`: a parameters cell with `parameters`, then one code cell per source, python3."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(source) for source in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, project / "notebooks" / name)
    return f"notebooks/{name}"


def write_marks_notebook(project: Path) -> str:
    """notebooks/marks.ipynb: waits for the file `gate` (if given), sleeps `seconds`, then appends a line to
    <marks>/<tag>.txt (its last cell)."""
    return _write_notebook(
        project,
        "marks.ipynb",
        'seconds = 1.0\nmarks = ""\ntag = ""\ngate = ""',
        [
            "import pathlib\nimport time",
            # with a gate: wait until that file exists (the test decides when the cell ends), then sleep
            "while gate and not pathlib.Path(gate).exists():\n    time.sleep(0.05)\ntime.sleep(seconds)",
            "folder = pathlib.Path(marks)\nfolder.mkdir(parents=True, exist_ok=True)\n"
            'with open(folder / f"{tag}.txt", "a") as f:\n    f.write("finished\\n")',
        ],
    )


def submit_marked(project: Path, n: int, seconds: float, prefix: str, gate: Path | None = None) -> list[str]:
    from jobrunner.jobs import submit

    notebook = write_marks_notebook(project)
    marks = str(project / "marks")
    extra = {"gate": str(gate)} if gate is not None else {}
    return [
        submit(notebook, {"seconds": seconds, "marks": marks, "tag": f"{prefix}{i}", **extra}).id
        for i in range(n)
    ]


def marks_of(project: Path, job_id: str) -> int:
    """How many times the job's notebook ran to its end."""
    tag = job(job_id).parameters["tag"]
    path = project / "marks" / f"{tag}.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def running(ids: list[str], cells: tuple[int, ...] | None = (SLEEP_CELL,)) -> list[Any]:
    """The jobs RUNNING inside one of `cells` (None: RUNNING at all, whichever cell its progress shows)."""
    jobs = [job(i) for i in ids]
    return [
        j for j in jobs if j.state.value == "RUNNING" and (cells is None or j.progress.current_cell in cells)
    ]


def wait_busy(ids: list[str], count: int, timeout: float = 240, *, any_cell: bool = False) -> list[Any]:
    """Wait until `count` of the jobs are inside their sleep cell (or, `any_cell`, RUNNING at all: two jobs
    rarely share a few-second sleep, and progress is written in batches, so both may never show a cell
    at the same poll)."""
    cells = None if any_cell else (SLEEP_CELL,)
    return wait_for(
        lambda: r if len(r := running(ids, cells)) >= count else None,
        timeout,
        f"{count} jobs in {'a' if any_cell else 'their sleep'} cell",
    )


def wait_all(ids: list[str], timeout: float) -> list[Any]:
    terminal = {"SUCCEEDED", "FAILED", "CANCELLED"}
    wait_for(
        lambda: all(job(i).state.value in terminal for i in ids), timeout, "every job to finish", interval=0.5
    )
    return [job(i) for i in ids]


def mlflow_runs(env: dict[str, str], job_id: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name(env["JOBRUNNER_MLFLOW_EXPERIMENT"])
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{JOB_ID_TAG}` = '{job_id}'")


def successful_runs(env: dict[str, str], job_id: str) -> list[Any]:
    return [
        r
        for r in mlflow_runs(env, job_id)
        if r.info.status == "FINISHED"
        and r.data.tags.get(OUTCOME_TAG) == "succeeded"
        and r.data.tags.get(SUPERSEDED_TAG) != "true"
    ]


def assert_exactly_once(
    env: dict[str, str], project: Path, ids: list[str], *, requeues_allowed: bool = False
) -> None:
    """The strict invariants of the module docstring, for every job in `ids`."""
    from jobrunner.jobs import job_events

    for job_id in ids:
        done = job(job_id)
        assert done.state.value == "SUCCEEDED", (job_id, done.state, done.error)
        events = job_events(job_id)
        states = [e.to_state for e in events]
        assert states.count("SUCCEEDED") == 1 and states[-1] == "SUCCEEDED", states
        requeues = [e.message for e in events if e.from_state == "RUNNING" and e.to_state == "QUEUED"]
        if not requeues_allowed:  # only an infrastructure error (a kernel's port race) may retry
            assert done.attempt == 1 + len(infrastructure_retries(job_id)), (done.attempt, requeues)
        assert marks_of(project, job_id) == 1, f"job {job_id}'s notebook ran to its end more than once"
        good = successful_runs(env, job_id)
        assert [r.info.run_id for r in good] == [done.mlflow_run_id], [
            (r.info.status, r.data.tags.get(ATTEMPT_TAG), r.data.tags.get(SUPERSEDED_TAG))
            for r in mlflow_runs(env, job_id)
        ]


def amqp_proxy() -> tuple[TcpProxy, Any]:
    proxy = TcpProxy(("127.0.0.1", 5672)).start()
    return proxy, lambda url: url.replace(AMQP_HOSTPORT, f"127.0.0.1:{proxy.port}")


def consumers(env: dict[str, str]) -> int:
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(env["JOBRUNNER_BROKER_URL"]))
    try:
        return conn.channel().queue_declare(env["JOBRUNNER_QUEUE_NAME"], passive=True).method.consumer_count
    finally:
        if conn.is_open:
            conn.close()


def stop_within(proc: Any, seconds: float) -> float:
    """SIGTERM `proc`; assert it exits 0 within `seconds`; returns how long it took."""
    import signal

    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(seconds + 30)  # wait longer to report the real time on failure
    took = time.monotonic() - t0
    assert code == 0 and took <= seconds, f"worker exited {code} after {took:.1f}s (limit {seconds:.0f}s)"
    return took


def write_long_first_notebook(project: Path) -> str:
    """notebooks/long_first.ipynb: its sleep cell (progress cell SLEEP_CELL) sleeps `seconds` the first time
    it runs for a `marker` and `again` seconds on every later run. A kill test kills the first attempt
    deep inside a long cell (a wide margin on a loaded machine) and waits only briefly for the rerun."""
    return _write_notebook(
        project,
        "long_first.ipynb",
        'seconds = 30.0\nagain = 0.5\nmarker = ""',
        [
            "import pathlib\nimport time\nseen = pathlib.Path(marker)",
            "first = not seen.exists()\nseen.touch()\ntime.sleep(seconds if first else again)",
            "print('first run' if first else 'a later run')",
        ],
    )
