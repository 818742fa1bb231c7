"""Notebook execution speed (issue 14): warm kernel pool and the local execution service vs papermill.

    .venv/bin/python bench/execution_bench.py [--runs 7] [--rss]

All rows run the trivial notebook tests/fixtures/notebooks/ok.ipynb with `x = 3`, in one run of this
script on the same machine, one after another (never two at once):
  - the papermill CLI (a new process per run) and papermill.execute_notebook in this process (fresh
    kernel per run): the anchors;
  - jobrunner.execute in this process with recording on (MLflow run in SQLite, ipynb + HTML + lineage):
    with a fresh kernel per run (pool size 0) and with a warm pool (the pool is refilled before each
    timed run: "warm" is the state a worker or the service is in between jobs);
  - the `jobrunner run` CLI with recording on: in-process (JOBRUNNER_SERVICE=off) and through a warm
    execution service (started before timing; its pool refilled before each run).
Each row: a warm-up call, then --runs timed calls; prints medians, min-max and ratios. With --rss it
also reports the resident memory of the service process and of its idle kernels, without and with
JOBRUNNER_KERNEL_PRELOAD=numpy,pandas,sklearn. Prints the load average before and after.

With --jobs N it also measures queued jobs end to end, in production mode: the job store in a fresh
PostgreSQL database, RabbitMQ, outputs uploaded to an S3 server (moto, started here) and an MLflow store,
with `jobrunner worker` processes whose pools are warm:
  - latency: N trivial jobs one after another through one worker, submit -> SUCCEEDED (the MLflow run
    and the S3 upload are done before the worker commits SUCCEEDED), against the papermill CLI's time
    for the notebook alone;
  - throughput: 40 trivial jobs submitted at once to two workers (pool size 2 each), jobs per minute
    from the first submit to the last SUCCEEDED, against a loop of the papermill CLI;
  - the resident memory of a worker with its pool, and of each idle kernel.
Every job has distinct parameters, so the run cache never answers for an execution.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from anchors import papermill_cli, papermill_inproc

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "fixtures" / "notebooks" / "ok.ipynb"
BIN = Path(sys.executable).parent


def measure(runs: int, fn: Callable[[int], None], before: Callable[[], None] | None = None) -> list[float]:
    if before:
        before()
    fn(-1)  # warm-up (imports, the first MLflow DB migration)
    times = []
    for i in range(runs):
        if before:
            before()
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return times


def wait_service_ready(env: dict[str, str], cwd: Path) -> None:
    import json

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        proc = subprocess.run(
            [str(BIN / "jobrunner"), "service", "status", "--json"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            info = json.loads(proc.stdout)
            pool = info.get("pool") or {}
            if info.get("ready") and pool.get("idle", 0) >= pool.get("size", 1):
                return
        else:  # none for this key: jobrunner's code changed (a shared work tree) and the old one stopped
            subprocess.run(
                [str(BIN / "jobrunner"), "run", str(NOTEBOOK), "-q", "--no-record"],
                cwd=cwd,
                env=env,
                capture_output=True,
            )
        time.sleep(0.2)
    raise RuntimeError("the execution service did not become ready")


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def service_rss(
    work: Path, env: dict[str, str], preload: str
) -> tuple[float, list[float], list[tuple[float, float]]]:
    """RSS of the service, of its kernel template (if any), and (RSS, USS) of each idle kernel."""
    import json

    import psutil

    env = {**env, "JOBRUNNER_KERNEL_PRELOAD": preload, "JOBRUNNER_KERNEL_POOL_SIZE": "2"}
    subprocess.run(
        [str(BIN / "jobrunner"), "run", str(NOTEBOOK), "-q"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
    )
    wait_service_ready(env, work)
    info = json.loads(
        subprocess.run(
            [str(BIN / "jobrunner"), "service", "status", "--json"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    pid = info["pid"]
    service = psutil.Process(pid)
    templates = [p for p in service.children() if "jobrunner.execution.forkserver" in " ".join(p.cmdline())]
    kernels = [
        p
        for p in service.children(recursive=True)
        if "ipykernel" in " ".join(p.cmdline()) and p not in templates
    ]
    result = (
        rss_mb(pid),
        [rss_mb(t.pid) for t in templates],
        [(k.memory_info().rss / 2**20, k.memory_full_info().uss / 2**20) for k in kernels],
    )
    subprocess.run([str(BIN / "jobrunner"), "service", "stop"], cwd=work, env=env, capture_output=True)
    return result


def dvc_bench(runs: int, env_off: dict[str, str], env_on: dict[str, str]) -> list[tuple[str, list[float]]]:
    """`dvc repro -f` in a clone of this checkout's HEAD (commit what you measure), with the service off and
    with a warm service, against a shell loop of papermill over the same notebooks with the same parameters
    (the default profile, as `make demo`)."""
    import json

    import yaml

    from pipelines.stage import stage_plan

    clone = Path(tempfile.mkdtemp(prefix="jr-dvc-")) / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in env_off.items() if k != "JOBRUNNER_PROJECT_DIR"}
    env["PATH"] = f"{BIN}:{env['PATH']}"
    env.pop("JOBRUNNER_PARAMS_PROFILE", None)
    # every stage executes (the stage's run cache would restore the recorded outputs instead: not the
    # execution being measured)
    env["JOBRUNNER_STAGE_CACHE"] = "off"
    on = {**env, **{k: env_on[k] for k in ("JOBRUNNER_SERVICE", "JOBRUNNER_SERVICE_IDLE_TIMEOUT")}}
    stages = list(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"])
    plans = [stage_plan(name, clone) for name in stages]
    loop = " && ".join(
        f"papermill {p['notebook']} /tmp/jr-dvc-{i}.ipynb -y '{json.dumps(p['parameters'])}' "
        "--no-progress-bar"
        for i, p in enumerate(plans)
    )

    def timed(cmd: list[str], environ: dict[str, str]) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=clone, env=environ, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(
                f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return time.perf_counter() - t0

    rows: list[tuple[str, list[float]]] = [
        ("shell loop of papermill over the notebooks", []),
        ("`dvc repro -f`, in-process stages (service off)", []),
        ("`dvc repro -f`, stages via the warm execution service", []),
    ]
    timed(["bash", "-c", loop], env)  # warm-up: file caches, first MLflow store
    timed(["dvc", "repro", "-f"], env)
    timed(["dvc", "repro", "-f"], on)  # starts the service
    for _ in range(runs):
        rows[0][1].append(timed(["bash", "-c", loop], env))
        rows[1][1].append(timed(["dvc", "repro", "-f"], env))
        wait_service_ready(on, clone)
        rows[2][1].append(timed(["dvc", "repro", "-f"], on))
    subprocess.run([str(BIN / "jobrunner"), "service", "stop"], cwd=clone, env=on, capture_output=True)
    return rows


def _job_services(work: Path) -> tuple[dict[str, str], Callable[[], None]]:
    """Production-mode settings for queued jobs: a new PostgreSQL database (migrated), a unique RabbitMQ
    queue, an S3 bucket on a moto server started here, and an SQLite MLflow store. Returns the environment
    and a clean-up function."""
    import uuid

    import boto3
    import psycopg2
    from moto.server import ThreadedMotoServer

    admin = os.environ.get("TEST_POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    amqp = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    name = f"jrbench_{uuid.uuid4().hex[:8]}"

    def admin_sql(sql: str) -> None:
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    admin_sql(f'CREATE DATABASE "{name}"')
    port = _free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    s3.start()
    s3_env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(s3_env)
    boto3.client("s3").create_bucket(Bucket=name.replace("_", "-"))
    (work / "notebooks").mkdir(exist_ok=True)
    (work / "notebooks" / "ok.ipynb").write_bytes(NOTEBOOK.read_bytes())
    env = {
        **os.environ,
        **s3_env,
        "JOBRUNNER_PROJECT_DIR": str(work),
        "JOBRUNNER_DATABASE_URL": f"{admin.rsplit('/', 1)[0]}/{name}",
        "JOBRUNNER_BROKER_URL": amqp,
        "JOBRUNNER_QUEUE_NAME": name,
        "JOBRUNNER_ARTIFACT_URI": f"s3://{name.replace('_', '-')}/outputs",
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'jobs-mlflow.db'}",
        "JOBRUNNER_MLFLOW_EXPERIMENT": "bench-jobs",
        "JOBRUNNER_WORKER_POLL_INTERVAL": "0.05",
    }
    os.environ.update(env)
    from jobrunner.config import get_settings
    from jobrunner.store.db import dispose_engines, migrate

    get_settings.cache_clear()
    migrate(get_settings())

    def cleanup() -> None:
        import pika

        dispose_engines()
        s3.stop()
        conn = pika.BlockingConnection(pika.URLParameters(amqp))
        ch = conn.channel()
        ch.queue_delete(name)
        ch.queue_delete(f"{name}.dlq")
        ch.exchange_delete(f"{name}.dlx")
        conn.close()
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return env, cleanup


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_worker(
    env: dict[str, str], name: str, pool: int, logdir: Path, fork: bool = True
) -> subprocess.Popen[bytes]:
    port = _free_port()
    log = open(logdir / f"worker-{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [str(BIN / "jobrunner"), "worker"],
        cwd=env["JOBRUNNER_PROJECT_DIR"],
        env={
            **env,
            "JOBRUNNER_WORKER_ID": name,
            "JOBRUNNER_KERNEL_POOL_SIZE": str(pool),
            "JOBRUNNER_WORKER_METRICS_PORT": str(port),
            "JOBRUNNER_KERNEL_FORK": "true" if fork else "false",
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.metrics_port = port  # type: ignore[attr-defined]
    return proc


def _wait_idle_kernels(proc: subprocess.Popen[bytes], count: int, timeout: float = 120) -> None:
    """Until the worker's pool reports `count` idle kernels on its /metrics (a worker between jobs)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = f"http://127.0.0.1:{proc.metrics_port}/metrics"  # type: ignore[attr-defined]
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            text = ""
        idle = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("jobrunner_kernel_pool_idle{")
        ]
        if idle and sum(idle) >= count:
            return
        time.sleep(0.02)
    raise RuntimeError(f"worker {proc.pid} did not have {count} idle kernels in {timeout:.0f} s")


