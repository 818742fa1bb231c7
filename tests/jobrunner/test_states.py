"""The transition table and the one conditional-update function that enforces it (real PostgreSQL)."""

from __future__ import annotations

import threading

import pytest

from jobrunner.errors import InvalidTransition
from jobrunner.store.states import JobState, transition

pytestmark = pytest.mark.services


def test_terminal_states_allow_nothing_but_dlq_requeue_of_failed(pg_settings):
    """A job driven to each terminal state through transition() can leave it only FAILED -> QUEUED (what
    `dlq requeue` does); every other move is refused and leaves the row as it was. A QUEUED job cannot be
    queued again. (Was a restatement of the ALLOWED table; this drives real rows.)"""
    from jobrunner.jobs import get_job, submit
    from jobrunner.store.db import session_scope

    def move(job_id: str, *path: JobState) -> None:
        with session_scope(pg_settings) as session:
            for source, target in zip(path, path[1:], strict=False):
                assert transition(session, job_id, [source], target), (source, target)

    with pytest.raises(InvalidTransition):
        move(
            submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings).id, JobState.QUEUED, JobState.QUEUED
        )
    for end in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        job_id = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings).id
        move(job_id, JobState.QUEUED, *(() if end is JobState.CANCELLED else (JobState.RUNNING,)), end)
        assert get_job(job_id, settings=pg_settings).state is end
        for target in JobState:
            if (end, target) == (JobState.FAILED, JobState.QUEUED):
                continue
            with pytest.raises(InvalidTransition):
                move(job_id, end, target)
            assert get_job(job_id, settings=pg_settings).state is end, (end, target)
        if end is JobState.FAILED:
            move(job_id, end, JobState.QUEUED)
            assert get_job(job_id, settings=pg_settings).state is JobState.QUEUED


def test_illegal_transition_is_refused_before_touching_the_store(pg_settings):
    from jobrunner.jobs import get_job, submit
    from jobrunner.store.db import session_scope

    job = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)
    with (
        pytest.raises(InvalidTransition, match="QUEUED; it cannot become SUCCEEDED"),
        session_scope(pg_settings) as session,
    ):
        transition(session, job.id, [JobState.QUEUED], JobState.SUCCEEDED)
    assert get_job(job.id, settings=pg_settings).state is JobState.QUEUED


def test_conditional_update_lets_exactly_one_of_many_racers_win(pg_settings):
    from jobrunner.jobs import get_job, job_events, submit
    from jobrunner.store.db import session_scope

    job = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def race(n: int) -> None:
        barrier.wait()
        with session_scope(pg_settings) as session:
            wins.append(
                transition(
                    session, job.id, [JobState.QUEUED], JobState.RUNNING, actor=f"w{n}", worker_id=f"w{n}"
                )
            )

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert get_job(job.id, settings=pg_settings).state is JobState.RUNNING
    assert [e.to_state for e in job_events(job.id, settings=pg_settings)] == ["QUEUED", "RUNNING"]


def test_wrong_source_state_changes_nothing(pg_settings):
    from jobrunner.jobs import cancel_job, get_job, submit
    from jobrunner.store.db import session_scope

    job = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)
    cancel_job(job.id, settings=pg_settings)
    with session_scope(pg_settings) as session:
        assert transition(session, job.id, [JobState.QUEUED], JobState.RUNNING) is False
    assert get_job(job.id, settings=pg_settings).state is JobState.CANCELLED


def test_a_state_prints_as_its_name() -> None:
    # what `print(handle.wait().state)` shows a user, and what every message with a state in it says
    assert str(JobState.SUCCEEDED) == "SUCCEEDED"
    assert f"job is {JobState.CANCELLING}" == "job is CANCELLING"
    assert JobState("FAILED") is JobState.FAILED and JobState.FAILED == "FAILED"
