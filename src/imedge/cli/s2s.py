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
from rich.text import Text

from imedge.cli.common import ConfigOption, configured, fail, say, stdout
from imedge.config import Config

s2s = typer.Typer(
    name="s2s",
    help="Server-to-server federation: live streams, and tests of a remote domain.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer as is.")]


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
        fail(
            f"cannot read the admin token {token_file}: {exc.strerror or exc} (has the server "
            "run with this data_dir yet, and may this user read it?)"
        )
    host = config.listen.http.host
    if host in ("0.0.0.0", "::"):  # noqa: S104 -- a wildcard listener is reached on loopback
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"  # noqa: S104
    url = f"http://{host if ':' not in host else f'[{host}]'}:{config.listen.http.port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        fail(_refusal(exc.code, exc.read().decode(errors="replace")))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach the server at {url}: {reason} (is `imedge serve` running?)")


def _refusal(code: int, body: str) -> str:
    """The API's error answer in one line: FastAPI's `detail` is a text or a list of
    field errors ({"loc": ["body", "domain"], "msg": ...})."""
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        detail = body.strip() or "no details"
    if isinstance(detail, list):
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', [])[1:]) or 'request'}: {e.get('msg', e)}"
            for e in detail
            if isinstance(e, dict)
        )
    if code == 401:
        return f"the server refused the admin token: {detail}"
    return f"the server refused the request ({code}): {detail}"


@s2s.command("list")
def list_streams(
    ctx: typer.Context, config: ConfigOption = None, as_json: JsonOption = False
) -> None:
    """Live server-to-server streams: peer, direction, TLS, authentication, certificate."""
    with configured(ctx, config, minimum=logging.WARNING) as cfg:
        rows = api_call(cfg, "GET", "/api/v1/s2s/streams")
    if as_json:
        say(json.dumps(rows, indent=2))
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
        result = api_call(cfg, "POST", "/api/v1/s2s/test", {"domain": domain}, timeout=120)
    if as_json:
        say(json.dumps(result, indent=2))
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
