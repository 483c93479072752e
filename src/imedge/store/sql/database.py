"""Transactions with error translation, shared by the stores of this package."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

from imedge.store.sql.engine import writer
from imedge.store.sql.errors import translated


class Database:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writer = writer(engine)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with translated(), self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block exits normally."""
        async with translated(), self._writer.begin() as conn:
            yield conn

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def upsert(
    conn: AsyncConnection | Connection,
    table: Table,
    values: Mapping[str, Any],
    keys: Iterable[str],
    update: Mapping[str, Any] | None = None,
) -> Executable:
    """INSERT .. ON CONFLICT (keys) DO UPDATE (or DO NOTHING when `update` is empty).

    `update` defaults to every non-key value of `values`.
    """
    keys = list(keys)
    if update is None:
        update = {k: v for k, v in values.items() if k not in keys}
    if conn.dialect.name == "postgresql":
        pg = postgresql.insert(table).values(**values)
        if not update:
            return pg.on_conflict_do_nothing(index_elements=keys)
        return pg.on_conflict_do_update(index_elements=keys, set_=dict(update))
    lite = sqlite.insert(table).values(**values)
    if not update:
        return lite.on_conflict_do_nothing(index_elements=keys)
    return lite.on_conflict_do_update(index_elements=keys, set_=dict(update))
