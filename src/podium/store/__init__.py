"""The database: engine set-up, migrations on start, and sessions.

SQLite (WAL mode) is the default; PostgreSQL is supported by URL for several
server nodes. The schema is owned by Alembic migrations in
``podium/migrations``, applied by :meth:`Store.migrate` at start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from podium.store.models import Base

__all__ = ["Base", "Store", "upsert"]


def upsert(dialect: Dialect, table: Any) -> Any:
    """An INSERT into ``table`` in ``dialect``'s own form (SQLite's or PostgreSQL's), which
    takes ``on_conflict_do_nothing`` and ``on_conflict_do_update``."""
    return (sqlite_insert if dialect.name == "sqlite" else postgresql_insert)(table)


def _private_file(path: Path) -> None:
    """Create the SQLite file (and its folder) readable by the server's user alone; SQLite
    gives its -wal and -shm files the database file's mode."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    path.chmod(0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()

_MIGRATION_LOCK = 0x706F6469756D  # "podium": the advisory lock key migrations hold on PostgreSQL


class StoreUnavailable(Exception):
    """The database cannot be reached (not running, a wrong address, a file that cannot
    be opened); the message says which and what to check."""


class Store:
    """Owns the engine and hands out sessions; one per server."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                _private_file(Path(path))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def migrate(self) -> None:
        """Bring the schema up to the newest migrations (every head: features add their
        own revisions off a common parent)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", "podium:migrations")
        try:
            self.engine.connect().close()  # the pool keeps the connection for the migration
        except OperationalError as exc:
            where = make_url(self.url).render_as_string(hide_password=True)
            reason = str(exc.orig or exc).strip().splitlines()[0]
            raise StoreUnavailable(
                f"cannot reach the database {where}: {reason}. Check that it runs and takes connections "
                "from here, or point the setting database_url (PODIUM_DATABASE_URL) elsewhere") from exc
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Several nodes may start at once: one migrates, the others wait, then find
                # nothing to do. Released when this transaction ends.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")

    def new_session(self) -> Session:
        """A session the caller commits (or not) and closes itself."""
        return self._sessions()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
