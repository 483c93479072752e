"""Alembic environment: always run with a connection handed over by `imedge.store.sql.migrate`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy.engine import Connection

from imedge.store.sql.schema import metadata


def run_migrations(connection: Connection) -> None:
    applied: list[str] | None = context.config.attributes.get("applied")

    def record(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        if applied is not None and step.is_upgrade and step.up_revision_id is not None:
            applied.append(step.up_revision_id)

    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        on_version_apply=record,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("run migrations through imedge.store.sql.migrate (no connection given)")
run_migrations(_connection)
