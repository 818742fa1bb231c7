"""The job message: what the queue carries to a worker. Small and versioned; the job's row is the truth.

    {"job_id": "<uuid>", "schema_version": 1, "attempt": 0}

Built by the job store (the outbox row's payload), published by the relay and `dlq requeue`, read by the
worker's AMQP and embedded sources. `JobMessage.decode` / `from_payload` raise `MessageError` naming what
is wrong with a body; the worker dead-letters such a message unprocessed (a poison message). A change
to the format is a new SCHEMA_VERSION, which workers of the old version dead-letter rather than guess at.

A leaf module (standard library only), as the import-linter contract in pyproject.toml says.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

SCHEMA_VERSION = 1


class MessageError(ValueError):
    """A body that is not a job message of the schema this code reads; says what was wrong."""


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    attempt: int = 0

    schema_version: ClassVar[int] = SCHEMA_VERSION

    def as_payload(self) -> dict[str, Any]:
        """The JSON object of this message (the outbox row's payload)."""
        return {"job_id": self.job_id, "schema_version": SCHEMA_VERSION, "attempt": self.attempt}

    def encode(self) -> bytes:
        """The body published to the broker: UTF-8 JSON."""
        return json.dumps(self.as_payload()).encode()

    @classmethod
    def from_payload(cls, data: Any) -> JobMessage:
        """The message of a decoded JSON object; MessageError naming the first thing wrong with it."""
        if not isinstance(data, Mapping):
            raise MessageError(f"not a job message: the body is a JSON {type(data).__name__}, not an object")
        job_id = data.get("job_id")
        if not isinstance(job_id, str):
            raise MessageError(
                "not a job message: no job_id"
                if job_id is None
                else f"not a job message: job_id is a {type(job_id).__name__}, not a string"
            )
        version = data.get("schema_version")
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise MessageError(
                f"unknown message schema_version {version!r} (this worker reads {SCHEMA_VERSION})"
            )
        attempt = data.get("attempt", 0)
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0:
            raise MessageError(f"bad job message: attempt {attempt!r} is not a non-negative integer")
        return cls(job_id=job_id, attempt=attempt)

    @classmethod
    def decode(cls, body: bytes | str) -> JobMessage:
        """The message of a broker body; MessageError when it is not UTF-8 JSON of this schema."""
        try:
            data = json.loads(body)
        except UnicodeDecodeError as exc:
            raise MessageError(
                f"not a job message: the body is not UTF-8 ({exc.reason} at byte {exc.start})"
            ) from exc
        except ValueError as exc:  # json.JSONDecodeError
            raise MessageError(f"not a job message: the body is not JSON ({exc})") from exc
        except RecursionError as exc:  # a deeply nested body
            raise MessageError("not a job message: the body is nested too deeply") from exc
        return cls.from_payload(data)
