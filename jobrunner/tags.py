"""The MLflow tag names jobrunner writes and reads: the one place each is spelled.

The recorder, provenance, diff, verify, the run cache, the pipeline helpers, serve and the tests all
import these names; renaming a tag here renames it for every writer, reader and test at once. The VALUES
are a stored contract (existing MLflow stores hold runs tagged with them): change one only together with
a migration of those stores.

A leaf module: it imports nothing, so anything (including code inside a notebook kernel) may import it.
Names ending in ``_PREFIX`` are followed by a key (a path, a job id, an environment field).
"""

from __future__ import annotations

PREFIX = "jobrunner."  # every jobrunner tag starts with it

# What ran: written by the recorder when the run starts
NOTEBOOK_TAG = "jobrunner.notebook"  # the notebook path relative to the project
VERSION_TAG = "jobrunner.version"  # the jobrunner version that recorded the run
STARTED_AT_TAG = "jobrunner.started_at"  # ISO timestamp, set by the executor
OUTCOME_TAG = "jobrunner.outcome"  # running | succeeded | failed | ... | worker_lost | infrastructure_error
DURATION_TAG = "jobrunner.duration_s"
PARAMS_TRUNCATED_TAG = "jobrunner.params.truncated"  # names of parameters too long for an MLflow param

# Where it came from
GIT_COMMIT_TAG = "jobrunner.git.commit"
GIT_DIRTY_TAG = "jobrunner.git.dirty"  # "true" | "false"
DVC_LOCK_MD5_TAG = "jobrunner.dvc.lock_md5"
DATA_PREFIX = "jobrunner.data."  # followed by "input.<path>" or "output.<path>"
DATA_INPUT_PREFIX = "jobrunner.data.input."  # + path = DVC md5 of an input
DATA_OUTPUT_PREFIX = "jobrunner.data.output."  # + path = DVC md5 of an output
ENV_PREFIX = "jobrunner.env."  # + field of the environment digest (runcache.environment_digest)
STAGE_TAG = "jobrunner.stage"  # the DVC stage (pipelines.stage)
TRIGGER_TAG = "jobrunner.trigger"  # what started a stage run ("dvc")

# Failures
ERROR_KIND_TAG = "jobrunner.error.kind"
ERROR_MESSAGE_TAG = "jobrunner.error.message"
ERROR_CELL_INDEX_TAG = "jobrunner.error.cell_index"
ERROR_ENAME_TAG = "jobrunner.error.ename"

# Queued jobs: written by the worker
JOB_ID_TAG = "jobrunner.job_id"
ATTEMPT_TAG = "jobrunner.attempt"
WORKER_TAG = "jobrunner.worker"
SUPERSEDED_TAG = "jobrunner.superseded"  # "true" on a run whose job another run completed
SUPERSEDED_BY_TAG = "jobrunner.superseded_by"
SUPERSEDED_REASON_TAG = "jobrunner.superseded_reason"

# Outputs
OUTPUTS_FOLDER_TAG = "jobrunner.outputs.folder"  # the outputs folder of the execution
OUTPUTS_STORED_PREFIX = "jobrunner.outputs.stored."  # + path = URI of the stored copy

# Run cache
CACHE_KEY_TAG = "jobrunner.cache_key"
CACHE_OUTPUTS_TAG = "jobrunner.cache.outputs"  # "stored": the run logged its outputs under outputs/
# + output parameter = DVC md5 of what the run logged for it under outputs/ ("missing": not written); a
# run-cache hit restores an output only when the download has this md5
CACHE_OUTPUT_PREFIX = "jobrunner.cache.output."
CACHE_HIT_PREFIX = "jobrunner.cache.hit."  # + job id = the id of the job whose run was reused

# Verification
VERIFIES_TAG = "jobrunner.verifies"  # on the re-run: the run it verifies
VERIFIED_BY_TAG = "jobrunner.verified_by"  # on the original: the re-run
VERIFICATION_TAG = "jobrunner.verification"  # on the original: reproduced | not_reproduced

# The training run of the pipeline (pipelines.tracking)
MODEL_MD5_TAG = "jobrunner.model.md5"  # md5 of the local model copy
MODEL_URI_TAG = "jobrunner.model.uri"  # the logged model (models:/m-...)


def job_run_tags(job_id: str, attempt: int, worker: str) -> dict[str, str]:
    """The tags a worker puts on the run of one attempt of a queued job."""
    return {JOB_ID_TAG: job_id, ATTEMPT_TAG: str(attempt), WORKER_TAG: worker}
