"""FEDERATION.md §Global settings: `imedge federation …` on the running server.

The federation switch, open federation and its abuse limits, blocked domains and public IM
licences, changed through the running server's admin API so that they apply at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from imedge.cli.api_client import (
    API,
    JsonOption,
    Switch,
    api_call,
    listed,
    on_off,
    plural,
    say_changes,
    say_json,
    when,
)
from imedge.cli.common import ConfigOption, configured, fail, say, say_settings, stdout
from imedge.policy import PatternInvalid, normalize_domain_pattern

federation = typer.Typer(
    name="federation",
    help="Federation as a whole: switch it on or off, open federation, blocked domains, "
    "public IM licences. Changes apply to live traffic at once.",
    no_args_is_help=True,
)

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

SETTINGS = f"{API}/federation/settings"

# SettingsOut fields as `set` prints their changes.
FIELDS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "federation": ("federation", on_off),
    "open_federation": ("open federation", on_off),
    "open_federation_max_contacts": ("contacts per discovered domain", str),
    "open_federation_stanza_rate": ("stanzas per second per discovered domain", str),
    "blocked_domains": ("blocked domains", listed),
    "public_im_licences": ("public IM licences", str),
}


@federation.command("enable")
def enable(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Switch federation on: server-to-server traffic flows again, as the partner table
    allows."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        if api_call(cfg, "GET", SETTINGS)["federation"]:
            say("federation is already on")
            return
        api_call(cfg, "POST", f"{API}/federation/enable")
    say("federation is on: partners may connect again, as the partner table allows")


@federation.command("disable")
def disable(ctx: typer.Context, yes: YesOption = False, config: ConfigOption = None) -> None:
    """Switch federation off: no server-to-server traffic at all, in or out; every live
    stream closes at once. The partner table and all settings are kept."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        status = api_call(cfg, "GET", f"{API}/federation/status")
        if not status["federation"]:
            say("federation is already off")
            return
        live = int(status.get("live_streams") or 0)
        if not yes:
            prompt = (
                "Disable federation? This cuts all federation: no partner can reach this "
                f"server's users nor be reached, and it closes {plural(live, 'live stream')}."
            )
            if not typer.confirm(prompt, default=False):
                fail("federation stays on")
        api_call(cfg, "POST", f"{API}/federation/disable")
    say(
        f"federation is off: closed {plural(live, 'live stream')}; no server-to-server "
        "traffic in or out until `imedge federation enable`"
    )


@federation.command("status")
def status(ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Federation at a glance: the switches, the partner table's size, live streams and
    the outbound links with their last failure."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        state = api_call(cfg, "GET", f"{API}/federation/status")
        settings = api_call(cfg, "GET", SETTINGS)
    if as_json:
        say_json({**state, "settings": settings})
        return
    open_fed = on_off(settings["open_federation"])
    if settings["open_federation"]:
        open_fed += (
            f" (at most {settings['open_federation_max_contacts']} contacts and "
            f"{settings['open_federation_stanza_rate']} stanzas/s per discovered domain)"
        )
    say_settings(
        [
            ("federation", on_off(state["federation"])),
            ("open federation", open_fed),
            ("blocked domains", listed(settings["blocked_domains"])),
            (
                "public IM",
                f"{settings['public_im_in_use']} of "
                f"{plural(settings['public_im_licences'], 'licence')} in use",
            ),
            (
                "partners",
                f"{state['partners']} ({state['allowed']} allowed, {state['blocked']} blocked)",
            ),
            ("live streams", str(state["live_streams"])),
        ]
    )
    links = state.get("links") or []
    if links:
        table = Table("remote", "state", "queued", "last success", "last failure")
        for link in sorted(links, key=lambda x: str(x.get("remote"))):
            failure = when(link.get("last_failure"))
            if link.get("last_failure") and link.get("last_error"):
                failure += f": {link['last_error']}"
            cells = (
                str(link.get("remote")),
                str(link.get("state")),
                str(link.get("queued", 0)),
                when(link.get("last_success")),
                failure,
            )
            table.add_row(*(Text(c) for c in cells))
        stdout().print(table)


def _canonical(text: str) -> str:
    try:
        return normalize_domain_pattern(text)
    except PatternInvalid:
        return text.strip().lower()


@federation.command("set")
def set_(
    ctx: typer.Context,
    *,
    open_: Annotated[
        Switch | None,
        typer.Option(
            "--open",
            help="Open federation: accept domains not in the partner table, as partners "
            "with filter contacts_only.",
            show_default=False,
        ),
    ] = None,
    max_contacts: Annotated[
        int | None,
        typer.Option(
            "--max-contacts",
            metavar="N",
            help="Open federation: how many contacts local users may hold at one "
            "discovered domain.",
            show_default=False,
        ),
    ] = None,
    stanza_rate: Annotated[
        float | None,
        typer.Option(
            "--stanza-rate",
            metavar="R",
            help="Open federation: stanzas per second one discovered domain may send.",
            show_default=False,
        ),
    ] = None,
    block_domain: Annotated[
        list[str] | None,
        typer.Option(
            "--blocked-domain",
            metavar="DOMAIN",
            help="Refuse this domain (or *.domain), even under open federation; its live "
            "streams close. Repeatable.",
            show_default=False,
        ),
    ] = None,
    unblock_domain: Annotated[
        list[str] | None,
        typer.Option(
            "--unblock-domain",
            metavar="DOMAIN",
            help="Take a domain off the blocked list. Repeatable.",
            show_default=False,
        ),
    ] = None,
    licences: Annotated[
        int | None,
        typer.Option(
            "--licences",
            metavar="N",
            help="How many users may have public IM rights.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Change global federation settings; those not given stay as they are."""
    changes: dict[str, Any] = {}
    if open_ is not None:
        changes["open_federation"] = open_.enabled
    if max_contacts is not None:
        changes["open_federation_max_contacts"] = max_contacts
    if stanza_rate is not None:
        changes["open_federation_stanza_rate"] = stanza_rate
    if licences is not None:
        changes["public_im_licences"] = licences
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = api_call(cfg, "GET", SETTINGS)
        if block_domain or unblock_domain:
            changes["blocked_domains"] = _blocked_domains(
                current["blocked_domains"], block_domain or [], unblock_domain or []
            )
        if not changes:
            fail("nothing to change: give at least one option (see --help)")
        saved = api_call(cfg, "PATCH", SETTINGS, changes, refused="settings not changed")
    say("federation settings:")
    if not say_changes(current, saved, FIELDS):
        say("  nothing changed")


def _blocked_domains(current: list[str], add: list[str], remove: list[str]) -> list[str]:
    new = list(current)
    for domain in add:
        if _canonical(domain) not in map(_canonical, new):
            new.append(domain)
    for domain in remove:
        if _canonical(domain) not in map(_canonical, new):
            fail(f"{domain} is not a blocked domain (blocked: {listed(current)})")
        new = [d for d in new if _canonical(d) != _canonical(domain)]
    return new
