"""Alembic, driven programmatically: no alembic.ini, scripts found next to this module."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from imedge.store.ports import StoreError
from imedge.store.sql.engine import writer

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises concurrent upgrades of one PostgreSQL database (two servers starting at once).
_PG_MIGRATION_LOCK = 0x1DED6E


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _upgrade(connection: Connection) -> list[str]:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    cfg = alembic_config(connection)
    applied: list[str] = []
    cfg.attributes["applied"] = applied
    command.upgrade(cfg, "head")
    return applied


async def upgrade(engine: AsyncEngine) -> list[str]:
    """Apply pending migrations in one transaction; return the revisions applied, in order."""
    async with writer(engine).begin() as conn:
        return await conn.run_sync(_upgrade)


async def current(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


async def require_head(engine: AsyncEngine) -> None:
    """Raise `StoreError` unless the database schema is at the newest revision."""
    found, wanted = await current(engine), head_revision()
    if found != wanted:
        raise StoreError(
            f"database schema is at revision {found or 'none (empty database)'}, "
            f"this version needs {wanted}: run `imedge db upgrade`"
        )
