"""Fault suite, bad input: oversized parameters, huge numbers, dead letters nobody can requeue.

Each is refused or skipped with a message that names what was wrong, the limit and the setting - never a
traceback, never a silent success.
"""

from __future__ import annotations

import json
import uuid

import pytest
from click.testing import CliRunner

from jobrunner.cli import main
from jobrunner.tags import PARAMS_TRUNCATED_TAG


def test_oversized_parameter_value_is_refused_naming_parameter_limit_and_setting(cli, project):
    code, out, err = cli("submit", "notebooks/ok.ipynb", "-p", "label", "a" * 70_000)
    assert code == 2 and out == ""
    assert "parameter 'label' is 68 KiB (70002 bytes) as JSON" in err
    assert "limit is 64 KiB (65536 bytes) per value" in err and "JOBRUNNER_MAX_PARAMETER_BYTES" in err
    assert len(err) < 1000  # the value itself is not echoed
    code, _, err = cli("list")
    assert code == 0 and "0 of 0 job(s)" in err  # nothing was queued


def test_parameters_over_the_per_job_limit_are_refused(cli, monkeypatch):
    monkeypatch.setenv("JOBRUNNER_MAX_PARAMETERS_BYTES", "1000")
    code, _, err = cli(
        "submit", "notebooks/ok.ipynb", "-p", "label", "a" * 600, "-y", json.dumps({"items": ["b" * 500]})
    )
    assert code == 2
    assert "together; the limit is 1000 bytes per job (setting JOBRUNNER_MAX_PARAMETERS_BYTES)" in err
    assert "'label' (602 bytes)" in err and "'items' (504 bytes)" in err


def test_python_api_raises_parameter_error_the_rest_api_maps_to_422(project, monkeypatch):
    from jobrunner.config import get_settings
    from jobrunner.errors import ParameterError
    from jobrunner.jobs import submit

    monkeypatch.setenv("JOBRUNNER_MAX_PARAMETER_BYTES", "100")
    get_settings.cache_clear()
    with pytest.raises(ParameterError) as caught:
        submit("notebooks/ok.ipynb", {"label": "x" * 200})
    problem = caught.value.problems[0]
    assert (problem.name, problem.problem) == ("label", "too_large")
    assert "JOBRUNNER_MAX_PARAMETER_BYTES" in problem.message
    get_settings.cache_clear()


def test_5000_digit_integer_is_not_echoed_whole_and_paths_are_project_relative(cli, project):
    digits = "9" * 5000
    code, _, err = cli("submit", "notebooks/ok.ipynb", "-p", "x", digits)
    assert code == 2 and "parameter 'x' must be int" in err and "(5000 characters)" in err
    assert len(err) < 600
    code, _, err = cli("submit", "notebooks/ok.ipynb", "-y", f"x: {digits}")
    assert code == 2 and "-y is not valid YAML" in err and "4300 digits" in err and len(err) < 600
    code, _, err = cli("submit", "notebooks/ok.ipynb", "-y", f"label: {'9' * 4000}")
    assert code == 2 and "parameter 'label' must be str, got int 9999" in err and len(err) < 600
    code, _, err = cli("submit", "notebooks/missing.ipynb")
    assert code == 2 and "notebook not found: notebooks/missing.ipynb" in err
    code, _, err = cli("submit", "notebooks/ok.ipynb", "-p", "nope", "1")
    assert code == 2 and "invalid parameters for notebooks/ok.ipynb" in err
    for message in (err,):
        assert str(project) not in message


def test_submit_with_the_broker_down_prints_one_warning_and_no_traceback(cli, project):
    import os
    import subprocess

    from tests.conftest import free_port
    from tests.jobrunner.support import PYTHON, ROOT

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "JOBRUNNER_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
    }
    done = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "submit", "notebooks/ok.ipynb", "-p", "x", "2"],
        env=env,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and len(done.stdout.strip()) == 36  # accepted: waiting in the outbox
    err = done.stderr
    assert "Traceback" not in err and " ERROR " not in err and "pika" not in err, err
    assert len(err.strip().splitlines()) == 1 and "broker unavailable" in err and "outbox" in err, err


