"""Per-job kernels against real PostgreSQL, RabbitMQ and workers: a second kernelspec installed by the test
(a python3 copy whose kernel.json sets an environment marker) runs the jobs that ask for it, from a cold
start first and from the worker's warm pool for it next; an unknown kernel is refused before queueing by
the Python API, the CLI (exit 2) and the REST API (422), each naming the installed kernels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.jobrunner.support import PYTHON, wait_state

pytestmark = pytest.mark.services
KERNEL = "py-marked"


@pytest.fixture
def marked_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A kernelspec `py-marked` in a temporary Jupyter path; the environment that makes it visible."""
    data = tmp_path / "jupyter-data"
    spec = data / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (marked)",
                "language": "python",
                "env": {"JR_KERNEL_MARKER": "marked"},
            }
        )
    )
    env = {"JUPYTER_PATH": str(data), "JUPYTER_DATA_DIR": str(data)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _marker_notebook(project: Path) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell("label = 'x'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell(
            "import os, sys\nprint(label, 'marker', os.environ.get('JR_KERNEL_MARKER'), flush=True)"
        ),
    ]
    nbformat.write(nb, project / "notebooks" / "marker.ipynb")
    return "notebooks/marker.ipynb"


def _printed(job_id: str) -> str:
    from jobrunner.store.live import read_output

    return "".join(c.text for c in read_output(job_id))


def test_unknown_kernel_is_refused_before_queueing_naming_the_installed_ones(job_env, marked_kernel):
    from fastapi.testclient import TestClient

    from jobrunner.errors import InvalidJobOption
    from jobrunner.jobs import list_jobs, submit
    from serve.app import create_app
    from tests.serve.conftest import WRITE_KEY, serve_settings

    with pytest.raises(InvalidJobOption) as refused:
        submit("notebooks/ok.ipynb", {}, kernel="nope")
    assert "kernel 'nope' is not installed" in str(refused.value)
    assert KERNEL in str(refused.value) and "python3" in str(refused.value)

    cli = subprocess.run(
        [PYTHON, "-m", "jobrunner.cli", "submit", "notebooks/ok.ipynb", "--kernel", "nope"],
        env={**job_env, **marked_kernel},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=job_env["JOBRUNNER_PROJECT_DIR"],
    )
    assert cli.returncode == 2, cli.stderr
    assert (
        "kernel 'nope' is not installed" in cli.stderr
        and KERNEL in cli.stderr
        and "nothing was queued" in cli.stderr
    )

    store = type("Store", (), {"tracking_uri": job_env["MLFLOW_TRACKING_URI"]})()
    db = Path(job_env["JOBRUNNER_PROJECT_DIR"]) / "serve.db"
    with TestClient(
        create_app(serve_settings(store, f"sqlite:///{db}")), raise_server_exceptions=False
    ) as client:
        r = client.post(
            "/v1/jobs",
            json={"notebook": "notebooks/ok.ipynb", "kernel_name": "nope"},
            headers={"X-API-Key": WRITE_KEY},
        )
    assert r.status_code == 422, r.text
    assert any(p["name"] == "kernel" and KERNEL in p["message"] for p in r.json()["problems"]), r.json()
    assert list_jobs().total == 0  # nothing was queued by any of them


def test_jobs_run_on_the_kernel_they_ask_for(job_env, workers, marked_kernel):
    from jobrunner.jobs import get_job, submit

    notebook = _marker_notebook(Path(job_env["JOBRUNNER_PROJECT_DIR"]))
    worker = workers.start(**marked_kernel)
    first = submit(notebook, {"label": "first"}, kernel=KERNEL)
    assert first.kernel_name == KERNEL
    plain = submit(notebook, {"label": "plain"})
    second = submit(notebook, {"label": "second"}, kernel=KERNEL)
    for queued in (first, plain, second):
        done = wait_state(queued.id, {"SUCCEEDED", "FAILED"}, 120)
        assert done.state.value == "SUCCEEDED", done.error
    assert "first marker marked" in _printed(first.id)  # cold start on the marked kernelspec
    assert "plain marker None" in _printed(plain.id)  # the default kernel, from the warm pool
    # the second one came from the pool the worker opened for py-marked: the kernelspec's env still applies
    assert "second marker marked" in _printed(second.id)
    assert get_job(second.id).kernel_name == KERNEL
    log = workers.log(worker)
    assert f"kernel pool opened for kernel {KERNEL}" in log
