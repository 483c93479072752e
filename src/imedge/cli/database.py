"""`imedge db …`: bring the database schema to this version's newest revision, or show it."""

from __future__ import annotations

import logging

import typer

from imedge.cli.common import ConfigOption, ExitCode, configured, fail, run, say, stderr
from imedge.config import Config, describe
from imedge.store.ports import StoreError
from imedge.store.sql import current_revision, head_revision, upgrade_database

db = typer.Typer(
    name="db",
    help="Manage the database schema: upgrade, status.",
    no_args_is_help=True,
)


def _where(config: Config) -> str:
    """The database URL as the banner shows it (password redacted)."""
    return dict(describe(config))["database"]


@db.command("upgrade")
def upgrade(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Apply the pending schema migrations (the server also does this when it starts)."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        try:
            with stderr().status(f"Upgrading the database schema at {_where(cfg)} …"):
                applied = run(upgrade_database(cfg.database.url))
        except StoreError as exc:
            fail(f"cannot upgrade the database: {exc}")
        if not applied:
            say(f"the database is already up to date (revision {head_revision()})")
            return
        for revision in applied:
            say(f"applied revision {revision}")
        say(f"the database is now at revision {applied[-1]}")


@db.command("status")
def status(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Show the database's schema revision and this version's newest one.

    Exit status 0 when they are the same, 1 when `imedge db upgrade` is needed.
    """
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        try:
            current = run(current_revision(cfg.database.url))
        except StoreError as exc:
            fail(f"cannot read the database: {exc}")
        head = head_revision()
        say(f"database:         {_where(cfg)}")
        say(f"current revision: {current or 'none (empty database)'}")
        say(f"newest revision:  {head}")
        if current == head:
            say("up to date")
            return
        say("upgrade needed: run `imedge db upgrade` (the server also upgrades when it starts)")
        raise typer.Exit(int(ExitCode.FAILURE))
