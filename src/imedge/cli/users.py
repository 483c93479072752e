"""`imedge user …`: create, list, re-key and delete accounts through AccountService."""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, TypeVar

import typer
from rich.table import Table

from imedge.cli.common import ConfigOption, configured, fail, run, say, stdout
from imedge.config import Config
from imedge.domain.jid import Jid, JidMalformed, prep_domain
from imedge.services.accounts import AccountError, AccountService
from imedge.store.ports import Account, AlreadyExists, StoreError
from imedge.store.sql import open_store

T = TypeVar("T")

users = typer.Typer(
    name="user",
    help="Manage user accounts: add, list, passwd, delete.",
    no_args_is_help=True,
)

JidArgument = Annotated[str, typer.Argument(metavar="JID", help="The account, as user@domain.")]
PasswordOption = Annotated[
    str | None,
    typer.Option(
        "--password",
        "-p",
        help="The password (visible to other local users in the process list: "
        "prefer the prompt or --password-stdin).",
        show_default=False,
    ),
]
PasswordStdinOption = Annotated[
    bool,
    typer.Option("--password-stdin", help="Read the password from the first line of stdin."),
]


@asynccontextmanager
async def account_service(config: Config) -> AsyncIterator[AccountService]:
    store = await open_store(config.database.url)
    try:
        yield AccountService(
            store.accounts, frozenset(config.local_domains), config.accounts.scram_iterations
        )
    finally:
        await store.close()


def password_reader(given: str | None, from_stdin: bool) -> Callable[[], str]:
    """How to get the password: the option, stdin, or a hidden prompt typed twice. Called
    only once the account has been checked, so nobody types a password in vain."""
    if given is not None and from_stdin:
        fail("give --password or --password-stdin, not both")

    def read() -> str:
        if given is not None:
            return given
        if from_stdin:
            return sys.stdin.readline().rstrip("\r\n")
        return str(
            typer.prompt("Password", hide_input=True, confirmation_prompt="Repeat the password")
        )

    return read


def _run(config: Config, work: Callable[[AccountService], Awaitable[T]]) -> T:
    """Open the store, do `work` with the account service, close; errors become one line."""

    async def go() -> T:
        async with account_service(config) as service:
            return await work(service)

    try:
        return run(go())
    except AccountError as exc:
        fail(str(exc))
    except StoreError as exc:
        fail(f"cannot use the database: {exc}")


@users.command("add")
def add(
    ctx: typer.Context,
    jid: JidArgument,
    password: PasswordOption = None,
    password_stdin: PasswordStdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Create an account. Asks for the password twice unless given."""
    read_password = password_reader(password, password_stdin)

    async def create(service: AccountService) -> Jid:
        address = service.parse(jid)
        if await service.accounts.get(address) is not None:
            raise AccountError(f"account {address} already exists")
        secret = read_password()
        try:
            return await service.create(jid, secret)
        except AlreadyExists:
            raise AccountError(f"account {address} already exists") from None

    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        created = _run(cfg, create)
        say(f"created account {created}")


@users.command("list")
def list_(
    ctx: typer.Context,
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain", "-d", help="Only the accounts of this domain.", show_default=False
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """List the accounts, oldest first."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        only = None
        if domain is not None:
            try:
                only = prep_domain(domain)
            except JidMalformed as exc:
                fail(f"'{domain}' is not a valid domain: {exc}")
            if only not in cfg.local_domains:
                served = ", ".join(cfg.local_domains)
                fail(f"this server does not serve '{only}' (it serves {served})")

        async def fetch(service: AccountService) -> list[Account]:
            return await service.list(only)

        accounts = _run(cfg, fetch)
        if not accounts:
            say(f"no accounts{f' in {only}' if only else ''}")
            return
        say_table(accounts)


def _created(account: Account) -> str:
    when = datetime.datetime.fromtimestamp(account.created_at).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S %z")


def say_table(accounts: list[Account]) -> None:
    table = Table("JID", "created")
    any_disabled = any(a.disabled for a in accounts)
    if any_disabled:
        table.add_column("status")
    for account in sorted(accounts, key=lambda a: (a.created_at, str(a.jid))):
        row = [str(account.jid), _created(account)]
        if any_disabled:
            row.append("disabled" if account.disabled else "active")
        table.add_row(*row)
    stdout().print(table)
    say(f"{len(accounts)} account{'s' if len(accounts) != 1 else ''}")


@users.command("passwd")
def passwd(
    ctx: typer.Context,
    jid: JidArgument,
    password: PasswordOption = None,
    password_stdin: PasswordStdinOption = False,
    config: ConfigOption = None,
) -> None:
    """Set a new password for an account. Asks for it twice unless given."""
    read_password = password_reader(password, password_stdin)

    async def change(service: AccountService) -> Jid:
        address = service.parse(jid)
        if await service.accounts.get(address) is None:
            raise AccountError(f"no account {address}")
        return await service.set_password(jid, read_password())

    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        changed = _run(cfg, change)
        say(f"changed the password of {changed}")


@users.command("delete")
def delete(
    ctx: typer.Context,
    jid: JidArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete an account with its roster, offline messages and block list."""

    async def remove(service: AccountService) -> Jid | None:
        address = service.parse(jid)
        if await service.accounts.get(address) is None:
            raise AccountError(f"no account {address}")
        prompt = f"Delete {address} with its roster, offline messages and block list?"
        if not yes and not typer.confirm(prompt, default=False):
            return None
        return await service.delete(jid)

    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        deleted = _run(cfg, remove)
        if deleted is None:
            fail("not deleted")
        say(f"deleted account {deleted}")
