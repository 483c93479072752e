"""FEDERATION.md §Words (directory): `imedge directory search` on the running server.

The corporate directory holds the local users and the people synced from peer servers
(`imedge peer`); a search says, for each person, whether federation with their domain
is possible now.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from imedge.cli.api_client import API, JsonOption, api_call, plural, say_json, yes_no
from imedge.cli.common import ConfigOption, configured, say, stdout

directory = typer.Typer(
    name="directory",
    help="The corporate directory: local users and the people of peer servers.",
    no_args_is_help=True,
)


@directory.command("search")
def search(
    ctx: typer.Context,
    text: Annotated[
        str,
        typer.Argument(
            metavar="TEXT", help="Part of an IM address, name, e-mail, department or title."
        ),
    ],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 50,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find people in the corporate directory (ignoring case), local users first."""
    query = urllib.parse.urlencode({"q": text, "limit": limit})
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        rows: list[dict[str, Any]] = api_call(cfg, "GET", f"{API}/directory/search?{query}")
    if as_json:
        say_json(rows)
        return
    if not rows:
        say(f"nobody in the directory matches {text!r}")
        return
    table = Table("IM address", "name", "e-mail", "department", "title", "peer server", "reachable")
    for r in rows:
        peer = r.get("peer_server")
        cells = (
            r.get("jid") or "",
            r.get("name") or "-",
            r.get("email") or "-",
            r.get("department") or "-",
            r.get("title") or "-",
            "local" if peer is None else str(peer),
            yes_no(r.get("reachable")),
        )
        table.add_row(*(Text(str(c)) for c in cells))  # not markup: names hold '['
    stdout().print(table)
    more = " (the limit; --limit shows more)" if len(rows) >= limit else ""
    say(f"{plural(len(rows), 'person')}{more}".replace("persons", "people"))
