"""The job store: the database of jobs, their states and what workers and schedules write to it.

`db` makes engines, sessions and runs the Alembic `migrations`; `models` are the tables; `schemas` the
pydantic shapes of a job request and answer; `states` the state machine (every change is one
conditional UPDATE); `queries` the reads and claims the worker and the API make; `messages` the frozen,
versioned broker message; `live` the live cell output of running jobs; `notify` the webhook outbox.
Stands above `execution` (a job's parameters are validated with `execution.params`), below `queue`.
"""
