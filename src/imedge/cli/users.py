"""`imedge user …`: create, list, re-key and delete accounts through AccountService; and
each user's federation settings (FEDERATION.md §Per user) through the running server."""

from __future__ import annotations

import datetime
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.table import Table

from imedge.cli.api_client import (
    API,
    JsonOption,
    Switch,
    api_call,
    listed,
    on_off,
    quoted,
    say_changes,
    say_json,
)
from imedge.cli.common import ConfigOption, configured, fail, run, say, say_settings, stdout
from imedge.config import Config
from imedge.domain.jid import Jid, JidMalformed, prep_domain
from imedge.policy import VerifiedSubscriptions, normalize_allow_entry
from imedge.services.accounts import AccountError, AccountService
from imedge.store.ports import Account, AlreadyExists, StoreError
from imedge.store.sql import open_store

T = TypeVar("T")

users = typer.Typer(
    name="user",
    help="Manage user accounts: add, list, passwd, delete; and their federation "
    "settings on the running server: set, show.",
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


# FEDERATION.md §Per user, as `user show` and `user set` print it (UserFederationOut).
FEDERATION_FIELDS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "federation": ("federation", on_off),
    "public_im": ("public IM", on_off),
    "verified_subscriptions": ("verified subscriptions", str),
    "block_non_allowed_im": ("block non-allowed IM", on_off),
    "allow_list": ("allow list", lambda v: listed(v or [], "no explicit entries")),
}


def _federation_path(jid: str) -> str:
    if "/" in jid:
        fail(f"give the bare address of the account (user@domain), not {jid!r}")
    return f"{API}/users/{quoted(jid.strip())}/federation"


def _canonical_entry(entry: str) -> str:
    """As the policy compares it; an invalid entry is left for the server to name."""
    try:
        return normalize_allow_entry(entry)
    except ValueError:
        return entry


def _same_entry(a: str, b: str) -> bool:
    return _canonical_entry(a).strip().lower() == _canonical_entry(b).strip().lower()


@users.command("set")
def set_federation(
    ctx: typer.Context,
    jid: JidArgument,
    *,
    federation: Annotated[
        Switch | None,
        typer.Option(
            "--federation", help="May the user talk with other domains at all.", show_default=False
        ),
    ] = None,
    public_im: Annotated[
        Switch | None,
        typer.Option(
            "--public-im",
            help="May the user talk with public IM providers' users (uses one of the "
            "licences of `imedge federation set --licences`).",
            show_default=False,
        ),
    ] = None,
    verified_subscriptions: Annotated[
        VerifiedSubscriptions | None,
        typer.Option(
            "--verified-subscriptions",
            help="A verified subscription request from someone not on the allow list: "
            "allow (the server approves it), block (the server refuses it) or prompt "
            "(the user decides).",
            show_default=False,
        ),
    ] = None,
    block_non_allowed_im: Annotated[
        Switch | None,
        typer.Option(
            "--block-non-allowed-im",
            help="Refuse messages from outside the allow list even when verified.",
            show_default=False,
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            metavar="JID_OR_DOMAIN",
            help="Add to the allow list (besides the roster): a bare address, a domain or "
            "*.domain. Repeatable.",
            show_default=False,
        ),
    ] = None,
    disallow: Annotated[
        list[str] | None,
        typer.Option(
            "--disallow",
            metavar="JID_OR_DOMAIN",
            help="Take an entry off the allow list. Repeatable.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Change a user's federation settings on the running server; at once, and the others
    stay as they are."""
    changes: dict[str, Any] = {}
    if federation is not None:
        changes["federation"] = federation.enabled
    if public_im is not None:
        changes["public_im"] = public_im.enabled
    if verified_subscriptions is not None:
        changes["verified_subscriptions"] = str(verified_subscriptions)
    if block_non_allowed_im is not None:
        changes["block_non_allowed_im"] = block_non_allowed_im.enabled
    path = _federation_path(jid)
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = api_call(cfg, "GET", path, refused=f"cannot read the settings of {jid}")
        if allow or disallow:
            entries = list(current["allow_list"])
            for entry in allow or []:
                if not any(_same_entry(entry, e) for e in entries):
                    entries.append(_canonical_entry(entry))
            for entry in disallow or []:
                if not any(_same_entry(entry, e) for e in entries):
                    fail(f"{entry} is not on the allow list of {jid} ({listed(entries)})")
                entries = [e for e in entries if not _same_entry(entry, e)]
            changes["allow_list"] = entries
        if not changes:
            fail("nothing to change: give at least one option (see --help)")
        saved = api_call(cfg, "PATCH", path, changes, refused=f"{jid} not changed")
    say(f"{jid}:")
    if not say_changes(current, saved, FEDERATION_FIELDS):
        say("  nothing changed")


@users.command("show")
def show(
    ctx: typer.Context, jid: JidArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """A user's federation settings, from the running server."""
    path = _federation_path(jid)
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        settings = api_call(cfg, "GET", path, refused=f"cannot read the settings of {jid}")
    if as_json:
        say_json(settings)
        return
    say(jid)
    say_settings(
        [(label, fmt(settings.get(key))) for key, (label, fmt) in FEDERATION_FIELDS.items()]
    )
    say("  (the allow list also holds every roster contact; the block list is the user's own)")
