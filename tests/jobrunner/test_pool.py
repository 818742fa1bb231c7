"""The warm kernel pool: single-use kernels, per-job environment and folder, replacement of dead or hung
idle kernels, size 0, and a shutdown that leaves no kernel process behind. Real kernels throughout."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest

from jobrunner.config import get_settings
from jobrunner.execution.executor import execute
from jobrunner.execution.kernels import installed_pool
from jobrunner.execution.pool import KernelPool

READY_S = 90  # generous: a loaded 2-core machine starts a kernel in 0.6-10 s


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("tag = 'none'", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, path)
    return path


def _printed(result) -> str:
    nb = nbformat.read(result.output_path, as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))


def _kernel_children() -> list[psutil.Process]:
    """Kernel processes started by this test process (ipykernel_launcher children)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def pool(project: Path) -> Iterator[KernelPool]:
    pool = KernelPool("python3", 2, health_timeout=5).open()
    assert pool.wait_ready(READY_S), pool.stats()
    yield pool
    # one deadline, then leftovers are killed: after a hung idle kernel the filler's next start can wait
    # its whole start_timeout for a reply (see the report in docs/testing.md), which is not this test's
    pool.close(timeout=15)
    assert installed_pool("python3") is None
    assert _kernel_children() == []


def test_each_job_gets_a_fresh_kernel_and_never_sees_another_jobs_variables(
    project: Path, pool: KernelPool
) -> None:
    nb = _notebook(
        project / "notebooks" / "leak.ipynb",
        "import os\nprint('seen', 'secret' in globals(), os.getpid())\nsecret = tag",
    )
    first = execute(nb, {"tag": "job-1"}, record=False, html=False)
    second = execute(nb, {"tag": "job-2"}, record=False, html=False)
    assert first.ok and second.ok, (first.failure, second.failure)
    seen1, seen2 = _printed(first).split(), _printed(second).split()
    assert seen1[:2] == ["seen", "False"] and seen2[:2] == ["seen", "False"]
    assert seen1[2] != seen2[2]  # two kernel processes
    stats = pool.stats()
    assert stats.taken == 2 and stats.missed == 0
    # the executor shut both used kernels down: neither process is left
    assert not psutil.pid_exists(int(seen1[2])) or psutil.Process(int(seen1[2])).status() == "zombie"


def test_a_kernel_started_by_the_filler_answers_the_job_thread_without_waiting_for_a_timeout(
    project: Path,
) -> None:
    """The filler thread starts and connects each kernel; the job's thread uses it. With the filler's
    client kept, ZeroMQ's edge-triggered sockets made the job thread's waits miss replies and run to their
    timeout (a take then lasted the whole health timeout, 10 s by default, in about every second job)."""
    health = 40.0
    pool = KernelPool("python3", 1, health_timeout=health).open()
    try:
        nb = _notebook(project / "notebooks" / "quick.ipynb", "print('ran', tag)")
        for i in range(4):
            assert pool.wait_ready(READY_S), pool.stats()
            t0 = time.monotonic()
            result = execute(nb, {"tag": f"job-{i}"}, record=False, html=False)
            took = time.monotonic() - t0
            assert result.ok, result.failure
            assert _printed(result).split() == ["ran", f"job-{i}"]
            assert took < health / 2, f"job {i} took {took:.1f}s: a wait ran to its timeout"
        assert pool.stats().replaced == 0
    finally:
        pool.close(timeout=15)


