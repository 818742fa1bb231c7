"""Former name of tests/jobrunner/support.py, kept for modules not yet switched (test_cli_jobs.py,
tests/serve/test_contract_support.py): helpers only. Import from tests.jobrunner.support instead; the
fixtures are in tests/jobrunner/conftest.py and are never imported."""

from tests.jobrunner.support import *  # noqa: F403
from tests.jobrunner.support import LATEST_MIGRATION, PYTHON, ROOT, delete_queues
