"""Store tests run on SQLite (in tmp_path) and on PostgreSQL (a fresh database per test).

PostgreSQL: IMEDGE_TEST_POSTGRES_URL, default postgresql+asyncpg://postgres@127.0.0.1:5432/test
(the database to connect to for CREATE/DROP DATABASE). Unreachable means skip, or fail
when CI=true.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from imedge.store.sql import SqlStore, open_store

ADMIN_URL = os.environ.get(
    "IMEDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _admin_connection() -> asyncpg.Connection:
    try:
        return await asyncpg.connect(_asyncpg_dsn(ADMIN_URL), timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        reason = f"PostgreSQL at {ADMIN_URL} is unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
        pytest.skip(reason)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    admin = await _admin_connection()
    name = f"imedge_test_{uuid.uuid4().hex[:16]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'imedge.db'}"


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each engine."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    opened = await open_store(db_url)
    try:
        yield opened
    finally:
        await opened.close()
