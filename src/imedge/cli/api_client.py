"""The admin API of the running server, for commands that change or inspect live state.

`imedge s2s`, `partner`, `federation`, `policy` and `user set|show` talk to the running
server over HTTP (the `[listen] http` address) with the admin token it keeps in
`<data_dir>/admin.token`, so that every change takes effect on live traffic at once and
nothing writes the database behind the server's back. Each request names its actor,
`cli:<unix user>`, which the server records with every change.

Also here: what those commands share in presenting answers (refusals as one line per
problem, `--json`, on/off switches, before → after lines, times).
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer

from imedge.cli.common import fail, say
from imedge.config import Config

API = "/api/v1"
ACTOR_HEADER = "X-IMEdge-Actor"

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON answer as is.")]
# Options shared by the `edit` commands of partners and peer servers.
RenameOption = Annotated[
    str | None, typer.Option("--rename", metavar="NEW_NAME", help="A new name.")
]
ReplaceDomainsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--domain",
        "-d",
        metavar="DOMAIN",
        help="Replace its domains with these (repeat for more).",
        show_default=False,
    ),
]


class Switch(StrEnum):
    """An on/off setting on the command line (`--federation on`)."""

    ON = "on"
    OFF = "off"

    @property
    def enabled(self) -> bool:
        return self is Switch.ON


def actor() -> str:
    """`cli:<unix user>`: who the server records as having made the change."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name, no passwd entry (a bare container)
        user = f"uid-{os.getuid()}"
    # The server accepts letters, digits and . _ - @ (at most 64): a header is no place for
    # whatever else a name service may hold.
    safe = re.sub(r"[^\w.@-]", "_", user, flags=re.ASCII)[:64]
    return f"cli:{safe or 'unknown'}"


def quoted(segment: str) -> str:
    """One path segment: partner names hold spaces and dots, JIDs hold '@' and '/'."""
    return urllib.parse.quote(segment, safe="@")


def api_call(
    config: Config,
    method: str,
    path: str,
    body: Mapping[str, Any] | None = None,
    timeout: float = 60,
    *,
    refused: str | None = None,
) -> Any:
    """Call the running server's admin API and return its JSON answer (None for 204).

    Any failure ends the command with a readable message and exit status 1: the server
    is not there, the token is wrong, or the request was refused. `refused` starts the
    message of a refusal ("partner acme not saved"); each problem the server names
    follows as "field: message".
    """
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
    req.add_header("Accept", "application/json")
    req.add_header(ACTOR_HEADER, actor())
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
            return json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as exc:
        fail(refusal(exc.code, exc.read().decode(errors="replace"), path, refused))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"cannot reach the server at {url}: {reason} (is `imedge serve` running?)")
    except ValueError as exc:  # a 2xx that is not JSON: not our server on that port
        fail(f"the server at {url} did not answer in JSON ({exc}): is that IM Edge's port?")


def refusal(code: int, body: str, path: str = "", refused: str | None = None) -> str:
    """The API's error answer for humans: a line, or a head line and one line per problem.

    The service's refusals are {"detail": [{"field", "message"}]}, FastAPI's own schema
    errors {"detail": [{"loc": ["body", "domain"], "msg"}]}; both read "field: message".
    A 404 says what is missing ("no partner named 'acme'") and needs no head.
    """
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        detail = body.strip() or "no details"
    if code == 401:
        return f"the server refused the admin token: {_flat(detail)}"
    if code == 404 and detail == "Not Found":  # FastAPI's answer for a route it lacks
        return (
            f"the server has no {path.partition('?')[0]}: is it an older version of IM Edge "
            "than this command?"
        )
    if code == 404 and isinstance(detail, str):
        return detail
    head = refused or f"the server refused the request ({code})"
    if isinstance(detail, list):
        problems = [problem_line(p) for p in detail]
        if len(problems) == 1:
            return f"{head}: {problems[0]}"
        return head + ":" + "".join(f"\n  {p}" for p in problems)
    return f"{head}: {_flat(detail)}"


def problem_line(problem: object) -> str:
    """One problem of a 4xx body as "field: message"."""
    if not isinstance(problem, dict):
        return str(problem)
    if "field" in problem:
        field, message = str(problem["field"]), str(problem.get("message", ""))
    else:
        loc = [str(p) for p in problem.get("loc", [])]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        field, message = ".".join(loc) or "request", str(problem.get("msg", problem))
    # Pydantic prefixes the message of a validator's ValueError; the field says enough.
    return f"{field}: {message.removeprefix('Value error, ')}"


def _flat(detail: object) -> str:
    if isinstance(detail, list):
        return "; ".join(problem_line(p) for p in detail)
    return str(detail)


def say_json(value: object) -> None:
    say(json.dumps(value, indent=2, ensure_ascii=False))


def on_off(value: object) -> str:
    return "on" if value else "off"


def yes_no(value: object) -> str:
    return "yes" if value else "no"


def listed(values: Iterable[object], empty: str = "none") -> str:
    items = [str(v) for v in values]
    return ", ".join(items) if items else empty


def say_changes(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    fields: Mapping[str, tuple[str, Callable[[Any], str]]],
) -> bool:
    """Print "  label: old → new" for each of `fields` ({key: (label, format)}) that
    changed; False when nothing did."""
    changed = False
    for key, (label, show) in fields.items():
        old, new = before.get(key), after.get(key)
        if old != new:
            say(f"  {label}: {show(old)} → {show(new)}")
            changed = True
    return changed


def when(unix: float | None, never: str = "never") -> str:
    """A Unix time as local time with how long ago it was."""
    if unix is None:
        return never
    moment = datetime.datetime.fromtimestamp(unix).astimezone()
    return f"{moment:%Y-%m-%d %H:%M:%S %z} ({duration(time.time() - unix)} ago)"


def duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
