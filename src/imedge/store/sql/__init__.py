"""The SQL storage adapter: SQLAlchemy Core over aiosqlite or asyncpg, Alembic migrations.

Only `imedge.app` and the CLI import this package; everything else uses `imedge.store.ports`.
"""

from __future__ import annotations

from imedge.store.ports import StoreError
from imedge.store.sql import migrate
from imedge.store.sql.database import Database
from imedge.store.sql.engine import create_engine, parse_url
from imedge.store.sql.errors import translated
from imedge.store.sql.secrets import SecretBox, load_or_create_key
from imedge.store.sql.store import SqlStore

__all__ = ["SqlStore", "current_revision", "open_store", "parse_url", "upgrade_database"]


async def open_store(
    url: str, *, upgrade: bool = True, secret_key: bytes | None = None
) -> SqlStore:
    """Connect, bring the schema to the newest revision (or check it is there), and return
    the store. Raise `StoreError` if the database cannot be reached or is not usable.

    `secret_key` encrypts secrets at rest (`secrets.load_or_create_key(<data_dir>/secret.key)`);
    without it, a peer server with a bind password can be neither stored nor read."""
    if secret_key is not None:
        SecretBox(secret_key)  # a key of the wrong size fails here, before connecting
    engine = create_engine(url)
    try:
        async with translated():
            if upgrade:
                await migrate.upgrade(engine)
            else:
                await migrate.require_head(engine)
    except BaseException:
        await engine.dispose()
        raise
    return SqlStore(Database(engine), secret_key=secret_key)


async def upgrade_database(url: str) -> list[str]:
    """Apply pending migrations; return the revision ids applied, oldest first."""
    engine = create_engine(url)
    try:
        async with translated():
            return await migrate.upgrade(engine)
    finally:
        await engine.dispose()


async def current_revision(url: str) -> str | None:
    """The database's schema revision, or None for an empty database."""
    engine = create_engine(url)
    try:
        async with translated():
            return await migrate.current(engine)
    finally:
        await engine.dispose()


def head_revision() -> str | None:
    """The newest revision this version of IM Edge ships."""
    return migrate.head_revision()


__all__ += ["StoreError", "head_revision", "load_or_create_key"]
