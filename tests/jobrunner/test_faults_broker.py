"""Fault suite: RabbitMQ blips and outages while every worker is busy, and SIGTERM in those states.

Workers reach the real RabbitMQ through a TCP proxy the test cuts (refuses and drops connections, as a
stopped broker would); the database and MLflow are reached directly. Strict invariants after each fault:
test_faults_support.assert_exactly_once.
"""

from __future__ import annotations

import time

import pytest

from tests.jobrunner.test_faults_support import (
    amqp_proxy,
    assert_exactly_once,
    consumers,
    stop_within,
    submit_marked,
    wait_all,
    wait_busy,
)
from tests.jobrunner.test_jobs_support import (  # noqa: F401
    job,
    job_env,
    mlflow_store,
    wait_consumers,
    wait_for,
    wait_state,
    workers,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]
GRACE = 4.0


def wait_consuming_again(env: dict[str, str], count: int, since: float, limit: float) -> float:
    """Seconds from `since` (the broker's return) until `count` workers consume again; at most `limit`."""
    wait_for(lambda: consumers(env) >= count, limit + 20, f"{count} consumers", interval=0.2)
    took = time.monotonic() - since
    assert took <= limit, f"workers consumed again {took:.1f}s after the broker came back (limit {limit}s)"
    return took


def test_broker_blip_and_outage_while_all_workers_busy_lose_and_duplicate_nothing(job_env, workers, project):
    proxy, via = amqp_proxy()
    try:
        url = via(job_env["JOBRUNNER_BROKER_URL"])
        procs = [workers.start(name, JOBRUNNER_BROKER_URL=url, JOBRUNNER_WORKER_GRACE_PERIOD=str(GRACE))
                 for name in ("b1", "b2")]
        wait_consumers(job_env, 2, timeout=240)

        # a 2-second blip while both workers are inside a notebook cell
        blip = submit_marked(project, 4, 4.0, "blip")
        wait_busy(blip, 2)
        proxy.cut()
        time.sleep(2)
        proxy.restore()
        back = time.monotonic()
        took = wait_consuming_again(job_env, 2, back, 10)
        print(f"blip 2 s: both workers consume again {took:.1f}s after the broker's return")
        wait_all(blip, 120)
        assert_exactly_once(job_env, project, blip)

        # a 10-second outage: the running notebooks finish (and commit) while the broker is away
        cut = submit_marked(project, 4, 3.0, "cut")
        wait_busy(cut, 2)
        proxy.cut()
        time.sleep(10)
        proxy.restore()
        back = time.monotonic()
        took = wait_consuming_again(job_env, 2, back, 10)
        print(f"cut 10 s: both workers consume again {took:.1f}s after the broker's return")
        wait_all(cut, 120)
        assert_exactly_once(job_env, project, cut)

        # SIGTERM after the blips: one worker busy while the broker is away again, one idle
        last = submit_marked(project, 1, 60.0, "term")
        busy = wait_busy(last, 1)[0]
        victim = next(p for p in procs if p.worker_id == busy.worker_id)
        idle = next(p for p in procs if p is not victim)
        proxy.cut()
        time.sleep(1)
        took_busy = stop_within(victim, GRACE + 5)
        proxy.restore()
        took_idle = stop_within(idle, GRACE + 5)
        print(f"SIGTERM: busy worker with the broker away exited in {took_busy:.1f}s, idle one in "
              f"{took_idle:.1f}s (grace {GRACE:.0f}s)")
        requeued = job(last[0])
        assert requeued.state.value == "QUEUED" and "shut down" in (requeued.error.message or "")
        for proc in procs:
            assert "Traceback" not in workers.log(proc), workers.log(proc)[-3000:]
    finally:
        proxy.cut()
