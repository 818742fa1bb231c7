"""Fault suite: PostgreSQL away for longer than the heartbeat timeout while every worker is busy.

Workers reach PostgreSQL through a TCP proxy the test cuts; this test process, RabbitMQ and MLflow are
reached directly. The notebooks finish during the outage: their results must be written once the
database is back, nothing may be requeued as "dead", no notebook may run again, and each job has one
successful MLflow run.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.jobrunner.faults_support import assert_exactly_once, submit_marked, wait_all, wait_busy
from tests.jobrunner.support import TcpProxy, wait_consumers

pytestmark = [pytest.mark.services, pytest.mark.slow]
HEARTBEAT_TIMEOUT = 8.0
OUTAGE = float(os.environ.get("FAULTS_STORE_OUTAGE", "12"))  # > HEARTBEAT_TIMEOUT; docs measure 15 and 60


def test_store_outage_longer_than_heartbeat_timeout_keeps_finished_work(job_env, workers, project):
    from jobrunner.jobs import job_events

    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    try:
        url = proxy.url_for(job_env["JOBRUNNER_DATABASE_URL"])
        procs = [
            workers.start(
                name, JOBRUNNER_DATABASE_URL=url, JOBRUNNER_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT)
            )
            for name in ("s1", "s2")
        ]
        wait_consumers(job_env, 2, timeout=240)
        # both workers busy (their reapers run all the same), held in their sleep cell by a gate file: the
        # notebooks end during the outage however slowly kernels start on a loaded machine
        gate = project / "gate"
        ids = submit_marked(project, 2, 0.5, "pg", gate=gate)
        wait_busy(ids, 2)
        later = submit_marked(project, 2, 0.5, "after")  # wait in the queue through the outage
        proxy.cut()
        t0 = time.monotonic()
        gate.write_text("")
        time.sleep(OUTAGE)
        proxy.restore()
        print(f"store away {time.monotonic() - t0:.1f}s (heartbeat timeout {HEARTBEAT_TIMEOUT:.0f}s)")
        wait_all(ids + later, 120 + OUTAGE)
        assert_exactly_once(job_env, project, ids + later)
        for job_id in ids:
            assert [e.to_state for e in job_events(job_id)] == ["QUEUED", "RUNNING", "SUCCEEDED"]
        for proc in procs:
            log = workers.log(proc)
            assert proc.poll() is None and "had a dead worker" not in log and "made runnable" not in log
        logs = "".join(workers.log(p) for p in procs)
        for job_id in ids:  # each notebook ended during the outage and its result waited for the store
            assert f"job {job_id}: store unavailable" in logs
    finally:
        proxy.cut()
