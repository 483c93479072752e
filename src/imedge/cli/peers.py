"""FEDERATION.md §Words (peer server): `imedge peer …` on the running server.

A peer server is another IM server whose people come from its LDAP directory (RFC 4510,
paged by RFC 2696). Every command goes through the running server's admin API
(`imedge.cli.api_client`), so a sync runs in the server, with its progress polled here,
and its first success enables federation with the peer's domains at once.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
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
    say_changes,
    say_json,
    when,
    yes_no,
)
from imedge.cli.common import ConfigOption, configured, fail, say, say_settings, stderr, stdout
from imedge.config import Config
from imedge.directory.model import AttributeMapping, LdapSource

peers = typer.Typer(
    name="peer",
    help="Peer servers: other IM servers whose people are synced from their LDAP "
    "directory into the corporate directory. A first successful sync enables federation "
    "with their domains.",
    no_args_is_help=True,
)

# How often `peer sync` asks for progress (seconds), and how long it waits for a sync it
# started to show up before concluding the server never ran it.
POLL_INTERVAL = 0.25
START_GRACE = 30.0
# Examples of each issue kind `peer sync` prints; the API keeps the first 100 in all.
EXAMPLES_PER_KIND = 3

_LDAP_DEFAULTS = LdapSource(url="", base_dn="")
_MAPPING_DEFAULTS = AttributeMapping(im_address="")
MAPPED_FIELDS = tuple(
    f.name for f in dataclasses.fields(AttributeMapping) if f.name != "im_address"
)

RefArgument = Annotated[
    str,
    typer.Argument(metavar="NAME_OR_ID", help="The peer server's name (or its numeric id)."),
]
NameArgument = Annotated[str, typer.Argument(metavar="NAME", help="A name for the peer server.")]
DomainsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--domain",
        "-d",
        metavar="DOMAIN",
        help="An XMPP domain of the peer server (repeat for more).",
        show_default=False,
    ),
]
LdapUrlOption = Annotated[
    str | None,
    typer.Option(
        "--ldap-url",
        metavar="URL",
        help="ldap://host[:port] (with StartTLS unless --no-start-tls) or ldaps://host[:port].",
        show_default=False,
    ),
]
BaseDnOption = Annotated[
    str | None,
    typer.Option("--base-dn", metavar="DN", help="Where the people are.", show_default=False),
]
BindDnOption = Annotated[
    str | None,
    typer.Option(
        "--bind-dn",
        metavar="DN",
        help="The account to bind as; '' binds anonymously.",
        show_default=False,
    ),
]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the bind password from the first line of stdin (else it is asked for).",
    ),
]
FilterOption = Annotated[
    str | None,
    typer.Option(
        "--filter",
        metavar="FILTER",
        help=f"The LDAP search filter (default: {_LDAP_DEFAULTS.filter}).",
        show_default=False,
    ),
]
StartTlsOption = Annotated[
    bool | None,
    typer.Option(
        "--start-tls/--no-start-tls",
        help="Upgrade ldap:// with StartTLS, RFC 4513 §3 (default: yes).",
        show_default=False,
    ),
]
CaFileOption = Annotated[
    str | None,
    typer.Option(
        "--ca-file",
        metavar="PEM",
        help="CA certificates to validate the LDAP server against (default: the system's).",
        show_default=False,
    ),
]
PageSizeOption = Annotated[
    int | None,
    typer.Option(
        "--page-size",
        metavar="N",
        help=f"Entries per page of the paged search, RFC 2696 (default: "
        f"{_LDAP_DEFAULTS.page_size}).",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help=f"For each LDAP network wait (default: {_LDAP_DEFAULTS.timeout:g}).",
        show_default=False,
    ),
]
ImAttributeOption = Annotated[
    str | None,
    typer.Option(
        "--im-attribute",
        metavar="ATTRIBUTE",
        help="The LDAP attribute holding each person's IM address.",
        show_default=False,
    ),
]
ImTemplateOption = Annotated[
    str | None,
    typer.Option(
        "--im-template",
        metavar="TEMPLATE",
        help="The IM address built from attributes, e.g. '{uid}@ocs.example'.",
        show_default=False,
    ),
]
MapOption = Annotated[
    list[str] | None,
    typer.Option(
        "--map",
        metavar="FIELD=ATTRIBUTE",
        help=f"Which attribute (or template) fills a field: one of {', '.join(MAPPED_FIELDS)}; "
        "an empty value leaves the field empty. Repeatable.",
        show_default=False,
    ),
]
EdgeOption = Annotated[
    str | None,
    typer.Option(
        "--edge",
        metavar="HOST[:PORT]",
        help="Its edge address for server-to-server traffic; 'none' clears it.",
        show_default=False,
    ),
]
EveryOption = Annotated[
    str | None,
    typer.Option(
        "--every",
        metavar="MINUTES|none",
        help="Sync on a schedule, every MINUTES; 'none': on demand only.",
        show_default=False,
    ),
]
EnabledOption = Annotated[
    bool | None,
    typer.Option(
        "--enabled/--disabled",
        help="A disabled peer server is not synced on its schedule.",
        show_default=False,
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _edge(value: object) -> str:
    return str(value) if value else "none (DNS SRV records)"


def _every(value: object) -> str:
    return f"every {plural(int(value), 'minute')}" if isinstance(value, int) else "on demand"


# The PeerServerOut fields as `show` and the change lines name and print them.
FIELDS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "name": ("name", str),
    "domains": ("domains", listed),
    "edge_address": ("edge address", _edge),
    "schedule_minutes": ("sync", _every),
    "enabled": ("enabled", yes_no),
}
LDAP_FIELDS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "url": ("LDAP URL", str),
    "start_tls": ("StartTLS", yes_no),
    "ca_file": ("CA file", lambda v: str(v or "system CAs")),
    "bind_dn": ("bind DN", lambda v: str(v or "anonymous")),
    "has_password": ("bind password", lambda v: "set" if v else "none"),
    "base_dn": ("base DN", str),
    "filter": ("filter", str),
    "page_size": ("page size", str),
    "timeout": ("timeout", lambda v: f"{v:g}s" if isinstance(v, int | float) else str(v)),
}


def peer_path(peer_id: int, suffix: str = "") -> str:
    return f"{API}/peer-servers/{peer_id}{suffix}"


def find_peer(cfg: Config, ref: str) -> dict[str, Any]:
    """The peer server named `ref` (ignoring case), or with id `ref`; one line if none."""
    rows: list[dict[str, Any]] = api_call(cfg, "GET", f"{API}/peer-servers")
    wanted = ref.strip().casefold()
    found = next((r for r in rows if str(r["name"]).casefold() == wanted), None)
    if found is None and wanted.isdigit():
        found = next((r for r in rows if r["id"] == int(wanted)), None)
    if found is None:
        fail(f"no peer server named {ref!r} (`imedge peer list` shows them)")
    return found


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("LDAP bind password", hide_input=True, default="", show_default=False))


def _mapping_changes(
    im_attribute: str | None, im_template: str | None, mapped: list[str] | None
) -> dict[str, Any]:
    if im_attribute is not None and im_template is not None:
        fail("give --im-attribute or --im-template, not both")
    changes: dict[str, Any] = {}
    if im_attribute is not None or im_template is not None:
        changes["im_address"] = im_attribute if im_attribute is not None else im_template
    for item in mapped or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in MAPPED_FIELDS:
            fail(f"--map {item!r}: give FIELD=ATTRIBUTE, FIELD one of {', '.join(MAPPED_FIELDS)}")
        changes[key] = value.strip() or None
    return changes


def _ldap_changes(
    *,
    url: str | None,
    base_dn: str | None,
    bind_dn: str | None,
    filter_: str | None,
    start_tls: bool | None,
    ca_file: str | None,
    page_size: int | None,
    timeout: float | None,
) -> dict[str, Any]:
    given = {
        "url": url,
        "base_dn": base_dn,
        "bind_dn": bind_dn,
        "filter": filter_,
        "start_tls": start_tls,
        "ca_file": ca_file,
        "page_size": page_size,
        "timeout": timeout,
    }
    return {k: v for k, v in given.items() if v is not None}


def _top_changes(
    edge: str | None, every: str | None, enabled: bool | None, domains: list[str] | None
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if domains:
        changes["domains"] = list(domains)
    if edge is not None:
        changes["edge_address"] = None if edge.strip().lower() in ("", "none") else edge.strip()
    if every is not None:
        text = every.strip().lower()
        if text in ("", "none", "never"):
            changes["schedule_minutes"] = None
        else:
            try:
                changes["schedule_minutes"] = int(text)
            except ValueError:
                fail(f"--every: give a number of minutes or 'none', not {every!r}")
    if enabled is not None:
        changes["enabled"] = enabled
    return changes


@peers.command("add")
def add(
    ctx: typer.Context,
    name: NameArgument,
    *,
    domains: DomainsOption = None,
    ldap_url: LdapUrlOption = None,
    base_dn: BaseDnOption = None,
    bind_dn: BindDnOption = None,
    password_stdin: PasswordStdinOption = False,
    filter_: FilterOption = None,
    start_tls: StartTlsOption = None,
    ca_file: CaFileOption = None,
    page_size: PageSizeOption = None,
    timeout: TimeoutOption = None,
    im_attribute: ImAttributeOption = None,
    im_template: ImTemplateOption = None,
    mapped: MapOption = None,
    edge: EdgeOption = None,
    every: EveryOption = None,
    enabled: EnabledOption = None,
    config: ConfigOption = None,
) -> None:
    """Add a peer server: its XMPP domains, its LDAP directory and how its entries map to
    directory fields. Nothing is synced until `imedge peer sync` (or its schedule)."""
    if ldap_url is None or base_dn is None:
        fail("give --ldap-url and --base-dn: where the peer server's people are")
    mapping = dataclasses.asdict(_MAPPING_DEFAULTS) | _mapping_changes(
        im_attribute, im_template, mapped
    )
    if not mapping["im_address"]:
        fail("give --im-attribute or --im-template: how each person's IM address is found")
    ldap = {
        "url": ldap_url,
        "start_tls": _LDAP_DEFAULTS.start_tls,
        "bind_dn": _LDAP_DEFAULTS.bind_dn,
        "base_dn": base_dn,
        "filter": _LDAP_DEFAULTS.filter,
        "page_size": _LDAP_DEFAULTS.page_size,
        "timeout": _LDAP_DEFAULTS.timeout,
    } | _ldap_changes(
        url=ldap_url,
        base_dn=base_dn,
        bind_dn=bind_dn,
        filter_=filter_,
        start_tls=start_tls,
        ca_file=ca_file,
        page_size=page_size,
        timeout=timeout,
    )
    # RFC 4513 §5.1.1: no bind DN is an anonymous bind, which takes no password.
    ldap["bind_password"] = _read_password(password_stdin) if ldap["bind_dn"] else ""
    body = {
        "name": name,
        "domains": [],
        "edge_address": None,
        "schedule_minutes": None,
        "enabled": True,
        "ldap": ldap,
        "mapping": mapping,
    } | _top_changes(edge, every, enabled, domains)
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        saved = api_call(
            cfg, "POST", f"{API}/peer-servers", body, refused=f"peer server {name} not added"
        )
    say(f"added peer server {saved['name']} (id {saved['id']})")
    _say_peer(saved)
    say(f"next: `imedge peer test {saved['id']}`, then `imedge peer sync {saved['id']}`")


@peers.command("edit")
def edit(
    ctx: typer.Context,
    ref: RefArgument,
    *,
    rename: RenameOption = None,
    domains: ReplaceDomainsOption = None,
    ldap_url: LdapUrlOption = None,
    base_dn: BaseDnOption = None,
    bind_dn: BindDnOption = None,
    password: Annotated[
        bool,
        typer.Option("--password", help="Ask for a new bind password (hidden)."),
    ] = False,
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read a new bind password from stdin."),
    ] = False,
    filter_: FilterOption = None,
    start_tls: StartTlsOption = None,
    ca_file: CaFileOption = None,
    page_size: PageSizeOption = None,
    timeout: TimeoutOption = None,
    im_attribute: ImAttributeOption = None,
    im_template: ImTemplateOption = None,
    mapped: MapOption = None,
    edge: EdgeOption = None,
    every: EveryOption = None,
    enabled: EnabledOption = None,
    config: ConfigOption = None,
) -> None:
    """Change some settings of a peer server; the others (and its password) stay."""
    changes = _top_changes(edge, every, enabled, domains)
    if rename is not None:
        changes["name"] = rename
    ldap = _ldap_changes(
        url=ldap_url,
        base_dn=base_dn,
        bind_dn=bind_dn,
        filter_=filter_,
        start_tls=start_tls,
        ca_file=ca_file,
        page_size=page_size,
        timeout=timeout,
    )
    if password or password_stdin:
        ldap["bind_password"] = _read_password(password_stdin)
    mapping = _mapping_changes(im_attribute, im_template, mapped)
    if not (changes or ldap or mapping):
        fail("nothing to change: give at least one option (see --help)")
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = find_peer(cfg, ref)
        # Whole sub-objects, so that the API need not merge them; the password, never
        # returned, is left out unless changed (omitted means unchanged).
        if ldap:
            kept = {k: v for k, v in current["ldap"].items() if k != "has_password"}
            changes["ldap"] = kept | ldap
        if mapping:
            changes["mapping"] = dict(current["mapping"]) | mapping
        saved = api_call(
            cfg,
            "PATCH",
            peer_path(current["id"]),
            changes,
            refused=f"peer server {current['name']} not changed",
        )
    say(f"peer server {saved['name']}:")
    changed = say_changes(current, saved, FIELDS)
    changed = say_changes(current["ldap"], saved["ldap"], LDAP_FIELDS) or changed
    mapping_fields = {
        k: (f"{k.replace('_', ' ')} from", _attribute) for k in ("im_address", *MAPPED_FIELDS)
    }
    changed = say_changes(current["mapping"], saved["mapping"], mapping_fields) or changed
    if "bind_password" in ldap:
        say("  bind password: replaced")
    elif not changed:
        say("  nothing changed")


@peers.command("remove")
def remove(
    ctx: typer.Context, ref: RefArgument, yes: YesOption = False, config: ConfigOption = None
) -> None:
    """Delete a peer server with its directory entries and sync reports, and the partner
    row its first sync added (partners added otherwise stay)."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        current = find_peer(cfg, ref)
        if not yes:
            prompt = (
                f"Remove peer server {current['name']} ({listed(current['domains'])})? Its "
                "people leave the directory, and federation its sync enabled ends."
            )
            if not typer.confirm(prompt, default=False):
                fail("not removed")
        api_call(
            cfg,
            "DELETE",
            peer_path(current["id"]),
            refused=f"peer server {current['name']} not removed",
        )
    say(f"removed peer server {current['name']}: its directory entries and reports are gone")


