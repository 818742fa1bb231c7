"""The job message (jobrunner.store.messages): one format, versioned; bad bodies are named errors."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jobrunner.store.messages import SCHEMA_VERSION, JobMessage, MessageError


def test_a_message_round_trips_through_its_body_and_its_payload() -> None:
    message = JobMessage("5f0c1a52-7e1b-4f4e-9d0e-2b7c3f9a1d11", attempt=3)
    assert JobMessage.decode(message.encode()) == message
    assert JobMessage.from_payload(message.as_payload()) == message
    assert json.loads(message.encode()) == {
        "job_id": message.job_id,
        "schema_version": SCHEMA_VERSION,
        "attempt": 3,
    }


def test_a_message_is_frozen() -> None:
    message = JobMessage("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.attempt = 2  # type: ignore[misc]


def test_a_stored_message_of_this_version_without_attempt_is_attempt_zero() -> None:
    assert JobMessage.decode(b'{"job_id": "a", "schema_version": 1}') == JobMessage("a", 0)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, None, "1", True])
def test_another_schema_version_is_refused_naming_it(version: object) -> None:
    body = json.dumps({"job_id": "a", "schema_version": version, "attempt": 0}).encode()
    with pytest.raises(MessageError, match=rf"unknown message schema_version {version!r}".replace("'", ".")):
        JobMessage.decode(body)


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"\xff not json", "not UTF-8"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "a JSON list, not an object"),
        (b"{}", "no job_id"),
        (b'{"hello": "world"}', "no job_id"),
        (b'{"job_id": 7, "schema_version": 1}', "job_id is a int, not a string"),
        (
            b'{"job_id": "a", "schema_version": 1, "attempt": "3"}',
            "attempt '3' is not a non-negative integer",
        ),
        (b'{"job_id": "a", "schema_version": 1, "attempt": -1}', "attempt -1 is not a non-negative integer"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_a_malformed_body_is_refused_saying_what_is_wrong(body: bytes, what: str) -> None:
    with pytest.raises(MessageError) as caught:
        JobMessage.decode(body)
    assert what in str(caught.value)
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do


def test_the_outbox_stores_the_messages_payload() -> None:
    from jobrunner.store.models import Outbox
    from jobrunner.store.queries import add_outbox

    class Session:
        def __init__(self) -> None:
            self.added: list[object] = []

        def add(self, row: object) -> None:
            self.added.append(row)

    session = Session()
    add_outbox(session=session, job_id="job-1", attempt=2)  # type: ignore[arg-type]
    (row,) = session.added
    assert isinstance(row, Outbox) and JobMessage.from_payload(row.payload) == JobMessage("job-1", 2)
