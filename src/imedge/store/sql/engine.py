"""The async engine: driver selection from the URL, SQLite pragmas and transaction control."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from imedge.store.ports import StoreError

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
BUSY_TIMEOUT_MS = 10_000
CONNECT_TIMEOUT_S = 10
# The execution option that makes a SQLite transaction take the write lock at BEGIN, so
# that two writers wait for each other (busy_timeout) instead of failing on lock upgrade.
WRITE_OPTION = "imedge_write"


def parse_url(url: str) -> URL:
    """`url` with its async driver; plain `sqlite://` and `postgresql://` are accepted."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"invalid database URL {url!r}: {exc}") from None
    driver = _ASYNC_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StoreError(
            f"unsupported database URL scheme {parsed.drivername!r}: use sqlite:///path "
            "or postgresql://user@host/db"
        )
    return parsed.set(drivername=driver)


def _is_sqlite_file(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")


def _make_parent_directory(url: URL) -> None:
    assert url.database is not None
    if url.database.startswith("file:"):  # a URI filename; leave it to SQLite
        return
    try:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the directory for {url.database}: {exc}") from None


def _on_sqlite_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # SQLAlchemy emits BEGIN itself (see _on_sqlite_begin); the driver must not.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: each commit fsyncs the WAL, so an acknowledged write survives power loss.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def create_engine(url: str) -> AsyncEngine:
    """An engine for `url`; no connection is made yet."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        if _is_sqlite_file(parsed):
            _make_parent_directory(parsed)
        engine = create_async_engine(parsed)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return engine
    return create_async_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={"timeout": CONNECT_TIMEOUT_S},
    )


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (and pool), for transactions that write."""
    return engine.execution_options(**{WRITE_OPTION: True})
