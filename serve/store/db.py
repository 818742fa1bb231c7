"""The prediction store's engine and Alembic migrations (serve/migrations), and helpers the queries share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Engine

from serve.store.models import Base

VERSION_TABLE = "serve_alembic_version"
# serve/migrations, next to this package (the wheel ships it as package data of `serve`)
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays orjson does not take natively (non-contiguous) and scalars
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def make_engine(url: str) -> Engine:
    """The prediction store's engine, from jobrunner's one engine factory with the API's settings: a bigger
    pool, no connect timeout or recycling, WAL (readers do not block the background writer) and a 30 s busy
    timeout on SQLite, orjson for the JSON columns."""
    from jobrunner.store.db import new_engine

    return new_engine(
        url,
        pool_size=5,
        max_overflow=5,
        pool_recycle=-1,
        connect_timeout=None,
        sqlite_pragmas=("journal_mode=WAL", "busy_timeout=30000"),
        setting="SERVE_DATABASE_URL",
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )


def migrate(engine: Engine) -> None:
    """Bring the API's tables to the newest revision (idempotent; safe with several workers starting)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.exc import OperationalError
    from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_incrementing

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # SQLite has no advisory lock: another worker starting at the same moment may have created the tables
    # between our check and our CREATE; the next attempt sees them at head. PostgreSQL errors are final.
    sqlite = engine.dialect.name == "sqlite"
    for attempt in Retrying(
        retry=retry_if_exception_type(OperationalError) if sqlite else lambda _: False,
        stop=stop_after_attempt(5),
        wait=wait_incrementing(0.2, 0.2),
        reraise=True,
    ):
        with attempt, engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(742917001)"))  # one worker at a time
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def count_rows(engine: Engine, table: type[Base]) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def aware(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime: SQLite returns naive ones; everything written here is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
