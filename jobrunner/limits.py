"""Limits that more than one layer enforces (the job store, the CLI, the REST API, the dashboards).

A leaf module: it imports nothing, so jobrunner.store.schemas and jobrunner.errors (and serve and the
dashboards) can take the same number without an import cycle.
"""

from __future__ import annotations

MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: a longer per-job limit is a typo, not a plan

# The longest notebook path (relative to the project) a job or a schedule may name. 1024, not the 500 the
# REST API used to allow: it is the width of the `notebook` columns of jobs and schedules (String(1024)),
# what the CLI and the Python API always accepted, so nothing that was accepted before is refused now, and
# a job submitted from the CLI can be found by the API's `?notebook=` filter.
MAX_NOTEBOOK_PATH = 1024