def test_a_notebook_sees_exactly_its_own_environment_and_folder(
    project: Path, tmp_path_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # set before the pool starts: the idle kernels carry these, the jobs must not
    monkeypatch.setenv("JR_POOL_ONLY", "from-the-pool")
    monkeypatch.setenv("JR_VALUE", "pool-value")
    monkeypatch.setenv("MLFLOW_RUN_ID", "run-of-the-pool-process")
    with KernelPool("python3", 2).open() as pool:
        assert pool.wait_ready(READY_S), pool.stats()
        monkeypatch.delenv("JR_POOL_ONLY")
        monkeypatch.delenv("MLFLOW_RUN_ID")
        nb = _notebook(
            project / "notebooks" / "env.ipynb",
            "import os, json\n"
            "keys = ['JR_POOL_ONLY', 'JR_VALUE', 'JR_JOB', 'MLFLOW_RUN_ID', 'JOBRUNNER_PROJECT_DIR',"
            " 'JOBRUNNER_METRICS_FILE']\n"
            "print(json.dumps({'cwd': os.getcwd(), 'env': {k: os.environ.get(k) for k in keys}}))\n"
            "print(open('marker.txt').read())",
        )
        results = []
        for i in (1, 2):
            monkeypatch.setenv("JR_VALUE", f"job-{i}")
            (project / "marker.txt").write_text(f"marker of job {i}")
            results.append(execute(nb, {"tag": str(i)}, extra_env={"JR_JOB": f"extra-{i}"}, html=False))
        assert pool.stats().taken == 2
    for i, result in enumerate(results, start=1):
        assert result.ok, result.failure
        first_line, marker = _printed(result).strip().splitlines()
        seen = json.loads(first_line)
        assert Path(seen["cwd"]).resolve() == project.resolve()
        assert marker == f"marker of job {i}"
        env = seen["env"]
        assert env["JR_POOL_ONLY"] is None
        assert env["JR_VALUE"] == f"job-{i}" and env["JR_JOB"] == f"extra-{i}"
        assert env["MLFLOW_RUN_ID"] == result.run_id and result.run_id
        assert env["JOBRUNNER_PROJECT_DIR"] == str(get_settings().project_dir)
        assert env["JOBRUNNER_METRICS_FILE"] and "jobrunner-" in env["JOBRUNNER_METRICS_FILE"]
    assert results[0].run_id != results[1].run_id


def test_a_kernel_killed_while_idle_is_replaced_and_never_handed_out(project: Path, pool: KernelPool) -> None:
    victim = pool.idle_pids()[0]
    os.kill(victim, signal.SIGKILL)
    nb = _notebook(project / "notebooks" / "pid.ipynb", "import os\nprint(os.getpid())")
    result = execute(nb, {}, record=False, html=False)
    assert result.ok, result.failure
    assert int(_printed(result)) != victim
    assert pool.stats().replaced >= 1
    assert pool.wait_ready(READY_S), pool.stats()  # refilled to its size, without the dead one
    assert victim not in pool.idle_pids()


def test_a_hung_idle_kernel_is_killed_and_replaced(project: Path, pool: KernelPool) -> None:
    for pid in pool.idle_pids():  # both idle kernels hang (SIGSTOP): the take starts a fresh one
        os.kill(pid, signal.SIGSTOP)
    hung = set(pool.idle_pids())
    nb = _notebook(project / "notebooks" / "pid.ipynb", "import os\nprint(os.getpid())")
    started = time.monotonic()
    result = execute(nb, {}, record=False, html=False)
    assert result.ok, result.failure
    assert int(_printed(result)) not in hung
    stats = pool.stats()
    assert stats.replaced >= 2 and stats.taken + stats.missed == 1
    assert time.monotonic() - started < 2 * 5 + READY_S
    for pid in hung:  # killed, not left stopped
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_pool_size_zero_starts_a_fresh_kernel_per_job(project: Path) -> None:
    with KernelPool("python3", 0).open() as pool:
        result = execute("notebooks/ok.ipynb", {"x": 2}, record=False, html=False)
        assert result.ok and result.metrics["total"] == 4.5
        stats = pool.stats()
        assert (stats.idle, stats.taken, stats.missed) == (0, 0, 1)
        assert _kernel_children() == []


def test_close_leaves_no_kernel_process_behind(project: Path) -> None:
    before = {p.pid for p in _kernel_children()}
    pool = KernelPool("python3", 3).open()
    assert pool.wait_ready(READY_S), pool.stats()
    pids = set(pool.idle_pids())
    assert len(pids) == 3 and pids <= {p.pid for p in _kernel_children()}
    # a take in flight: the executor owns that one and shuts it down itself
    result = execute("notebooks/ok.ipynb", {}, record=False, html=False)
    assert result.ok
    pool.close()
    assert {p.pid for p in _kernel_children()} - before == set()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    with pytest.raises(Exception, match="closed"):
        pool.take(env={}, cwd=project)


def test_close_while_a_kernel_is_starting_leaves_nothing(project: Path) -> None:
    pool = KernelPool("python3", 2).open()
    time.sleep(0.3)  # the filler is in the middle of its first start
    pool.close()
    assert _kernel_children() == []


def test_preloaded_modules_are_imported_but_not_bound_in_the_notebook(project: Path) -> None:
    with KernelPool("python3", 1, preload=["colorsys", "wave"]).open() as pool:
        assert pool.wait_ready(READY_S), pool.stats()
        nb = _notebook(
            project / "notebooks" / "pre.ipynb",
            "import sys\nprint('colorsys' in sys.modules, 'wave' in sys.modules,"
            " 'colorsys' in globals(), [n for n in globals() if n.startswith('__jr')])",
        )
        result = execute(nb, {}, record=False, html=False)
    assert result.ok, result.failure
    assert _printed(result).strip() == "True True False []"


def test_the_workers_metrics_show_the_pool(project: Path) -> None:
    from prometheus_client import generate_latest

    from jobrunner.worker.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    pool = metrics.start_pool(get_settings())
    try:
        assert pool.wait_ready(READY_S), pool.stats()
        os.kill(pool.idle_pids()[0], signal.SIGKILL)
        assert execute("notebooks/ok.ipynb", {}, record=False, html=False).ok
        assert pool.wait_ready(READY_S), pool.stats()
        text = generate_latest(metrics.registry).decode()
    finally:
        pool.close()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("jobrunner_kernel_pool")
    }
    assert values['jobrunner_kernel_pool_size{kernel="python3"}'] == 1
    assert values['jobrunner_kernel_pool_idle{kernel="python3"}'] == 1
    assert values['jobrunner_kernel_pool_replaced_total{kernel="python3"}'] == 1
    assert (
        values['jobrunner_kernel_pool_taken_total{kernel="python3"}']
        + values['jobrunner_kernel_pool_missed_total{kernel="python3"}']
        == 1
    )
    assert values['jobrunner_kernel_pool_start_failures_total{kernel="python3"}'] == 0
    # the first kernel, its replacement and the taken one's replacement, all from one template
    assert values['jobrunner_kernel_pool_forked_total{kernel="python3"}'] >= 2
    assert values['jobrunner_kernel_pool_template_starts_total{kernel="python3"}'] == 1
    assert values["jobrunner_kernel_pool_take_seconds_count"] == 1


def test_close_is_bounded_when_a_kernel_start_hangs_and_kills_that_kernel(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kernel that never answers (a loaded machine, a stuck start) must not hold close() for
    start_timeout: close keeps its one deadline and kills the kernel still starting."""
    import sys

    spec = tmp_path / "jupyter" / "kernels" / "hangs"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", "import time; time.sleep(600)", "{connection_file}"],
                "display_name": "hangs",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    pool = KernelPool("hangs", 1, start_timeout=300).open()

    def starting() -> list[psutil.Process]:
        return [
            c
            for c in psutil.Process().children(recursive=True)
            if c.status() != psutil.STATUS_ZOMBIE and "time.sleep(600)" in " ".join(c.cmdline())
        ]

    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and not starting():
        time.sleep(0.1)
    [hung] = starting()
    t0 = time.monotonic()
    pool.close(timeout=2)
    took = time.monotonic() - t0
    assert took < 2 + 10, f"close took {took:.1f}s with a 2 s deadline"
    assert not psutil.pid_exists(hung.pid) or hung.status() == psutil.STATUS_ZOMBIE
    assert starting() == []
    assert pool.stats().start_failures <= 1  # a closed pool does not retry the start
