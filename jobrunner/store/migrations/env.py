"""Alembic environment: the connection handed in by jobrunner.store.db.migrate_url, or the settings' URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from jobrunner.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from jobrunner.config import get_settings
    from jobrunner.store.db import new_engine

    engine = new_engine(get_settings().database_url or "")
    with engine.begin() as conn:
        _run(conn)