def test_mlflow_keeps_6000_characters_of_a_value_and_the_whole_value_as_an_artifact(
    project, mlflow_store, monkeypatch
):
    from mlflow.tracking import MlflowClient

    from jobrunner.config import get_settings
    from jobrunner.execution.executor import execute

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("JOBRUNNER_MLFLOW_EXPERIMENT", "faults-input-params")
    get_settings.cache_clear()
    label = "".join(chr(97 + i % 26) for i in range(9000))
    result = execute(project / "notebooks" / "ok.ipynb", {"label": label, "x": 1}, html=False)
    assert result.ok, result.failure
    client = MlflowClient(mlflow_store)
    run = client.get_run(result.run_id)
    assert len(run.data.params["label"]) == 6000 and run.data.tags[PARAMS_TRUNCATED_TAG] == "label"
    path = client.download_artifacts(result.run_id, "parameters.json", str(project))
    with open(path) as f:
        assert json.load(f)["label"] == label
    get_settings.cache_clear()


@pytest.mark.services
def test_dlq_requeue_all_skips_letters_it_cannot_requeue_and_discard_drops_them(job_env, amqp_url):
    import pika

    from jobrunner.config import get_settings
    from jobrunner.jobs import get_job, submit
    from jobrunner.queue.broker import broker_for
    from jobrunner.store.db import session_scope
    from jobrunner.store.states import JobState, transition

    settings = get_settings()
    broker = broker_for(settings)
    real = submit("notebooks/ok.ipynb", {"x": 1}, settings=settings).id
    with session_scope(settings) as session:  # as a worker that gave up after infrastructure errors
        assert transition(session, real, [JobState.QUEUED], JobState.RUNNING, worker_id="w", attempt=3)
        assert transition(session, real, [JobState.RUNNING], JobState.FAILED, error_kind="infrastructure")
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = conn.channel()
    broker.declare(channel)
    channel.queue_purge(broker.queue)  # submit's own message: only the requeued one may arrive
    huge = "j" * 10_000
    for body in (
        {"job_id": huge, "schema_version": 1, "attempt": 1},
        {"job_id": str(uuid.uuid4()), "schema_version": 1, "attempt": 1},
        {"job_id": real, "schema_version": 1, "attempt": 3},
    ):
        channel.basic_publish("", broker.dlq, json.dumps(body).encode())
    channel.basic_publish("", broker.dlq, b"\xff not json")
    conn.close()

    runner = CliRunner()
    result = runner.invoke(main, ["dlq", "requeue", "--all"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [real]
    assert get_job(real).state is JobState.QUEUED and get_job(real).attempt == 0
    err = result.stderr
    assert "skipped: jjjjjjj" in err and "(10000 characters): no job with this id in the store" in err
    assert err.count("no job with this id in the store") == 2 and "skipped: -: not a job message" in err
    assert "1 job(s) requeued, 3 letter(s) left in the dead-letter queue" in err and len(err) < 2000

    listed = runner.invoke(main, ["dlq", "list", "--json"], catch_exceptions=False)
    letters = json.loads(listed.stdout)
    assert len(letters) == 3 and max(len(d["job_id"] or "") for d in letters) < 300

    dropped = runner.invoke(main, ["dlq", "requeue", "--all", "--discard", "--json"], catch_exceptions=False)
    report = json.loads(dropped.stdout)
    assert report["requeued"] == [] and len(report["skipped"]) == 3
    assert all(s["discarded"] for s in report["skipped"])
    assert json.loads(runner.invoke(main, ["dlq", "list", "--json"]).stdout) == []
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    queued = conn.channel().queue_declare(broker.queue, passive=True).method.message_count
    conn.close()
    assert queued == 1  # the real job's message, republished once
