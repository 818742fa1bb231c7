"""The long contract run: schemathesis `--checks all` against the API for 5 minutes (not a test).

It builds the same target as tests/serve/test_contract.py - a throw-away MLflow store with the test
models, uvicorn with the job store and prediction log on a fresh PostgreSQL database and jobs published
to a RabbitMQ queue of its own - runs `st run <url>/openapi.json --checks all --max-time 300` with the
write key, then removes the database and the queue. Needs PostgreSQL and RabbitMQ (docs/api.md).

    .venv/bin/python bench/contract_fuzz.py                    # 5 minutes (make fuzz-api)
    .venv/bin/python bench/contract_fuzz.py --max-time 60      # quicker
    st replay <test case id>                                    # in --report-dir, to reproduce a failure

Prints the command, the duration, the operations and test cases, and the failures (exit code 1 if any).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the target is built by the test helpers (tests/serve/)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-time", type=float, default=300, help="seconds of fuzzing (default 300)")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--workers", type=int, default=1, help="schemathesis workers (default 1)")
    parser.add_argument("--report-dir", type=Path, default=None, help="keep the JUnit report and output here")
    args = parser.parse_args()

    from tests.serve.conftest import model_store_at
    from tests.serve.contract_support import run_schemathesis, start_fuzz_target, stop_fuzz_target

    with tempfile.TemporaryDirectory(prefix="contract-fuzz-") as tmp:
        work = Path(tmp)
        (work / "project").mkdir()
        stores = model_store_at(work / "project")
        store = next(stores)
        target = start_fuzz_target(store, work)
        try:
            report_dir = args.report_dir or work / "report"
            run = run_schemathesis(
                target.server.url,
                report_dir,
                seed=args.seed,
                max_time=args.max_time,
                workers=args.workers,
                timeout=args.max_time + 600,
            )
            server_log = target.server.log()
        finally:
            stop_fuzz_target(target)
            stores.close()
    if args.report_dir:
        (args.report_dir / "output.txt").write_text(run.output)
    print(run.output[-6000:])
    print("command:", " ".join(run.command))
    print("result:", run.summary())
    tracebacks = server_log.count("Traceback")
    print("server tracebacks:", tracebacks)
    return 0 if run.failures == 0 and run.returncode == 0 and tracebacks == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
