"""The outbox relay: publishes job messages written by submissions and retries, then marks them sent.

Submissions write the job row and its outbox row in one transaction, so a job is never accepted without
its message, and a broker outage only delays publishing. `submit` tries once right away; every worker
runs `relay_once` in its loop, so messages left behind are published as soon as the broker is back.
A message may be published twice (a crash between the confirm and the commit): workers ignore messages
of jobs that are not QUEUED, so duplicates are harmless.
"""

from __future__ import annotations

import logging
from typing import Any

from jobrunner.config import Settings
from jobrunner.queue.broker import broker_for
from jobrunner.store.db import session_scope

log = logging.getLogger(__name__)


def relay_once(
    settings: Settings, *, channel: Any = None, connect_attempts: int = 3, batch: int = 200
) -> int:
    """Publish due outbox rows on `channel` (a confirm-mode publisher; one is opened if None).

    Returns how many were published. Raises BrokerUnavailable / StoreUnavailable; rows published before
    an error are still marked sent.
    """
    from jobrunner.store import queries as store

    broker = broker_for(settings)
    if broker is None:
        return 0  # embedded: workers consume the outbox directly
    connection = None
    if channel is None:
        connection = broker.connect(attempts=connect_attempts)
        channel = broker.publisher(connection)
    published = 0
    error: Exception | None = None
    try:
        with session_scope(settings) as session:
            for row in store.pending_outbox(session=session, limit=batch):
                try:
                    broker.publish(channel, row.payload)
                except Exception as exc:  # noqa: BLE001 - stop here, keep what was confirmed
                    error = exc
                    break
                store.mark_sent(session=session, outbox_id=row.id)
                published += 1
    finally:
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001
                pass
    if published:
        log.info("relay published %d job message(s)", published)
    if error is not None:
        from jobrunner.errors import BrokerUnavailable

        raise BrokerUnavailable(f"publishing failed after {published} message(s): {error!r}") from error
    return published
