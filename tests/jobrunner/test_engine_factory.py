"""One engine factory (jobrunner.store.db.new_engine) for the job store and serve's prediction store, each
with its own settings."""

from __future__ import annotations

import pytest
from sqlalchemy import text


def _pragma(engine, name: str):
    with engine.connect() as conn:
        return conn.execute(text(f"PRAGMA {name}")).scalar()


def test_sqlite_engines_keep_each_sides_pragmas(tmp_path):
    from jobrunner.store.db import new_engine
    from serve.store.db import make_engine

    jobs = new_engine(f"sqlite:///{tmp_path / 'nested' / 'jobs.db'}")  # the folder is made
    assert _pragma(jobs, "journal_mode") == "wal" and _pragma(jobs, "foreign_keys") == 1
    serve = make_engine(f"sqlite:///{tmp_path / 'serve.db'}")
    assert _pragma(serve, "journal_mode") == "wal" and _pragma(serve, "busy_timeout") == 30000
    assert _pragma(serve, "foreign_keys") == 0
    jobs.dispose()
    serve.dispose()


def test_postgres_engines_keep_each_sides_pool():
    from jobrunner.store.db import new_engine
    from serve.store.db import make_engine

    url = "postgresql://user:secret@127.0.0.1:1/none"  # nothing connects: engines are lazy
    jobs = new_engine(url)
    assert jobs.url.drivername == "postgresql+psycopg2"
    assert (jobs.pool.size(), jobs.pool._max_overflow, jobs.pool._recycle) == (3, 5, 1800)
    assert jobs.pool._pre_ping
    serve = make_engine(url)
    assert (serve.pool.size(), serve.pool._max_overflow, serve.pool._recycle) == (5, 5, -1)
    assert serve.dialect._json_serializer is not None


def test_an_unsupported_scheme_names_the_setting():
    from jobrunner.errors import StoreUnavailable
    from jobrunner.store.db import get_engine
    from serve.store.db import make_engine

    with pytest.raises(StoreUnavailable, match="JOBRUNNER_DATABASE_URL scheme 'mysql'"):
        get_engine("mysql://x@y/z")
    with pytest.raises(StoreUnavailable, match="SERVE_DATABASE_URL scheme 'mysql'"):
        make_engine("mysql://x@y/z")
