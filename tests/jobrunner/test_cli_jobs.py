"""The job commands as a user types them: embedded mode (SQLite, no broker) end to end, exit codes, JSON."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.jobrunner.support import PYTHON


def burst_worker(cli, project) -> subprocess.CompletedProcess[str]:
    """`jobrunner worker --burst` in the CLI's embedded environment: runs what is queued, then exits 0."""
    worker = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "worker", "--burst"],
        env=cli.env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    return worker


def test_embedded_submit_worker_status_logs_round_trip(cli, project):
    code, out, _ = cli("submit", "notebooks/ok.ipynb", "-p", "x", "41", "-p", "label", "answer", "--json")
    assert code == 0
    submitted = json.loads(out)
    assert submitted["state"] == "QUEUED" and submitted["parameters"]["x"] == 41
    job_id = submitted["id"]

    burst_worker(cli, project)

    code, out, _ = cli("status", job_id, "--json")
    status = json.loads(out)
    assert code == 0 and status["state"] == "SUCCEEDED" and status["error"] is None
    assert status["progress"] == {"cells_done": 5, "cells_total": 5, "current_cell": None}
    assert os.path.isfile(status["output_uri"]) and str(project) in status["output_uri"]

    code, out, _ = cli("logs", job_id)
    assert code == 0 and "RUNNING" in out and "SUCCEEDED" in out and "answer 43.5" in out

    code, out, err = cli("list", "--state", "SUCCEEDED")
    assert code == 0 and job_id in out and "1 of 1 job(s)" in err


def test_submit_wait_exits_1_when_the_notebook_fails(cli, project, tmp_path):
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [PYTHON, "-m", "jobrunner.cli", "worker"],
        env=cli.env,
        cwd=project,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "jobrunner.cli",
                "submit",
                "notebooks/raises.ipynb",
                "-p",
                "message",
                "nope",
                "--wait",
                "--json",
            ],
            env=cli.env,
            cwd=project,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        worker.terminate()
        worker.wait(30)
    assert result.returncode == 1, result.stderr[-2000:]
    job = json.loads(result.stdout)
    assert job["state"] == "FAILED"
    assert job["error"]["ename"] == "ValueError" and job["error"]["evalue"] == "nope"
    assert job["error"]["cell_index"] == 2
    assert worker.returncode == 0  # SIGTERM while idle: clean exit


def test_exit_codes_for_user_errors(cli):
    code, _, err = cli("submit", "notebooks/ok.ipynb", "-p", "x", "three")
    assert code == 2 and "x" in err and "nothing was queued" in err
    code, _, err = cli("submit", "../etc/passwd")
    assert code == 2 and "notebook roots" in err
    code, _, err = cli("status", "no-such-job")
    assert code == 4 and "no job" in err
    code, out, _ = cli("submit", "notebooks/ok.ipynb", "-p", "x", "1")
    job_id = out.strip()
    code, out, _ = cli("cancel", job_id)
    assert code == 0 and "CANCELLED" in out
    code, _, err = cli("cancel", job_id)
    assert code == 5 and "cannot become CANCELLED" in err
    code, out, _ = cli("list", "--json")
    page = json.loads(out)
    assert page["total"] == 1 and page["items"][0]["state"] == "CANCELLED"


def test_idempotency_key_on_the_command_line(cli):
    _, first, _ = cli("submit", "notebooks/ok.ipynb", "--idempotency-key", "run-1")
    _, second, _ = cli("submit", "notebooks/ok.ipynb", "--idempotency-key", "run-1")
    assert first.strip() == second.strip() != ""


def test_migrate_command_reports_the_revision(cli):
    from tests.jobrunner.support import LATEST_MIGRATION as LATEST

    code, out, _ = cli("migrate")
    assert code == 0 and LATEST in out


def test_embedded_dead_letters_list_and_requeue(cli, project):
    from jobrunner.config import get_settings
    from jobrunner.store.db import session_scope
    from jobrunner.store.models import Outbox

    code, out, _ = cli("submit", "notebooks/no_parameters.ipynb")
    job_id = out.strip()
    with session_scope(get_settings()) as session:  # a message for a job that does not exist
        session.add(Outbox(job_id=job_id, payload={"job_id": "ghost", "schema_version": 1, "attempt": 0}))
    burst_worker(cli, project)
    code, out, _ = cli("dlq", "list", "--json")
    letters = json.loads(out)
    assert code == 0 and [d["job_id"] for d in letters] == ["ghost"]
    assert "no job ghost" in letters[0]["reason"]
    code, out, _ = cli("status", job_id, "--json")
    assert json.loads(out)["state"] == "SUCCEEDED"
    code, _, err = cli("dlq", "requeue")
    assert code == 2 and "--all" in err


@pytest.mark.services
def test_worker_refuses_to_start_on_an_unmigrated_database(cli, project, make_postgres_db):
    env = {**cli.env, "JOBRUNNER_DATABASE_URL": make_postgres_db()}
    result = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "worker"],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert "run `jobrunner migrate`" in result.stderr


def test_worker_logs_one_json_line_per_job_event_with_job_id_attempt_and_trace_id(cli, project):
    code, out, _ = cli("submit", "notebooks/ok.ipynb", "-p", "x", "1", "--json")
    assert code == 0
    job_id = json.loads(out)["id"]
    worker = burst_worker(cli, project)
    lines = [json.loads(line) for line in worker.stderr.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([ln for ln in worker.stderr.splitlines() if ln.strip()]), worker.stderr
    events = {line["event"]: line for line in lines if line.get("job_id") == job_id and "event" in line}
    assert {"taken", "finished"} <= set(events), lines
    taken, finished = events["taken"], events["finished"]
    assert taken["attempt"] == finished["attempt"] == 1 and taken["level"] == "INFO"
    assert finished["state"] == "SUCCEEDED" and finished["duration_s"] > 0
    assert len(taken["trace_id"]) == 32 and taken["trace_id"] == finished["trace_id"]  # one trace per job
    assert any(line["message"].startswith("worker ") and "started" in line["message"] for line in lines)
