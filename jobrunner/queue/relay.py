"""The outbox relay: publishes job messages written by submissions and retries, then marks them sent.

Submissions write the job row and its outbox row in one transaction, so a job is never accepted without
its message, and a broker outage only delays publishing. `submit` tries once right away; every worker
runs `relay_once` in its loop, so messages left behind are published as soon as the broker is back.
A message may be published twice (a crash between the confirm and the commit): workers ignore messages
of jobs that are not QUEUED, so duplicates are harmless. The embedded broker has nothing to relay: its
workers consume the outbox itself.
"""

from __future__ import annotations

from typing import Any

from jobrunner.config import Settings
from jobrunner.queue.broker import broker_for


def relay_once(
    settings: Settings, *, channel: Any = None, connect_attempts: int = 3, batch: int = 200
) -> int:
    """Publish due outbox rows on `channel` (a confirm-mode publisher; one is opened if None).

    Returns how many were published. Raises BrokerUnavailable / StoreUnavailable; rows published before
    an error are still marked sent.
    """
    return broker_for(settings).relay(
        settings, channel=channel, connect_attempts=connect_attempts, batch=batch
    )
