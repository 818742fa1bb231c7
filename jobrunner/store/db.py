"""Engines, sessions and migrations of the job store, picked by URL (PostgreSQL or SQLite).

Nothing connects at import time; engines are built on first use and cached per URL.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from jobrunner.config import Settings
from jobrunner.errors import StoreNotMigrated, StoreUnavailable

log = logging.getLogger(__name__)
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_checked: set[str] = set()


def driver_url(url: str) -> str:
    """`url` with the installed PostgreSQL driver named. SQLAlchemy 2.1 maps a driverless postgresql://
    to psycopg 3, which is not installed: the project ships psycopg2, so a plain URL (as libpq and most
    tools write it) means that driver. Used by jobrunner's and serve's engines."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def scheme_of(url: str) -> str:
    """`postgresql` or `sqlite` (or whatever else the URL names), without the driver: `postgres` is
    `postgresql`."""
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    return "postgresql" if scheme == "postgres" else scheme


def new_engine(
    url: str,
    *,
    pool_size: int = 3,
    max_overflow: int = 5,
    pool_recycle: int = 1800,
    connect_timeout: int | None = 5,
    sqlite_pragmas: Sequence[str] = ("journal_mode=WAL", "foreign_keys=ON"),
    setting: str = "JOBRUNNER_DATABASE_URL",
    **engine_args: Any,
) -> Engine:
    """A new engine for a PostgreSQL or SQLite URL: the one place either kind is configured, for the job
    store (`get_engine`, the defaults) and serve's prediction store (its own pool and pragmas).

    PostgreSQL: the installed driver (`driver_url`), pool_pre_ping (replaces connections a server restart
    killed), `pool_size`/`max_overflow`, `pool_recycle` seconds (-1: never), and `connect_timeout` seconds
    bounding a hang on an unreachable server, so workers notice and retry instead of blocking forever.
    SQLite: the file's folder is created, connections are shared across threads and wait 30 s for a lock,
    and each new connection runs `PRAGMA <p>` for each of `sqlite_pragmas`. `engine_args` go to
    create_engine as they are (serve's JSON serialiser). Another scheme is StoreUnavailable naming `setting`.
    """
    scheme = scheme_of(url)
    if scheme == "postgresql":
        connect_args = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
        return create_engine(
            driver_url(url),
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_recycle=pool_recycle,
            connect_args=connect_args,
            **engine_args,
        )
    if scheme != "sqlite":
        raise StoreUnavailable(
            f"unsupported {setting} scheme {scheme!r}; use postgresql+psycopg2://... or sqlite:///..."
        )
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **engine_args)
    pragmas = tuple(sqlite_pragmas)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in pragmas:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    return engine


def get_engine(url: str) -> Engine:
    """The job store's engine for `url` (one per URL, made on first use)."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = new_engine(url)
        return engine


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _checked.clear()


@contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session that commits on success and rolls back on error; database errors -> StoreUnavailable."""
    url = settings.database_url or ""
    engine = get_engine(url)
    _ensure_schema(engine, url)
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except DBAPIError as exc:
        _rollback_quietly(session)
        if isinstance(exc, (OperationalError, InterfaceError)) or exc.connection_invalidated:
            raise StoreUnavailable(f"job store unavailable ({masked_url(url)}): {exc.orig or exc}") from exc
        raise
    except BaseException:
        _rollback_quietly(session)
        raise
    finally:
        session.close()


def _rollback_quietly(session: Session) -> None:
    try:
        session.rollback()
    except Exception:
        log.debug("rollback failed", exc_info=True)


def _ensure_schema(engine: Engine, url: str) -> None:
    """SQLite (embedded) is migrated on first use; PostgreSQL must be migrated with `jobrunner migrate`."""
    if url in _checked:
        return
    try:
        if url.startswith("sqlite"):
            migrate_url(url)
        elif not inspect(engine).has_table("jobs"):
            raise StoreNotMigrated(
                f"the job store at {masked_url(url)} has no tables: run `jobrunner migrate`"
            )
        else:
            try:
                with engine.connect() as conn:
                    current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except ProgrammingError:  # tables made by hand, without Alembic's version table
                current = None
            if current != head_revision():
                raise StoreNotMigrated(
                    f"the job store at {masked_url(url)} is at schema revision {current}; this "
                    f"version of jobrunner needs {head_revision()}: run `jobrunner migrate`"
                )
    except OperationalError as exc:
        raise StoreUnavailable(f"job store unavailable ({masked_url(url)}): {exc.orig or exc}") from exc
    _checked.add(url)


def _alembic_config() -> Any:
    from alembic.config import Config

    here = Path(__file__).resolve().parent
    cfg = Config(str(here / "alembic.ini"))
    cfg.set_main_option("script_location", str(here / "migrations"))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest schema revision this version of jobrunner needs."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or ""


def migrate_url(url: str) -> str:
    """Create or upgrade the schema to the newest revision; returns that revision."""
    from alembic import command

    cfg = _alembic_config()
    engine = get_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head_revision()


def migrate(settings: Settings) -> str:
    try:
        head = migrate_url(settings.database_url or "")
    except OperationalError as exc:
        raise StoreUnavailable(
            f"job store unavailable ({masked_url(settings.database_url or '')}): {exc.orig or exc}"
        ) from exc
    _checked.add(settings.database_url or "")
    return head


def masked_url(url: str) -> str:
    """The URL with its password replaced by *** (SQLAlchemy's rendering), for messages and logs. Also for
    broker URLs (amqp://user:pass@host/vhost): SQLAlchemy parses any scheme://user:pass@host/path."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not URL-shaped: drop everything before an @ rather than guess
        return "***@" + url.rsplit("@", 1)[1] if "@" in url else url
