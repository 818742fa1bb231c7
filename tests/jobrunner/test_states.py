"""The transition table and the one conditional-update function that enforces it (real PostgreSQL)."""

from __future__ import annotations

import threading

import pytest

from jobrunner.errors import InvalidTransition
from jobrunner.states import ALLOWED, TERMINAL, JobState, transition

pytestmark = pytest.mark.services


def test_terminal_states_allow_nothing_but_dlq_requeue_of_failed():
    assert ALLOWED[JobState.SUCCEEDED] == ALLOWED[JobState.CANCELLED] == frozenset()
    assert ALLOWED[JobState.FAILED] == {JobState.QUEUED}
    assert TERMINAL == {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
    assert JobState.QUEUED not in ALLOWED[JobState.QUEUED]  # a queued job cannot be "queued again"


def test_illegal_transition_is_refused_before_touching_the_store(pg_settings):
    from jobrunner.db import session_scope
    from jobrunner.jobs import get_job, submit

    job = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)
    with pytest.raises(InvalidTransition, match="QUEUED; it cannot become SUCCEEDED"):
        with session_scope(pg_settings) as session:
            transition(session, job.id, [JobState.QUEUED], JobState.SUCCEEDED)
    assert get_job(job.id, settings=pg_settings).state is JobState.QUEUED


def test_conditional_update_lets_exactly_one_of_many_racers_win(pg_settings):
    from jobrunner.db import session_scope
    from jobrunner.jobs import get_job, job_events, submit

    job = submit("notebooks/ok.ipynb", {"x": 1}, settings=pg_settings)
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def race(n: int) -> None:
        barrier.wait()
        with session_scope(pg_settings) as session:
            wins.append(transition(session, job.id, [JobState.QUEUED], JobState.RUNNING, actor=f"w{n}",
                                   worker_id=f"w{n}"))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
    assert get_job(job.id, settings=pg_settings).state is JobState.RUNNING
    assert [e.to_state for e in job_events(job.id, settings=pg_settings)] == ["QUEUED", "RUNNING"]


def test_wrong_source_state_changes_nothing(pg_settings):
    from jobrunner.db import session_scope
    from jobrunner.jobs import cancel_job, get_job, submit

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
