"""Prediction logging off the request path: a queue and one writer thread that inserts in batches.

A request only appends a record (references to its numpy arrays) to an in-memory queue. The writer wakes
every `flush_interval` seconds or when `batch_size` records wait, and inserts them in one transaction.
On a failed insert the records are kept and retried; on shutdown `close()` drains the queue completely
before returning, so nothing accepted is lost by a clean stop (SIGTERM to uvicorn runs the lifespan exit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy import Engine

from serve.store import predictions
from serve.store.models import BatchRecord

log = logging.getLogger(__name__)


class PredictionWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        on_written: Callable[[int], None] | None = None,
    ):
        self.engine = engine
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._queue: deque[BatchRecord] = deque()  # append/popleft are atomic: no lock on the hot path
        self._wake = threading.Event()
        self._stopping = False
        self._idle = threading.Condition()
        self._in_flight = 0
        self._on_written = on_written or (lambda n: None)
        self._thread = threading.Thread(target=self._run, name="serve-prediction-writer", daemon=True)
        self.failures = 0
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def submit(self, record: BatchRecord) -> None:
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue) + self._in_flight

    def _take(self) -> list[BatchRecord]:
        batch: list[BatchRecord] = []
        while self._queue and len(batch) < self.batch_size:
            batch.append(self._queue.popleft())
        self._in_flight = len(batch)
        return batch

    def _write(self, batch: list[BatchRecord]) -> bool:
        from sqlalchemy.exc import DBAPIError, OperationalError

        try:
            predictions.insert_batches(self.engine, batch)
        except (OperationalError, DBAPIError) as exc:
            if not (isinstance(exc, OperationalError) or exc.connection_invalidated):
                self._write_one_by_one(batch)
                self._in_flight = 0
                return True
            # the database is unreachable or restarting: keep the records and retry later
            self.failures += 1
            log.warning("writing %d prediction records failed; will retry: %s", len(batch), exc)
            self._queue.extendleft(reversed(batch))
            self._in_flight = 0
            return False
        except Exception:  # noqa: BLE001 - a record that cannot be stored must not block the others
            self._write_one_by_one(batch)
        else:
            self._on_written(len(batch))
        self._in_flight = 0
        return True

    def _write_one_by_one(self, batch: list[BatchRecord]) -> None:
        for record in batch:
            try:
                predictions.insert_batches(self.engine, [record])
            except Exception:  # logged and counted; retrying it would never succeed
                self.dropped += 1
                log.exception("prediction record %s cannot be stored; dropped", record.get("id"))
            else:
                self._on_written(1)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            while self._queue:
                if not self._write(self._take()):
                    time.sleep(min(self.flush_interval * 2, 2.0))
                    break
            with self._idle:
                self._idle.notify_all()
            if self._stopping and not self._queue:
                return

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            self._wake.set()
            with self._idle:
                self._idle.wait(0.05)
        return not self.pending

    def close(self, timeout: float = 30.0) -> None:
        """Drain and stop; logs loudly what could not be written (database gone at shutdown)."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._queue:
            log.error("%d prediction records could not be written before shutdown", len(self._queue))
