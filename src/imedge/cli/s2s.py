"""`imedge s2s …`: server-to-server streams of the running server, and connection tests.

These commands ask the running server through its HTTP API (`imedge.cli.api_client`).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from imedge.cli.api_client import API, JsonOption, api_call, say_json
from imedge.cli.common import ConfigOption, configured, say, stdout

s2s = typer.Typer(
    name="s2s",
    help="Server-to-server federation: live streams, and tests of a remote domain.",
    no_args_is_help=True,
)


@s2s.command("list")
def list_streams(
    ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Live server-to-server streams: peer, direction, TLS, authentication, certificate."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        rows = api_call(cfg, "GET", f"{API}/s2s/streams")
    if as_json:
        say_json(rows)
        return
    if not rows:
        say("no server-to-server streams")
        return
    table = Table("remote", "dir", "peer", "TLS", "auth", "certificate", "in", "out", "age")
    for r in sorted(rows, key=lambda r: (r["remote"] or "", r["direction"])):
        cells = (
            r["remote"] or "?",
            r["direction"],
            r["peer"],
            r["tls_version"] or "none",
            r["auth"],
            r["certificate"] or "-",
            str(r["stanzas_in"]),
            str(r["stanzas_out"]),
            _age(r["age_seconds"]),
        )
        table.add_row(*(Text(c) for c in cells))  # not markup: "[::1]:5269"
    stdout().print(table)


@s2s.command("test")
def probe_domain(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The remote XMPP domain to try.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve, connect, TLS, authenticate: report each step and where it failed.

    Exit status 0 when the domain can be reached and lets us in, 1 otherwise.
    """
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        result = api_call(cfg, "POST", f"{API}/s2s/test", {"domain": domain}, timeout=120)
    say_diagnosis(result, as_json)


def say_diagnosis(result: dict[str, Any], as_json: bool) -> None:
    """A connection test's steps and summary (or its JSON); exit 1 when it failed."""
    if as_json:
        say_json(result)
    else:
        out = stdout()
        for step in result["steps"]:
            mark = ("ok  ", "green") if step["ok"] else ("FAIL", "red")
            # Text, not markup: details hold "[s2s]" and "[::1]:5269".
            out.print(Text.assemble(mark, f" {step['step']:<15} {step['detail']}"))
        out.print()
        out.print(result["summary"], markup=False)
    if not result["ok"]:
        raise typer.Exit(1)


def _age(seconds: float) -> str:
    s = int(seconds)
    return time.strftime("%H:%M:%S", time.gmtime(s)) if s < 86400 else f"{s // 86400}d"
