"""FEDERATION.md §The partner table: `imedge partner …` on the running server.

Every change goes through the running server's admin API (`imedge.cli.api_client`), so
it applies to live traffic at once: blocking or removing a partner closes its streams.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from imedge.cli.api_client import (
    API,
    JsonOption,
    RenameOption,
    ReplaceDomainsOption,
    api_call,
    duration,
    listed,
    plural,
    quoted,
    say_changes,
    say_json,
    when,
    yes_no,
)
from imedge.cli.common import ConfigOption, configured, fail, say, say_settings, stdout
from imedge.cli.s2s import say_diagnosis
from imedge.config import Config
from imedge.policy import Filter, Partner, PatternInvalid, Requirement, match_partner
from imedge.policy import normalize_domain_pattern as canonical_pattern

partners = typer.Typer(
    name="partner",
    help="The federation partner table: which XMPP domains may federate with this "
    "server, and how. Changes apply to live traffic at once.",
    no_args_is_help=True,
)

NameArgument = Annotated[
    str, typer.Argument(metavar="NAME", help="The partner's name (quote it if it has spaces).")
]
DomainsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--domain",
        "-d",
        metavar="DOMAIN",
        help="An XMPP domain of the partner; *.example.org covers every subdomain (but not "
        "example.org itself). Repeat for more.",
        show_default=False,
    ),
]
EdgeOption = Annotated[
    str | None,
    typer.Option(
        "--edge",
        metavar="HOST[:PORT]",
        help="Its edge address: where our connections go instead of the DNS SRV records of "
        "its domains. 'none' clears it.",
        show_default=False,
    ),
]
PublicOption = Annotated[
    bool | None,
    typer.Option(
        "--public/--not-public",
        help="A public IM provider: only users with public IM rights may talk to its users.",
        show_default=False,
    ),
]
FilterOption = Annotated[
    Filter | None,
    typer.Option(
        "--filter",
        help="How its stanzas are marked: contacts_only (all unverified: only users' allow "
        "lists get through), verified (verified when its certificate validated; the "
        "default), all (all verified: users' settings decide).",
        show_default=False,
    ),
]
TlsOption = Annotated[
    Requirement | None,
    typer.Option(
        "--tls",
        help="Whether its servers must use TLS (default: required).",
        show_default=False,
    ),
]
SaslOption = Annotated[
    Requirement | None,
    typer.Option(
        "--sasl-external",
        help="Whether its servers must authenticate with a certificate by SASL EXTERNAL "
        "(default: optional).",
        show_default=False,
    ),
]
DialbackOption = Annotated[
    bool | None,
    typer.Option(
        "--dialback/--no-dialback",
        help="Accept Server Dialback (XEP-0220), which proves a domain by DNS rather than "
        "by certificate (default: accepted).",
        show_default=False,
    ),
]
LimitOption = Annotated[
    str | None,
    typer.Option(
        "--connection-limit",
        metavar="N|none",
        help="At most N simultaneous server-to-server streams with it; 'none': no limit.",
        show_default=False,
    ),
]
CommentOption = Annotated[
    str | None, typer.Option("--comment", help="A note for administrators.", show_default=False)
]
BlockedOption = Annotated[
    bool | None,
    typer.Option(
        "--blocked/--allowed",
        help="A blocked partner keeps its configuration, but no traffic passes.",
        show_default=False,
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]

# The PartnerOut fields as `show` and the change lines name and print them.
FIELDS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "name": ("name", str),
    "comment": ("comment", lambda v: v or "none"),
    "domains": ("domains", listed),
    "allowed": ("allowed", lambda v: "yes" if v else "no (blocked)"),
    "public": ("public IM provider", yes_no),
    "filter": ("filter", str),
    "tls": ("TLS", str),
    "sasl_external": ("SASL EXTERNAL", str),
    "dialback": ("dialback", lambda v: "accepted" if v else "refused"),
    "edge_address": ("edge address", lambda v: v or "none (DNS SRV records)"),
    "connection_limit": ("connection limit", lambda v: "none" if v is None else str(v)),
    "origin": ("origin", str),
}


def partner_path(ref: str | int, suffix: str = "") -> str:
    return f"{API}/partners/{quoted(str(ref))}{suffix}"


def _fields(
    *,
    comment: str | None,
    edge: str | None,
    public: bool | None,
    filter_: Filter | None,
    tls: Requirement | None,
    sasl_external: Requirement | None,
    dialback: bool | None,
    connection_limit: str | None,
    blocked: bool | None,
) -> dict[str, Any]:
    """The PartnerIn fields the options give; the server validates them all."""
    body: dict[str, Any] = {}
    if comment is not None:
        body["comment"] = comment
    if edge is not None:
        body["edge_address"] = None if edge.strip().lower() in ("", "none") else edge.strip()
    if public is not None:
        body["public"] = public
    if filter_ is not None:
        body["filter"] = str(filter_)
    if tls is not None:
        body["tls"] = str(tls)
    if sasl_external is not None:
        body["sasl_external"] = str(sasl_external)
    if dialback is not None:
        body["dialback"] = dialback
    if connection_limit is not None:
        text = connection_limit.strip().lower()
        if text in ("none", "unlimited"):
            body["connection_limit"] = None
        else:
            try:
                body["connection_limit"] = int(text)
            except ValueError:
                fail(f"--connection-limit: give a number or 'none', not {connection_limit!r}")
    if blocked is not None:
        body["allowed"] = not blocked
    return body


def _same_domain(a: str, b: str) -> bool:
    def canonical(text: str) -> str:
        try:
            return canonical_pattern(text)
        except PatternInvalid:
            return text.strip().lower()

    return canonical(a) == canonical(b)


def _live_streams(cfg: Config, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Live streams per partner name, each stream counted for the partner that covers it
    as the server's gate would choose (exact domain before wildcard)."""
    table = [
        Partner(name=p["name"], domains=tuple(p["domains"]), allowed=p["allowed"], id=p["id"])
        for p in rows
    ]
    counts = dict.fromkeys((p["name"] for p in rows), 0)
    for stream in api_call(cfg, "GET", f"{API}/s2s/streams"):
        partner = match_partner(stream["remote"], table) if stream.get("remote") else None
        if partner is not None:
            counts[partner.name] += 1
    return counts