@peers.command("list")
def list_(ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """The peer servers, with how each last sync went."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        rows: list[dict[str, Any]] = api_call(cfg, "GET", f"{API}/peer-servers")
        last = {
            p["id"]: next(iter(api_call(cfg, "GET", peer_path(p["id"], "/reports?limit=1"))), None)
            for p in rows
        }
    rows.sort(key=lambda p: (str(p["name"]).casefold(), p["id"]))
    if as_json:
        say_json([{**p, "last_report": last[p["id"]]} for p in rows])
        return
    if not rows:
        say("no peer servers (`imedge peer add` adds one)")
        return
    table = Table("id", "name", "domains", "LDAP", "base DN", "sync", "enabled", "last sync")
    for p in rows:
        report = last[p["id"]]
        cells = (
            str(p["id"]),
            p["name"],
            ", ".join(p["domains"]),
            p["ldap"]["url"],
            p["ldap"]["base_dn"],
            _every(p.get("schedule_minutes")),
            yes_no(p.get("enabled", True)),
            _last_sync(report),
        )
        table.add_row(*(Text(str(c)) for c in cells))  # not markup: DNs hold '[' freely
    stdout().print(table)
    say(plural(len(rows), "peer server"))


@peers.command("show")
def show(
    ctx: typer.Context, ref: RefArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Every setting of a peer server (never its password) and its last sync."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        peer = find_peer(cfg, ref)
        progress = api_call(cfg, "GET", peer_path(peer["id"], "/sync"))
        reports = api_call(cfg, "GET", peer_path(peer["id"], "/reports?limit=1"))
    if as_json:
        say_json({"peer_server": peer, "sync": progress, "last_report": next(iter(reports), None)})
        return
    say(f"peer server {peer['name']} (id {peer['id']})")
    _say_peer(peer)
    say("sync")
    state = "running" if progress.get("running") else "idle"
    if progress.get("running"):
        state += f", {plural(int(progress.get('fetched') or 0), 'entry')} fetched"
    say_settings([("now", state), ("last", _last_sync(next(iter(reports), None)))])


@peers.command("test")
def probe(
    ctx: typer.Context, ref: RefArgument, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Bind to the peer server's LDAP directory and check its base DN and filter.

    Exit status 0 when all is well, 1 otherwise.
    """
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        peer = find_peer(cfg, ref)
        result = api_call(
            cfg,
            "POST",
            peer_path(peer["id"], "/test-ldap"),
            {},
            timeout=120,
            refused=f"cannot test peer server {peer['name']}",
        )
    if as_json:
        say_json(result)
    elif result.get("ok"):
        say(f"LDAP of peer server {peer['name']}: ok")
        say(f"  {result.get('summary', '')}")
    if not result.get("ok"):
        fail(f"LDAP of peer server {peer['name']}: {result.get('summary') or 'failed'}")


@peers.command("sync")
def sync(
    ctx: typer.Context,
    ref: RefArgument,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Fetch and plan, print the plan's counts, change nothing."),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sync a peer server's people now, showing progress, then print its report.

    The sync runs in the server: it fetches every entry (paged), plans the changes, then
    applies them in one transaction; a failed or interrupted sync changes nothing. Exit
    status 1 when it failed or was interrupted.
    """
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        peer = find_peer(cfg, ref)
        before = api_call(cfg, "GET", peer_path(peer["id"], "/sync")).get("last_report")
        api_call(
            cfg,
            "POST",
            peer_path(peer["id"], "/sync"),
            {"dry_run": dry_run},
            refused=f"cannot sync peer server {peer['name']}",
        )
        report = _follow(cfg, peer, before, quiet=as_json)
    if as_json:
        say_json(report)
    else:
        _say_report(peer["name"], report, dry_run)
    status = str(report.get("status"))
    if status != "ok":
        fail(f"sync of peer server {peer['name']} {status}: {report.get('error') or 'no reason'}")


def _follow(
    cfg: Config, peer: dict[str, Any], before: dict[str, Any] | None, *, quiet: bool
) -> dict[str, Any]:
    """Poll the sync's progress until it has finished; its report.

    The sync is started in the background, so it may not be running yet at the first
    poll: it has finished only when a report other than `before` is there.
    """
    path = peer_path(peer["id"], "/sync")
    posted = time.monotonic()
    # On stderr, so that the report (or --json) alone is on stdout; the total is unknown
    # until the last page, hence a spinner with a count rather than a bar.
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:.0f} entries fetched"),
        TimeElapsedColumn(),
        console=stderr(),
        disable=quiet,
    ) as bar:
        task = bar.add_task(f"syncing {peer['name']}", total=None)
        while True:
            state = api_call(cfg, "GET", path)
            bar.update(task, completed=int(state.get("fetched") or 0))
            report = state.get("last_report")
            if not state.get("running") and report is not None and report != before:
                return dict(report)
            if not state.get("running") and time.monotonic() - posted > START_GRACE:
                fail(f"the server did not run the sync of peer server {peer['name']}")
            time.sleep(POLL_INTERVAL)


def _say_report(name: str, report: dict[str, Any], dry_run: bool) -> None:
    status = str(report.get("status"))
    head = f"sync of peer server {name}: {status}"
    if dry_run or report.get("dry_run"):
        head += " (dry run: nothing was changed)"
    say(head)
    started, finished = report.get("started"), report.get("finished")
    took = duration(finished - started) if started is not None and finished is not None else "?"
    issue_count = int(report.get("issue_count") or 0)
    rows = [
        ("started", when(started)),
        ("took", took),
        ("added", str(report.get("added", 0))),
        ("changed", str(report.get("changed", 0))),
        ("removed", str(report.get("removed", 0))),
        ("unchanged", str(report.get("unchanged", 0))),
        ("issues", str(issue_count)),
    ]
    if report.get("error"):
        rows.append(("note" if status == "ok" else "error", str(report["error"])))
    say_settings(rows)
    issues: list[dict[str, Any]] = list(report.get("issues") or [])
    if not issues:
        return
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for issue in issues:
        by_kind[str(issue.get("kind"))].append(issue)
    shown = "" if len(issues) == issue_count else f" (of the first {len(issues)})"
    say(f"entries left out, by kind{shown}:")
    for kind, found in sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        say(f"  {kind.replace('_', ' ')}: {len(found)}")
        for issue in found[:EXAMPLES_PER_KIND]:
            say(f"    {issue.get('dn')}: {issue.get('detail')}")
        if len(found) > EXAMPLES_PER_KIND:
            say(f"    … and {len(found) - EXAMPLES_PER_KIND} more")


@peers.command("reports")
def reports(
    ctx: typer.Context,
    ref: RefArgument,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="How many, newest first.")
    ] = 20,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The kept reports of a peer server's syncs, newest first."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        peer = find_peer(cfg, ref)
        rows: list[dict[str, Any]] = api_call(
            cfg, "GET", peer_path(peer["id"], f"/reports?limit={limit}")
        )
    if as_json:
        say_json(rows)
        return
    if not rows:
        say(f"peer server {peer['name']} has not been synced yet")
        return
    table = Table(
        "started", "took", "status", "added", "changed", "removed", "unchanged", "issues", "error"
    )
    for r in rows:
        started, finished = r.get("started"), r.get("finished")
        cells = (
            when(started),
            duration(finished - started) if started is not None and finished else "?",
            str(r.get("status")),
            str(r.get("added", 0)),
            str(r.get("changed", 0)),
            str(r.get("removed", 0)),
            str(r.get("unchanged", 0)),
            str(r.get("issue_count", 0)),
            r.get("error") or "-",
        )
        table.add_row(*(Text(str(c)) for c in cells))
    stdout().print(table)
    say(f"{plural(len(rows), 'report')} of peer server {peer['name']}")


def _attribute(value: object) -> str:
    return str(value) if value else "none"


def _last_sync(report: dict[str, Any] | None) -> str:
    if report is None:
        return "never"
    text = f"{report.get('status')} {when(report.get('finished'))}"
    if report.get("status") == "ok":
        text += (
            f": +{report.get('added', 0)} ~{report.get('changed', 0)} -{report.get('removed', 0)}"
        )
    elif report.get("error"):
        text += f": {report['error']}"
    return text


def _say_peer(p: dict[str, Any]) -> None:
    rows = [(label, fmt(p.get(key))) for key, (label, fmt) in FIELDS.items() if key != "name"]
    ldap = p.get("ldap") or {}
    rows += [(label, fmt(ldap.get(key))) for key, (label, fmt) in LDAP_FIELDS.items()]
    mapping = p.get("mapping") or {}
    rows += [
        (f"{key.replace('_', ' ')} from", _attribute(mapping.get(key)))
        for key in ("im_address", *MAPPED_FIELDS)
    ]
    say_settings(rows)