def _wait_consumers(env: dict[str, str], count: int, timeout: float = 120) -> None:
    import pika

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = pika.BlockingConnection(pika.URLParameters(env["JOBRUNNER_BROKER_URL"]))
        try:
            n = conn.channel().queue_declare(env["JOBRUNNER_QUEUE_NAME"], passive=True).method.consumer_count
        except Exception:  # noqa: BLE001 - not declared yet
            n = 0
        finally:
            if conn.is_open:
                conn.close()
        if n >= count:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{count} workers did not consume the queue in {timeout:.0f} s")


def _wait_done(ids: list[str], timeout: float = 300, poll: float = 0.005) -> float:
    """Poll the job store until every job in `ids` is SUCCEEDED; returns the monotonic time it happened
    (within `poll`)."""
    from jobrunner.jobs import get_job

    pending = set(ids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            job = get_job(job_id)
            if job.state.value == "SUCCEEDED":
                if not (job.mlflow_run_id and job.output_uri and job.output_uri.startswith("s3://")):
                    raise RuntimeError(f"job {job_id} SUCCEEDED without its MLflow run or S3 upload: {job}")
                pending.discard(job_id)
            elif job.state.value in ("FAILED", "CANCELLED", "KILLED"):
                raise RuntimeError(f"job {job_id} ended {job.state.value}: {job.error}")
        if pending:
            time.sleep(poll)
    if pending:
        raise RuntimeError(f"{len(pending)} jobs not SUCCEEDED after {timeout:.0f} s")
    return time.monotonic()


def _cpu_by_part(workers: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds used so far, summed by part: the workers themselves, their kernels (started or forked;
    ended ones count through their parent's reaped-children times), PostgreSQL, RabbitMQ, this process."""
    import psutil

    worker_pids = {w.pid for w in workers}
    out: dict[str, float] = {}
    for proc in psutil.process_iter(["pid", "ppid", "name", "cmdline"]):
        try:
            t = proc.cpu_times()
            own = t.user + t.system
            reaped = t.children_user + t.children_system
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.pid in worker_pids:
                out["worker"] = out.get("worker", 0.0) + own
                out["kernels"] = out.get("kernels", 0.0) + reaped  # kernels it reaped (no template)
            elif "ipykernel" in cmd:  # a template (+ the kernels it reaped) or a kernel still running
                out["kernels"] = out.get("kernels", 0.0) + own + reaped
            elif proc.pid == os.getpid():
                out["bench (S3, polling)"] = out.get("bench (S3, polling)", 0.0) + own
            elif proc.info["name"] in ("postgres", "postmaster"):
                out["postgres"] = out.get("postgres", 0.0) + own
            elif proc.info["name"] in ("beam.smp", "epmd", "erl_child_setup") or "rabbit" in cmd:
                out["rabbitmq"] = out.get("rabbitmq", 0.0) + own
            else:
                out["other"] = out.get("other", 0.0) + own
        except (psutil.Error, OSError):
            continue
    return out


def jobs_bench(runs: int, work: Path, pm_cli: Callable[[int], None]) -> None:
    import psutil

    from jobrunner.jobs import get_job, submit

    env, cleanup = _job_services(work)
    procs: list[subprocess.Popen[bytes]] = []
    seq = iter(range(10**6))
    try:
        pm = measure(runs, pm_cli)
        one = _start_worker(env, "bench-1", 1, work)
        procs.append(one)
        _wait_consumers(env, 1)
        _wait_idle_kernels(one, 1)

        def job(i: int) -> None:
            _wait_idle_kernels(one, 1)  # the pool refilled: a worker between jobs
            t0 = time.monotonic()
            _wait_done([submit("notebooks/ok.ipynb", {"x": next(seq)}).id])
            latency.append(time.monotonic() - t0)

        latency: list[float] = []
        measure(runs, job)
        latency = latency[1:]  # the warm-up
        worker = psutil.Process(one.pid)
        rss_worker = worker.memory_info().rss / 2**20
        # the worker's children: the pool's kernel template (forked kernels are ITS children), or kernels
        template = [k for k in worker.children() if "jobrunner.execution.forkserver" in " ".join(k.cmdline())]
        kernels = [
            k
            for k in worker.children(recursive=True)
            if "ipykernel" in " ".join(k.cmdline()) and k not in template
        ]
        rss_template = [t.memory_info().rss / 2**20 for t in template]
        mem_kernels = [(k.memory_info().rss / 2**20, k.memory_full_info().uss / 2**20) for k in kernels]
        one.terminate()
        one.wait(60)

        def burst(fork: bool) -> tuple[float, float]:
            """40 jobs at once on two workers: (jobs per minute, CPU-s of the whole machine per job)."""
            pair = [_start_worker(env, f"bench-{n}-{fork}", 2, work, fork=fork) for n in ("a", "b")]
            procs.extend(pair)
            _wait_consumers(env, 2)
            for proc in pair:
                _wait_idle_kernels(proc, 2)
            _wait_done([submit("notebooks/ok.ipynb", {"x": next(seq)}).id for _ in range(4)])  # warm-up
            for proc in pair:
                _wait_idle_kernels(proc, 2)
            cpu0, by0 = psutil.cpu_times(), _cpu_by_part(pair)
            t0 = time.time()
            ids = [submit("notebooks/ok.ipynb", {"x": next(seq)}).id for _ in range(40)]
            # polled slowly (the bench's own queries must not take CPU from the workers); the end is the
            # last job's finished_at, which the worker writes when the job is SUCCEEDED
            _wait_done(ids, poll=0.25)
            end = max(get_job(i).finished_at.timestamp() for i in ids)
            per_min = 40 / ((end - t0) / 60)
            cpu1, by1 = psutil.cpu_times(), _cpu_by_part(pair)
            busy = (cpu1.user + cpu1.system + cpu1.nice) - (cpu0.user + cpu0.system + cpu0.nice)
            parts[fork] = {k: (by1.get(k, 0.0) - by0.get(k, 0.0)) / 40 for k in by1}
            for proc in pair:
                proc.terminate()
            for proc in pair:
                proc.wait(60)
            return per_min, busy / 40

        parts: dict[bool, dict[str, float]] = {}
        bursts = {False: burst(False), True: burst(True)}
        loop_t0 = time.perf_counter()
        cpu0 = psutil.cpu_times()
        for i in range(10):
            pm_cli(1000 + i)
        per_min_pm = 10 / ((time.perf_counter() - loop_t0) / 60)
        cpu1 = psutil.cpu_times()
        cpu_pm = ((cpu1.user + cpu1.system + cpu1.nice) - (cpu0.user + cpu0.system + cpu0.nice)) / 10
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        cleanup()

    pm_med, lat_med = statistics.median(pm), statistics.median(latency)
    print(
        f"\nqueued jobs through RabbitMQ (PostgreSQL store, S3 outputs, MLflow run), trivial notebook; load "
        f"average now {os.getloadavg()[0]:.2f}\n"
    )
    print("| work | median | min-max | anchor | ratio |\n| --- | --- | --- | --- | --- |")
    print(
        f"| end-to-end job, submit -> SUCCEEDED, one warm worker ({len(latency)} jobs) | {lat_med:.3f} s | "
        f"{min(latency):.3f}-{max(latency):.3f} s | papermill CLI {pm_med:.3f} s | "
        f"{lat_med / pm_med:.2f}x the CLI's time |"
    )
    for fork, label in (
        (False, "kernels started one by one (JOBRUNNER_KERNEL_FORK=false)"),
        (True, "kernels forked from the pool's template (default)"),
    ):
        per_min, cpu = bursts[fork]
        print(
            f"| throughput, 2 workers with pools of 2, 40 jobs at once, {label} | {per_min:.0f} jobs/min, "
            f"{cpu:.2f} CPU-s per job | | papermill CLI loop {per_min_pm:.0f} runs/min, "
            f"{cpu_pm:.2f} CPU-s per run | "
            f"{per_min / per_min_pm:.1f}x |"
        )
    print(
        "\nCPU-s per job during the 40-job bursts, by process (kernels: the template and the kernels it "
        "reaped, or the worker's reaped kernels; bench: this process, with its S3 server and job polling)\n"
    )
    names = sorted({k for p in parts.values() for k in p})
    print("| how kernels start | " + " | ".join(names) + " |\n| --- |" + " --- |" * len(names))
    for fork in (False, True):
        print(
            f"| {'forked' if fork else 'started one by one'} | "
            + " | ".join(f"{parts[fork].get(k, 0.0):.3f}" for k in names)
            + " |"
        )
    print(
        f"| memory of a worker with a pool of 1 | worker {rss_worker:.0f} MB, kernel template "
        f"{', '.join(f'{t:.0f}' for t in rss_template) or '(none)'} MB | idle kernel "
        f"{', '.join(f'{r:.0f} MB RSS / {u:.0f} MB own (USS)' for r, u in mem_kernels)} | | |"
    )


def main_table(
    runs: int,
    load_before: tuple[float, float, float],
    pm_cli: Callable[[int], None],
    pm_inproc: Callable[[int], None],
    jr: Callable[[int], None],
    jr_cli: Callable[..., Callable[[int], None]],
    env_off: dict[str, str],
    env_on: dict[str, str],
    work: Path,
) -> None:
    from jobrunner.config import get_settings
    from jobrunner.execution.pool import KernelPool

    rows: list[tuple[str, list[float]]] = []
    rows.append(("papermill CLI (process per run)", measure(runs, pm_cli)))
    rows.append(("papermill.execute_notebook (in-process, fresh kernel)", measure(runs, pm_inproc)))
    with KernelPool("python3", 0).open():
        rows.append(("jobrunner.execute, recording on, fresh kernel (pool size 0)", measure(runs, jr)))
    with KernelPool.start(get_settings(), size=1) as pool:
        rows.append(
            (
                "jobrunner.execute, recording on, warm pool",
                measure(runs, jr, before=lambda: pool.wait_ready(120)),
            )
        )
    rows.append(
        ("`jobrunner run` CLI, recording on, in-process (service off)", measure(runs, jr_cli(env_off)))
    )
    jr_cli(env_on)(-2)  # starts the service
    rows.append(
        (
            "`jobrunner run` CLI, recording on, via the warm execution service",
            measure(runs, jr_cli(env_on), before=lambda: wait_service_ready(env_on, work)),
        )
    )
    subprocess.run([str(BIN / "jobrunner"), "service", "stop"], cwd=work, env=env_on, capture_output=True)

    base_cli = statistics.median(rows[0][1])
    base_inproc = statistics.median(rows[1][1])
    print(
        f"\ntrivial notebook (ok.ipynb, x=3), {runs} timed runs per row after a warm-up, "
        f"{os.cpu_count()} cores, load average before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {os.getloadavg()[0]:.2f}\n"
    )
    print("| how | median s | min-max s | papermill CLI / this | papermill in-process / this |")
    print("| --- | --- | --- | --- | --- |")
    for label, times in rows:
        med = statistics.median(times)
        print(
            f"| {label} | {med:.3f} | {min(times):.3f}-{max(times):.3f} | {base_cli / med:.1f}x | "
            f"{base_inproc / med:.1f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rss", action="store_true", help="also report service and idle kernel memory")
    parser.add_argument("--skip-main", action="store_true", help="only the --dvc / --rss parts")
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        metavar="N",
        help="also time N queued jobs end to end and 40 on two workers (PostgreSQL, RabbitMQ)",
    )
    parser.add_argument(
        "--dvc",
        type=int,
        default=0,
        metavar="N",
        help="also time `dvc repro -f` of the demo N times against a papermill loop",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="jr-bench-"))
    (work / "dvc.yaml").write_text("stages: {}\n")
    runtime = tempfile.mkdtemp(prefix="jrb", dir="/tmp")
    os.environ["JOBRUNNER_PROJECT_DIR"] = str(work)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["JOBRUNNER_SERVICE"] = "off"
    os.environ["XDG_RUNTIME_DIR"] = runtime
    env_off = dict(os.environ)
    env_on = {**os.environ, "JOBRUNNER_SERVICE": "auto", "JOBRUNNER_SERVICE_IDLE_TIMEOUT": "300"}

    from jobrunner.execution.executor import execute

    pm_cli = papermill_cli(NOTEBOOK, work)
    pm_inproc = papermill_inproc(NOTEBOOK, work)

    def jr(i: int) -> None:
        result = execute(NOTEBOOK, {"x": 3}, output_path=work / f"jr-{time.time_ns()}.ipynb")
        assert result.ok and result.run_id, result.failure

    def jr_cli(env: dict[str, str]) -> Callable[[int], None]:
        def run(i: int) -> None:
            subprocess.run(
                [str(BIN / "jobrunner"), "run", str(NOTEBOOK), "-p", "x", "3", "-q"],
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
            )

        return run

    if not args.skip_main:
        main_table(args.runs, load_before, pm_cli, pm_inproc, jr, jr_cli, env_off, env_on, work)
    if args.jobs:
        jobs_bench(args.jobs, work, pm_cli)
    if args.dvc:
        dvc_rows = dvc_bench(args.dvc, env_off, env_on)
        base = statistics.median(dvc_rows[0][1])
        print(
            f"\n`dvc repro -f` of the demo pipeline ({args.dvc} runs each; load average now "
            f"{os.getloadavg()[0]:.2f})\n"
        )
        print("| how | median s | min-max s | this / papermill loop |\n| --- | --- | --- | --- |")
        for label, times in dvc_rows:
            med = statistics.median(times)
            print(f"| {label} | {med:.2f} | {min(times):.2f}-{max(times):.2f} | {med / base:.2f}x |")

    if args.rss:
        print(
            "\n| service process with a pool of 2 | service RSS MB | kernel template RSS MB "
            "| idle kernel RSS / own (USS) MB, each |"
        )
        print("| --- | --- | --- | --- |")
        for fork in ("true", "false"):
            for preload in ("", "numpy,pandas,sklearn"):
                svc, templates, kernels = service_rss(
                    work, {**env_on, "JOBRUNNER_KERNEL_FORK": fork}, preload
                )
                print(
                    f"| fork {fork}, preload: {preload or '(none; jobrunner.notebook only)'} | {svc:.0f} | "
                    f"{', '.join(f'{t:.0f}' for t in templates) or '-'} | "
                    f"{', '.join(f'{r:.0f} / {u:.0f}' for r, u in kernels)} |"
                )


if __name__ == "__main__":
    main()
