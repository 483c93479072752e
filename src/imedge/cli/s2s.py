"""`imedge s2s …`: server-to-server streams of the running server, and connection tests.

These commands ask the running server through its HTTP API (the `[listen] http` address),
authenticated with the admin token the server keeps in `<data_dir>/admin.token`.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Annotated, Any

import typer
from rich.table import Table

from imedge.cli.common import ConfigOption, configured, fail, say, stdout
from imedge.config import Config

s2s = typer.Typer(
    name="s2s",
    help="Server-to-server federation: live streams, and tests of a remote domain.",
    no_args_is_help=True,
)


def api_call(
    config: Config, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60
) -> Any:
    """Call the running server's admin API; exit with a readable message when it is not there."""
    if config.listen.http is None:
        fail("the HTTP listener is disabled ([listen] http), so the running server cannot be asked")
    token_file = config.data_dir / "admin.token"
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        fail(f"cannot read the admin token {token_file}: {exc.strerror} (has the server run yet?)")
    host = config.listen.http.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 -- a wildcard listener is reached on loopback
        host = "127.0.0.1"
    url = f"http://{host if ':' not in host else f'[{host}]'}:{config.listen.http.port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        fail(f"the server refused the request ({exc.code}): {detail}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach the server at {url}: {reason} (is `imedge serve` running?)")


@s2s.command("list")
def list_streams(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Live server-to-server streams: peer, direction, TLS, authentication, certificate."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        rows = api_call(cfg, "GET", "/api/v1/s2s/streams")
    if not rows:
        say("no server-to-server streams")
        return
    table = Table("remote", "dir", "peer", "TLS", "auth", "certificate", "in", "out", "age")
    for r in rows:
        table.add_row(
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
    stdout().print(table)


@s2s.command("test")
def probe_domain(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="The remote XMPP domain to try.")],
    config: ConfigOption = None,
) -> None:
    """Resolve, connect, TLS, authenticate: report each step and where it failed."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        result = api_call(cfg, "POST", "/api/v1/s2s/test", {"domain": domain}, timeout=120)
    for step in result["steps"]:
        mark = "[green]ok[/green]  " if step["ok"] else "[red]FAIL[/red]"
        stdout().print(f"{mark} {step['step']:<15} {step['detail']}")
    stdout().print()
    stdout().print(result["summary"], soft_wrap=True)
    if not result["ok"]:
        raise typer.Exit(1)


def _age(seconds: float) -> str:
    s = int(seconds)
    return time.strftime("%H:%M:%S", time.gmtime(s)) if s < 86400 else f"{s // 86400}d"
