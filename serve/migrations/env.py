"""Alembic environment of the API's own tables (predictions, feedback, retrain triggers).

The API shares its database with jobrunner's job store by default, so its revisions live in their own
version table, `serve_alembic_version`, and never touch jobrunner's. Run by `serve.store.db.migrate()`
(at API start-up) with the connection passed in `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from serve.store.db import VERSION_TABLE
from serve.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
