"""The named values of jobrunner, each defined once: job states, failure kinds, run outcomes.

A leaf module (standard library only) so that anything - the CLI's `--help`, the dashboards' client code,
a kernel - can name them without importing the job store. They are `StrEnum`s: each member *is* its
string, so the values stored in the database (`jobs.state`, `jobs.error_kind`) and shown by the API are
exactly the strings below; change one and stored rows stop matching.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):  # str() and f-strings give the bare name: "SUCCEEDED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class FailureKind(enum.StrEnum):
    """Why an execution or a job failed: `NotebookFailure.kind` and the `jobs.error_kind` column."""

    ERROR = "error"  # a cell raised
    TIMEOUT = "timeout"  # the time limit passed
    CANCELLED = "cancelled"  # cancelled (a user, SIGTERM)
    KERNEL_DIED = "kernel_died"  # the kernel process died
    STOPPED = "stopped"  # internal: the cell a timeout or cancel stopped (engine.last_started_cell)
    INFRASTRUCTURE = "infrastructure"  # the kernel, tracking store or output store failed (jobs only)
    DEAD_LETTERED = "dead_lettered"  # gave up after too many attempts (jobs only)
    INVALID = "invalid"  # the job cannot run: bad parameters, notebook gone (jobs only)


class RunStatus(enum.StrEnum):
    """The outcome of one execution (`ExecutionResult.status`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
