"""Turn driver and SQLAlchemy exceptions into `StoreError`s an operator can act on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import exc as sa_exc

from imedge.store.ports import StoreError

# PostgreSQL SQLSTATE classes and codes (PostgreSQL manual, appendix A).
_PG_UNREACHABLE_CLASSES = ("08", "57")  # connection exception, operator intervention
_PG_DISK_FULL = "53100"
_PG_AUTH_CLASS = "28"
_PG_NO_DATABASE = "3D000"


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return None


def _detail(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    inner = orig if isinstance(orig, BaseException) else exc
    text = str(inner).strip().splitlines()
    return text[0] if text else type(inner).__name__


def translate(exc: BaseException) -> StoreError:
    """The `StoreError` to raise for a failure of the database or of the way to it."""
    detail = _detail(exc)
    lowered = detail.lower()
    code = _sqlstate(exc)
    if isinstance(exc, OSError | TimeoutError) or (
        isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
    ):
        return StoreError(f"database is unreachable: {detail or 'connection failed'}")
    if code == _PG_DISK_FULL or "database or disk is full" in lowered:
        return StoreError(f"disk full: {detail}")
    if code is not None and code[:2] in _PG_UNREACHABLE_CLASSES:
        return StoreError(f"database is unreachable: {detail}")
    if code is not None and code[:2] == _PG_AUTH_CLASS:
        return StoreError(f"database refused the login: {detail}")
    if code == _PG_NO_DATABASE:
        return StoreError(f"database does not exist: {detail}")
    if "unable to open database file" in lowered:
        return StoreError(f"database is unreachable: cannot open the SQLite file ({detail})")
    if "database is locked" in lowered:
        return StoreError(f"database is busy (locked by another writer): {detail}")
    if "disk i/o error" in lowered:
        return StoreError(f"disk I/O error: {detail}")
    if "no such table" in lowered or (code == "42P01"):
        return StoreError(f"database schema is missing; run `imedge db upgrade`: {detail}")
    if isinstance(exc, sa_exc.IntegrityError):
        return StoreError(f"database constraint violated: {detail}")
    return StoreError(f"database error: {detail}")


def _is_database_failure(exc: BaseException) -> bool:
    if isinstance(exc, StoreError):
        return False
    if isinstance(exc, sa_exc.SQLAlchemyError | OSError | TimeoutError):
        return True
    # Drivers sometimes raise their own exceptions unwrapped (notably while connecting).
    module = type(exc).__module__
    return module.startswith(("asyncpg", "aiosqlite", "sqlite3"))


@asynccontextmanager
async def translated() -> AsyncIterator[None]:
    """Re-raise database failures inside the block as `StoreError`."""
    try:
        yield
    except Exception as exc:
        if _is_database_failure(exc):
            raise translate(exc) from exc
        raise
