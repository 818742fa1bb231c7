"""Live output of running jobs against real PostgreSQL, RabbitMQ, workers and uvicorn: `logs --follow`,
the server-sent events of GET /v1/jobs/{id}/events, a SIGKILLed worker's output, the size bound."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from tests.jobrunner.support import PYTHON, alive, job, kernel_children, wait_for, wait_state

pytestmark = pytest.mark.services


def _follow(env: dict[str, str], job_id: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "jobrunner.cli", "logs", job_id, "--follow", *extra],
        env=env,
        cwd=env["JOBRUNNER_PROJECT_DIR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines_with_state(proc: subprocess.Popen[str], job_id: str) -> list[tuple[str, str]]:
    """Each stdout line of `proc` with the job's state in the store at the moment the line was read."""
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append((line.rstrip("\n"), job(job_id).state.value))
    return seen


def test_logs_follow_prints_lines_while_the_job_runs_and_exits_with_its_outcome(job_env, workers):
    from jobrunner.jobs import submit

    workers.start()
    queued = submit("notebooks/ticks.ipynb", {"n": 4, "interval": 1.0})
    proc = _follow(job_env, queued.id)
    seen = _lines_with_state(proc, queued.id)
    assert proc.wait(120) == 0, proc.stderr.read() if proc.stderr else ""
    lines = [line for line, _ in seen]
    ticks = [line for line in lines if line.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(4)]  # every line, in order
    # printed while the notebook ran, not after: the job was still RUNNING when the first ticks arrived
    states = {line: state for line, state in seen}
    assert states["tick 0"] == states["tick 1"] == "RUNNING", seen
    assert "[text/html output: see the executed notebook]" in lines  # a note for rich output
    assert "'all ticks printed'" in lines  # a text result
    assert job(queued.id).state.value == "SUCCEEDED"
    # a finished job still shows its output (from the executed notebook), and the follow of an ended job
    # ends at once with its outcome
    again = _follow(job_env, queued.id)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and "tick 3" in out and "SUCCEEDED" in err


def test_logs_follow_of_a_failing_job_exits_1_and_output_past_the_bound_is_cut(job_env, workers):
    from jobrunner.jobs import job_events, submit

    workers.start(JOBRUNNER_LIVE_OUTPUT_MAX_BYTES="60")
    queued = submit("notebooks/ticks.ipynb", {"n": 40, "interval": 0.0, "fail": True})
    proc = _follow(job_env, queued.id)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert "FAILED: cell 3" in err and "RuntimeError: failed after 40 ticks" in err
    assert out.startswith("tick 0\ntick 1\n")
    assert "tick 39" not in out  # 40 lines are ~300 characters: cut at 60
    assert "[live output cut after 60 characters (JOBRUNNER_LIVE_OUTPUT_MAX_BYTES)" in out
    assert any(e.kind == "output" and "cut after 60" in (e.message or "") for e in job_events(queued.id))
    # the executed notebook keeps everything: `logs` without --follow shows all 40 lines
    full = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "logs", queued.id],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=job_env["JOBRUNNER_PROJECT_DIR"],
    )
    assert "tick 39" in full.stdout


def test_output_of_a_sigkilled_worker_stays_readable(job_env, workers):
    from jobrunner.jobs import submit
    from jobrunner.store.live import read_output

    worker = workers.start()
    queued = submit("notebooks/ticks.ipynb", {"n": 200, "interval": 0.3})

    def stored() -> str:
        return "".join(c.text for c in read_output(queued.id))

    wait_for(lambda: "tick 4\n" in stored(), 90, "five lines of live output")
    kernels = kernel_children(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    for pid in alive(kernels):  # the killed worker's kernels are orphans now
        os.killpg(pid, signal.SIGKILL)
    text = stored()
    printed = [line for line in text.splitlines() if line.startswith("tick ")]
    assert printed[:5] == [f"tick {i}" for i in range(5)]
    assert printed == [f"tick {i}" for i in range(len(printed))]  # contiguous: nothing lost in between
    assert job(queued.id).state.value == "RUNNING" and job(queued.id).output_uri is None
    shown = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "logs", queued.id, "--json"],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=job_env["JOBRUNNER_PROJECT_DIR"],
    )
    assert shown.returncode == 0, shown.stderr
    outputs = json.loads(shown.stdout)["outputs"]
    assert [o["cell_index"] for o in outputs] == [1] and outputs[0]["live"] is True
    assert outputs[0]["text"].startswith("tick 0\ntick 1\ntick 2\ntick 3\ntick 4\n")