def _live_count(cfg: Config, ref: str | int) -> int:
    status = api_call(cfg, "GET", partner_path(ref, "/status"))
    return len(status.get("streams") or [])


def _closed(n: int) -> str:
    return f"closed its {plural(n, 'live stream')}" if n else "it had no live streams"


@partners.command("add")
def add(
    ctx: typer.Context,
    name: NameArgument,
    *,
    domains: DomainsOption = None,
    edge: EdgeOption = None,
    public: PublicOption = None,
    filter_: FilterOption = None,
    tls: TlsOption = None,
    sasl_external: SaslOption = None,
    dialback: DialbackOption = None,
    connection_limit: LimitOption = None,
    comment: CommentOption = None,
    blocked: BlockedOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a partner: the XMPP domains of one organisation, and how to federate with them.

    Options not given take the defaults of FEDERATION.md: allowed, not public, filter
    verified, TLS required, SASL EXTERNAL optional, dialback accepted, no limit.
    """
    body = {
        "name": name,
        "domains": list(domains or []),
        **_fields(
            comment=comment,
            edge=edge,
            public=public,
            filter_=filter_,
            tls=tls,
            sasl_external=sasl_external,
            dialback=dialback,
            connection_limit=connection_limit,
            blocked=blocked,
        ),
    }
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        saved = api_call(cfg, "POST", f"{API}/partners", body, refused=f"partner {name} not added")
    say(f"added partner {saved['name']}")
    _say_partner(saved)


@partners.command("edit")
def edit(
    ctx: typer.Context,
    name: NameArgument,
    *,
    rename: RenameOption = None,
    domains: ReplaceDomainsOption = None,
    add_domain: Annotated[
        list[str] | None,
        typer.Option(
            "--add-domain", metavar="DOMAIN", help="Add a domain (repeatable).", show_default=False
        ),
    ] = None,
    remove_domain: Annotated[
        list[str] | None,
        typer.Option(
            "--remove-domain",
            metavar="DOMAIN",
            help="Remove a domain (repeatable); its live streams close.",
            show_default=False,
        ),
    ] = None,
    edge: EdgeOption = None,
    public: PublicOption = None,
    filter_: FilterOption = None,
    tls: TlsOption = None,
    sasl_external: SaslOption = None,
    dialback: DialbackOption = None,
    connection_limit: LimitOption = None,
    comment: CommentOption = None,
    blocked: BlockedOption = None,
    config: ConfigOption = None,
) -> None:
    """Change some settings of a partner; the others stay as they are."""
    changes = _fields(
        comment=comment,
        edge=edge,
        public=public,
        filter_=filter_,
        tls=tls,
        sasl_external=sasl_external,
        dialback=dialback,
        connection_limit=connection_limit,
        blocked=blocked,
    )
    if rename is not None:
        changes["name"] = rename
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = api_call(cfg, "GET", partner_path(name))
        if domains or add_domain or remove_domain:
            new = list(domains) if domains else list(current["domains"])
            for domain in add_domain or []:
                if not any(_same_domain(domain, d) for d in new):
                    new.append(domain)
            for domain in remove_domain or []:
                if not any(_same_domain(domain, d) for d in new):
                    fail(
                        f"partner {current['name']} does not list {domain} "
                        f"(it lists {listed(current['domains'])})"
                    )
                new = [d for d in new if not _same_domain(domain, d)]
            changes["domains"] = new
        if not changes:
            fail("nothing to change: give at least one option (see --help)")
        saved = api_call(
            cfg,
            "PATCH",
            partner_path(current["id"]),
            changes,
            refused=f"partner {current['name']} not changed",
        )
    say(f"partner {saved['name']}:")
    if not say_changes(current, saved, FIELDS):
        say("  nothing changed")


@partners.command("block")
def block(ctx: typer.Context, name: NameArgument, config: ConfigOption = None) -> None:
    """Block a partner: its live streams close at once and no traffic passes, but its
    configuration is kept, so `unblock` restores it exactly."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = api_call(cfg, "GET", partner_path(name))
        if not current["allowed"]:
            say(f"partner {current['name']} is already blocked")
            return
        live = _live_count(cfg, current["id"])
        saved = api_call(cfg, "POST", partner_path(current["id"], "/block"))
    say(
        f"blocked partner {saved['name']}: {_closed(live)}; its configuration is kept "
        f"(`imedge partner unblock {shlex.quote(saved['name'])}` restores it)"
    )


@partners.command("unblock")
def unblock(ctx: typer.Context, name: NameArgument, config: ConfigOption = None) -> None:
    """Allow a blocked partner again, with exactly the configuration it had."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = api_call(cfg, "GET", partner_path(name))
        if current["allowed"]:
            say(f"partner {current['name']} is already allowed")
            return
        saved = api_call(cfg, "POST", partner_path(current["id"], "/unblock"))
    say(f"unblocked partner {saved['name']}: {listed(saved['domains'])} may federate again")


@partners.command("remove")
def remove(
    ctx: typer.Context, name: NameArgument, yes: YesOption = False, config: ConfigOption = None
) -> None:
    """Delete a partner and its configuration; its live streams close at once.

    To stop its traffic but keep its settings, `block` it instead.
    """
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = api_call(cfg, "GET", partner_path(name))
        live = _live_count(cfg, current["id"])
        if not yes:
            streams = f"closes {plural(live, 'live stream')}" if live else "closes no live stream"
            prompt = (
                f"Remove partner {current['name']} ({listed(current['domains'])})? This "
                f"deletes its configuration and {streams}."
            )
            if not typer.confirm(prompt, default=False):
                fail("not removed")
        api_call(cfg, "DELETE", partner_path(current["id"]))
    say(f"removed partner {current['name']}: {_closed(live)}")


@partners.command("list")
def list_(ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The partner table, with each partner's live streams."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        rows: list[dict[str, Any]] = api_call(cfg, "GET", f"{API}/partners")
        live = _live_streams(cfg, rows)
    rows.sort(key=lambda p: (p["name"].casefold(), p["id"]))
    if as_json:
        say_json([{**p, "live_streams": live[p["name"]]} for p in rows])
        return
    if not rows:
        say("no partners: only open federation, if it is on, lets other domains in")
        return
    table = Table(
        "name",
        "domains",
        "allowed",
        "public",
        "filter",
        "tls",
        "sasl ext",
        "dialback",
        "edge",
        "origin",
        "live streams",
    )
    for p in rows:
        cells = (
            p["name"],
            ", ".join(p["domains"]),
            yes_no(p["allowed"]),
            yes_no(p["public"]),
            p["filter"],
            p["tls"],
            p["sasl_external"],
            yes_no(p["dialback"]),
            p["edge_address"] or "-",
            p["origin"],
            str(live[p["name"]]),
        )
        table.add_row(*(Text(c) for c in cells))  # not markup: names and "[::1]:5269"
    stdout().print(table)
    blocked = sum(not p["allowed"] for p in rows)
    say(f"{plural(len(rows), 'partner')}, {blocked} blocked")


@partners.command("show")
def show(
    ctx: typer.Context, name: NameArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Every setting of a partner, its live streams, its last successful and failed
    connection, and its decisions counted by verdict and reason."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        partner = api_call(cfg, "GET", partner_path(name))
        status = api_call(cfg, "GET", partner_path(partner["id"], "/status"))
    if as_json:
        say_json({"partner": partner, "status": status})
        return
    say(f"partner {partner['name']} (id {partner['id']})")
    _say_partner(partner)
    say("status")
    streams = status.get("streams") or []
    failure = when(status.get("last_failure"))
    if status.get("last_failure") and status.get("last_failure_reason"):
        failure += f": {status['last_failure_reason']}"
    decisions = status.get("decisions") or []
    say_settings(
        [
            ("live streams", str(len(streams))),
            ("last success", when(status.get("last_success"))),
            ("last failure", failure),
            ("decisions", str(sum(d["count"] for d in decisions)) if decisions else "none yet"),
        ]
    )
    if streams:
        table = Table("dir", "remote", "peer", "TLS", "auth", "certificate", "in", "out", "age")
        for s in streams:
            cells = (
                s.get("direction", "?"),
                s.get("remote") or "?",
                s.get("peer", "?"),
                s.get("tls_version") or "none",
                s.get("auth", "?"),
                s.get("certificate") or "-",
                str(s.get("stanzas_in", "")),
                str(s.get("stanzas_out", "")),
                duration(float(s.get("age_seconds", 0))),
            )
            table.add_row(*(Text(c) for c in cells))
        stdout().print(table)
    if decisions:
        table = Table("verdict", "reason", "count")
        for d in decisions:
            table.add_row(Text(str(d["verdict"])), Text(str(d["reason"])), str(d["count"]))
        stdout().print(table)


@partners.command("test")
def probe(
    ctx: typer.Context,
    name: NameArgument,
    domain: Annotated[
        str | None,
        typer.Option(
            "--domain",
            "-d",
            help="Which of its domains to try (default: its first domain without a wildcard).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Try to federate with a partner: resolve (or its edge address), connect, TLS,
    authenticate; report each step and where it failed.

    Exit status 0 when the partner can be reached and lets us in, 1 otherwise.
    """
    body = {"domain": domain} if domain is not None else {}
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        result = api_call(
            cfg,
            "POST",
            partner_path(name, "/test"),
            body,
            timeout=120,
            refused=f"cannot test partner {name}",
        )
    say_diagnosis(result, as_json)


def _say_partner(p: dict[str, Any]) -> None:
    say_settings(
        [(label, fmt(p.get(key))) for key, (label, fmt) in FIELDS.items() if key != "name"]
    )
