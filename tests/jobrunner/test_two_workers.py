"""Two workers with warm pools take ten concurrent jobs: each runs once, on its first attempt.

With TCP kernels two workers starting kernels at the same moment could race for ports (a job then burnt
its start timeout and a retry). Pooled kernels use the ipc transport, so no retry is tolerated here.
"""

from __future__ import annotations

import pytest

from tests.jobrunner.support import wait_consumers, wait_state

pytestmark = pytest.mark.services


def test_two_workers_ten_concurrent_jobs_all_succeed_on_attempt_one(job_env, workers):
    from jobrunner.jobs import job_events, submit

    a = workers.start("a", JOBRUNNER_KERNEL_POOL_SIZE="2")
    b = workers.start("b", JOBRUNNER_KERNEL_POOL_SIZE="2")
    wait_consumers(job_env, 2)
    # distinct parameters: identical submissions would be coalesced by the run cache (one execution)
    ids = [submit("notebooks/sleeps.ipynb", {"seconds": 0.3 + i / 100}).id for i in range(10)]
    done = [wait_state(i, {"SUCCEEDED", "FAILED"}, 180) for i in ids]
    assert [d.state.value for d in done] == ["SUCCEEDED"] * 10
    assert [d.attempt for d in done] == [1] * 10
    assert {d.worker_id for d in done} == {a.worker_id, b.worker_id}  # both took jobs
    for d in done:
        assert [e.to_state for e in job_events(d.id)] == ["QUEUED", "RUNNING", "SUCCEEDED"], d.id