def _last_id(response: httpx.Response) -> str:
    return response.last_sse_id  # type: ignore[attr-defined]


def _sse(response: httpx.Response) -> list[tuple[str, dict, float]]:
    """(event type, data, arrival time) of each server-sent event of a streaming response; the last SSE
    id seen is kept on the response as `last_sse_id`."""
    events = []
    kind, data = None, []
    for line in response.iter_lines():
        if line.startswith("id: "):
            response.last_sse_id = line[len("id: ") :]  # type: ignore[attr-defined]
        if line.startswith("event: "):
            kind = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif line == "" and kind:
            events.append((kind, json.loads("\n".join(data)), time.monotonic()))
            kind, data = None, []
    return events


def test_events_stream_delivers_output_in_order_through_uvicorn(model_store, job_env, workers, tmp_path):
    from jobrunner.jobs import submit
    from tests.serve.conftest import READ_KEY, start_server

    env = {k: v for k, v in job_env.items() if k.startswith("JOBRUNNER_")}
    server = start_server(
        SimpleNamespace(tracking_uri=model_store.tracking_uri, project=job_env["JOBRUNNER_PROJECT_DIR"]),
        tmp_path,
        env,
    )
    try:
        url = server.url
        unknown = httpx.get(
            f"{url}/v1/jobs/00000000-0000-4000-8000-000000000000/events",
            headers={"X-API-Key": READ_KEY},
            timeout=10,
        )
        assert (
            unknown.status_code == 404 and "00000000-0000-4000-8000-000000000000" in unknown.json()["detail"]
        )
        assert (
            httpx.get(f"{url}/v1/jobs/00000000-0000-4000-8000-000000000000/events", timeout=10).status_code
            == 401
        )
        doc = httpx.get(f"{url}/openapi.json", timeout=30).json()
        op = doc["paths"]["/v1/jobs/{job_id}/events"]["get"]
        assert "text/event-stream" in op["responses"]["200"]["content"]
        assert {"401", "404", "422"} <= set(op["responses"]) and "JobStreamEvent" in doc["components"][
            "schemas"
        ]

        workers.start()
        queued = submit("notebooks/ticks.ipynb", {"n": 5, "interval": 1.0})
        ended: dict[str, float] = {}

        def watch() -> None:
            wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 120)
            ended["at"] = time.monotonic()

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        with httpx.stream(
            "GET",
            f"{url}/v1/jobs/{queued.id}/events",
            headers={"X-API-Key": READ_KEY},
            timeout=httpx.Timeout(30, read=60),
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events, last_id = _sse(response), _last_id(response)
        watcher.join(30)
        # a client that reconnects with the last id (EventSource does) gets no output or event twice
        again = httpx.get(
            f"{url}/v1/jobs/{queued.id}/events",
            timeout=30,
            headers={"X-API-Key": READ_KEY, "Last-Event-ID": last_id},
        )
        resumed = [line[len("event: ") :] for line in again.text.splitlines() if line.startswith("event: ")]
        assert resumed == ["state", "progress", "end"], again.text[:2000]
    finally:
        server.stop()
    kinds = [k for k, _, _ in events]
    assert kinds[0] == "state" and kinds[-1] == "end" and events[-1][1]["state"] == "SUCCEEDED"
    outputs = [(d, t) for k, d, t in events if k == "output"]
    text = "".join(d["text"] for d, _ in outputs)
    assert [line for line in text.splitlines() if line.startswith("tick")] == [f"tick {i}" for i in range(5)]
    assert [d["id"] for d, _ in outputs] == sorted(d["id"] for d, _ in outputs)
    first_tick = next(t for d, t in outputs if "tick 0" in d["text"])
    assert first_tick < ended["at"] - 1.0  # delivered while the job ran
    states = [d["state"] for k, d, _ in events if k == "state"]
    assert "RUNNING" in states and states[-1] == "SUCCEEDED"
    done = [d["cells_done"] for k, d, _ in events if k == "progress"]
    assert done == sorted(done) and done[-1] == 5
