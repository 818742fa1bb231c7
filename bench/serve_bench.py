"""Benchmark: our API vs `mlflow models serve`, the same model, one worker each, measured in one run.

Not a test. It trains a LogisticRegression pipeline on scikit-learn's breast-cancer data, logs and
registers it (alias champion) in a throw-away MLflow store, starts both servers, and loads each with
`wrk` (Debian) at concurrency 1, 16 and 64 for single-row and 1000-row requests. Our API runs as in
production: API-key auth, Prometheus metrics, OpenTelemetry spans, JSON request logs and prediction
logging (SQLite, background writer) all ON. With `taskset` the servers run on CPU 0 and wrk on CPU 1.

    .venv/bin/python bench/serve_bench.py                 # full run (~3 minutes)
    .venv/bin/python bench/serve_bench.py --duration 3    # quicker, noisier
    .venv/bin/python bench/serve_bench.py --model churn --concurrency 1,16   # the pyfunc path

`--model churn` serves the mixed-type scikit-learn Pipeline of tests/serve/model_factories.py (numbers,
a long, two categorical strings, a boolean; one-hot encoding in a ColumnTransformer), which our API
serves on its pyfunc path; ours is measured with JSON records, the columns/data form and MLflow's own
`/invocations` body (dataframe_split) on /v1/models/churn/invocations.

Prints a Markdown table (paste it into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY = "bench-key-0123456789abcdef"
MODEL = "bench-classifier"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(work: Path) -> tuple[str, list[str], list[list[float]]]:
    import mlflow
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    X, y = frame.drop(columns=["target"]).astype("float64"), frame["target"]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X, y)
    tracking = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking)
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(3),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
        )
    version = mlflow.register_model(info.model_uri, MODEL)
    MlflowClient(tracking).set_registered_model_alias(MODEL, "champion", version.version)
    return tracking, list(X.columns), X.values.tolist()


def build_churn(work: Path) -> tuple[str, list[str], list[list]]:
    sys.path.insert(0, str(ROOT))
    from tests.serve.model_factories import build_serving_store, churn_table

    store = build_serving_store(work)
    X, _ = churn_table(1000, seed=11)
    rows = [
        [float(r[0]), float(r[1]), int(r[2]), str(r[3]), str(r[4]), bool(r[5])]
        for r in X.itertuples(index=False)
    ]
    return store.tracking_uri, list(X.columns), rows


def pinned(cmd: list[str], cpu: str) -> list[str]:
    return (
        ["taskset", "-c", cpu, *cmd]
        if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1
        else cmd
    )


def start(cmd: list[str], env: dict[str, str], ready_url: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd[:4]} exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{cmd[:4]} not ready:\n{log.read_text()[-2000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wrk_script(path: Path, body: str, headers: dict[str, str]) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def to_ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(url: str, script: Path, connections: int, duration: float) -> dict[str, float]:
    base = [
        "wrk",
        "-t1",
        "--timeout",
        "10s",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(pinned(base, "1"), capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {p: to_ms(re.search(rf"\s{p}%\s+(\S+)", out).group(1)) for p in ("50", "99")}
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(g) for g in errors.groups())
    return {"rps": rps, "p50": lat["50"], "p99": lat["99"], "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--model", choices=("breast-cancer", "churn"), default="breast-cancer")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    churn = args.model == "churn"
    model = "churn" if churn else MODEL
    tracking, features, data = build_churn(work) if churn else build_model(work)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # mlflow starts `uvicorn` from PATH
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    ours_port, mlflow_port = free_port(), free_port()
    ours_env = {
        **env,
        "SERVE_API_KEYS": f"{KEY}:read",
        "SERVE_MODEL_NAME": model,
        "SERVE_MODELS": f"{model}@champion",
        "SERVE_MLFLOW_TRACKING_URI": tracking,
        "SERVE_DATABASE_URL": f"sqlite:///{work / 'serve.db'}",
        "SERVE_BATCH_LIMIT": "10000",
        "JOBRUNNER_PROJECT_DIR": str(work),
    }
    (work / "dvc.yaml").write_text("stages: {}\n")
    servers = {
        "ours": start(
            pinned(
                [
                    str(BIN / "uvicorn"),
                    "serve.app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ours_port),
                    "--workers",
                    "1",
                ],
                "0",
            ),
            ours_env,
            f"http://127.0.0.1:{ours_port}/ready",
            work / "ours.log",
        ),
        "mlflow": start(
            pinned(
                [
                    str(BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    f"models:/{model}@champion",
                    "--env-manager",
                    "local",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(mlflow_port),
                    "-w",
                    "1",
                ],
                "0",
            ),
            env,
            f"http://127.0.0.1:{mlflow_port}/ping",
            work / "mlflow.log",
        ),
    }
    # "ours-split" is our API with the compact columns/data body, the same shape MLflow is sent
    urls = {
        "mlflow": f"http://127.0.0.1:{mlflow_port}/invocations",
        "ours": f"http://127.0.0.1:{ours_port}/v1/predict",
        "ours-split": f"http://127.0.0.1:{ours_port}/v1/predict",
    }
    if churn:
        urls["ours-invocations"] = f"http://127.0.0.1:{ours_port}/v1/models/{model}/invocations"
    ours_headers = {"Content-Type": "application/json", "X-API-Key": KEY}
    headers = {name: ours_headers for name in urls}
    headers["mlflow"] = {"Content-Type": "application/json"}
    levels = [int(x) for x in args.concurrency.split(",")]
    results = []
    try:
        for rows in (1, 1000):
            batch = (data * 3)[:rows]
            bodies = {
                "ours": json.dumps({"rows": [dict(zip(features, r, strict=True)) for r in batch]}),
                "ours-split": json.dumps({"columns": features, "data": batch}),
                "mlflow": json.dumps({"dataframe_split": {"columns": features, "data": batch}}),
            }
            bodies["ours-invocations"] = bodies["mlflow"]
            for name, url in urls.items():
                script = wrk_script(work / f"{name}-{rows}.lua", bodies[name], headers[name])
                check = httpx.post(url, content=bodies[name], headers=headers[name], timeout=30)
                assert check.status_code == 200, (name, check.text[:300])
                run_wrk(url, script, 4, 2)  # warm-up
                for c in levels:
                    r = run_wrk(url, script, c, args.duration)
                    results.append({"server": name, "rows": rows, "c": c, **r})
                    print(
                        f"{name:10} rows={rows:<5} c={c:<3} {r['rps']:9.1f} req/s  p50 {r['p50']:8.2f} ms  "
                        f"p99 {r['p99']:8.2f} ms  failed {r['failed']}",
                        file=sys.stderr,
                    )
        logged = httpx.get(f"http://127.0.0.1:{ours_port}/metrics").text
        written = re.search(r"^serve_prediction_log_written_total (\S+)", logged, re.MULTILINE)
    finally:
        for proc in servers.values():
            stop(proc)
    print(
        f"\nwrk -t1, {args.duration:g} s per cell; servers on CPU 0, wrk on CPU 1 (taskset); "
        f"prediction batches written by our background writer: {written.group(1) if written else '?'}\n"
    )
    ours = [n for n in urls if n != "mlflow"]
    print(f"model: {model}; load average at the end: {os.getloadavg()[0]:.1f}\n")
    print(
        "| rows | concurrency | mlflow req/s | "
        + " | ".join(f"{n} req/s (ratio)" for n in ours)
        + " | mlflow p50 / p99 ms | "
        + " | ".join(f"{n} p50 / p99 ms" for n in ours)
        + " | failed (mlflow/ours) |"
    )
    print("| --- " * (5 + 2 * len(ours)) + "|")
    for rows in (1, 1000):
        for c in levels:
            cell = {
                name: next(r for r in results if r["server"] == name and r["rows"] == rows and r["c"] == c)
                for name in urls
            }
            m = cell["mlflow"]
            base = m["rps"] or float("nan")
            print(
                f"| {rows} | {c} | {m['rps']:.0f} | "
                + " | ".join(f"{cell[n]['rps']:.0f} ({cell[n]['rps'] / base:.1f}x)" for n in ours)
                + f" | {m['p50']:.2f} / {m['p99']:.2f} | "
                + " | ".join(f"{cell[n]['p50']:.2f} / {cell[n]['p99']:.2f}" for n in ours)
                + f" | {m['failed']}/{sum(cell[n]['failed'] for n in ours)} |"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
