"""The exception root of jobrunner and its structured subclasses.

Every error a user can cause carries what was wrong and what to do about it; callers (the CLI, the
worker, the REST API) map these classes to exit codes and HTTP statuses in one place each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from jobrunner.limits import MAX_TIMEOUT


class JobrunnerError(Exception):
    """Root of every error jobrunner raises on purpose."""


class InfrastructureError(JobrunnerError):
    """Something outside the notebook failed (kernel start, storage, tracking); retrying may help."""


class ConfigurationError(InfrastructureError):
    """A setting is missing or wrong, or a configured service unreachable; the message names the setting."""


class NotebookNotFound(JobrunnerError):
    """The notebook path does not exist, is not a notebook, or lies outside the notebook roots."""


class InvalidNotebook(JobrunnerError):
    """The notebook cannot be read or its parameters cell is not a valid parameter contract."""


@dataclass(frozen=True)
class ParameterProblem:
    """One thing wrong with the parameters given to a notebook."""

    name: str
    problem: str  # "unknown", "type", "missing"
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "problem": self.problem, "message": self.message}


class ParameterError(JobrunnerError):
    """Parameters do not match the notebook's contract; nothing was executed."""

    def __init__(self, notebook: str, problems: list[ParameterProblem]):
        self.notebook = notebook
        self.problems = problems
        lines = [f"invalid parameters for {notebook}:"] + [f"  - {p.message}" for p in problems]
        super().__init__("\n".join(lines))


class InvalidJobOption(ParameterError):
    """A job option beside the parameters (kernel, notify) is not valid; nothing was queued (exit 2, 422)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.notebook = ""
        self.problems = [ParameterProblem(field, "invalid", message)]
        JobrunnerError.__init__(self, message)


@dataclass
class NotebookFailure:
    """What went wrong inside an executed notebook, as data."""

    kind: str  # "error" | "timeout" | "cancelled" | "kernel_died"
    message: str
    # index of the failing cell in the notebook as written (0-based; papermill's injected-parameters
    # cell is not counted), and its execution count, shown as In [n] in the executed notebook
    cell_index: int | None = None
    execution_count: int | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "message": self.message,
            "cell_index": self.cell_index,
            "execution_count": self.execution_count,
            "ename": self.ename,
            "evalue": self.evalue,
        }


class NotebookFailed(JobrunnerError):
    """Raised by callers that want an exception for a failed execution (the executor returns data)."""

    def __init__(self, failure: NotebookFailure, output_path: str | None = None):
        self.failure = failure
        self.output_path = output_path
        self.cell_index = failure.cell_index
        self.ename = failure.ename
        self.evalue = failure.evalue
        super().__init__(failure.message)


class KernelStartError(InfrastructureError):
    """The kernel could not be started."""


class RecordingError(InfrastructureError):
    """The run could not be recorded in MLflow."""


class JobNotFound(JobrunnerError):
    """No job has this id."""

    def __init__(self, job_id: str):
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r} (list jobs with: jobrunner list)")


class InvalidTransition(JobrunnerError):
    """The job is not in a state that allows this change (e.g. cancelling a finished job)."""

    def __init__(self, job_id: str, state: str, wanted: str):
        self.job_id = job_id
        self.state = state
        self.wanted = wanted
        super().__init__(f"job {job_id} is {state}; it cannot become {wanted}")


class StoreUnavailable(InfrastructureError):
    """The job store (database) could not be reached or has no schema yet."""


class BrokerUnavailable(InfrastructureError):
    """The message broker could not be reached; submitted jobs stay in the outbox until it is back."""


class ArtifactStoreError(InfrastructureError):
    """The executed notebook could not be stored at JOBRUNNER_ARTIFACT_URI (S3 or a folder)."""


class _FailureView(Protocol):
    """What the job messages below read of a job's error (jobrunner.store.schemas.JobError)."""

    @property
    def kind(self) -> str | None: ...
    @property
    def cell_index(self) -> int | None: ...
    @property
    def ename(self) -> str | None: ...
    @property
    def message(self) -> str | None: ...


class _StateView(Protocol):
    @property
    def value(self) -> str: ...


class JobView(Protocol):
    """What JobFailed and WaitTimeout read of a job (jobrunner.store.schemas.JobRead; errors is a leaf
    module and does not import the job store)."""

    @property
    def id(self) -> str: ...
    @property
    def notebook(self) -> str: ...
    @property
    def state(self) -> _StateView: ...
    @property
    def error(self) -> _FailureView | None: ...
    @property
    def output_uri(self) -> str | None: ...


class JobFailed(JobrunnerError):
    """A job waited for ended FAILED or CANCELLED; `job` holds its state, error and executed notebook."""

    def __init__(self, job: JobView):
        self.job = job
        error = job.error
        where = f" in cell {error.cell_index}" if error and error.cell_index is not None else ""
        what = (error.message or error.ename or error.kind) if error else "no error recorded"
        lines = [f"job {job.id} ({job.notebook}) {job.state.value.lower()}{where}: {what}"]
        if job.output_uri:
            lines.append(f"executed notebook: {job.output_uri}")
        super().__init__("\n".join(lines))


class WaitTimeout(JobrunnerError):
    """Waiting for a job took longer than the caller allowed; the job itself keeps going."""

    def __init__(self, job: JobView, waited: float):
        self.job = job
        super().__init__(
            f"job {job.id} is still {job.state.value} after waiting {waited:g}s; it keeps "
            f"running (cancel it with `jobrunner cancel {job.id}`)"
        )


class InvalidTimeout(JobrunnerError):
    """A job's time limit that is not a number of seconds above 0 and at most a week."""

    def __init__(self, value: object):
        self.value = value
        super().__init__(
            f"timeout must be a number of seconds above 0 and at most {MAX_TIMEOUT:g} (a week), "
            f"got {value!r}; nothing was queued"
        )


class IdempotencyConflict(JobrunnerError):
    """An idempotency key was reused for a different notebook, parameters or time limit."""

    def __init__(self, key: str, job_id: str):
        self.key = key
        self.job_id = job_id
        super().__init__(
            f"idempotency key {key!r} already belongs to job {job_id} with another notebook, "
            "other parameters or another time limit; use a new key to submit a different job"
        )


class StoreNotMigrated(StoreUnavailable):
    """The job store's database has no jobrunner tables yet: run `jobrunner migrate`."""
